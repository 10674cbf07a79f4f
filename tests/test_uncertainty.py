"""Test-time augmentation and the uncertainty map (`medgan_tf.serving.uncertainty`, `translate --tta
--uncertainty`): a model that commutes with flips is certain everywhere; one that disagrees with its
flipped self is uncertain exactly where, and by as much as, it disagrees."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.cli import main
from medgan_tf.data.io import Volume, read_volume, write_nifti
from medgan_tf.errors import UserError
from medgan_tf.serving import loading, signatures
from medgan_tf.serving import translation as translation_lib
from medgan_tf.serving.uncertainty import Copy, pool, spread_model, tta_copies

from dicom_tools import dciodvfy_errors, scanner_series
from helpers import SIZE, make_run

BLOCK = (slice(2, 6), slice(3, 9))  # where the biased model adds its bias: not symmetric under any flip


def model_of(function, task: str = "pet_denoise") -> loading.RunModel:
    experiment = config_lib.override(presets.task_preset(task), {"data.image_size": SIZE})
    return loading.RunModel(Path("toy"), experiment, signatures.normalization_description(experiment),
                            lambda images, training: function(np.asarray(images)))


def equivariant(images):
    return 0.5 * images[..., :1] ** 3 - 0.1  # pointwise: commutes with flips and shifts


def biased(images):
    bias = np.zeros((SIZE, SIZE, 1), np.float32)
    bias[BLOCK] = 0.4
    return 0.5 * images[..., :1] + bias  # the bias stays put when the input is flipped


def slices(count=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (count, SIZE, SIZE, 1)).astype(np.float32)


@pytest.mark.parametrize("copy", [Copy(True, False), Copy(False, True), Copy(True, True), Copy(shift=(3, 0)),
                                  Copy(shift=(0, -2)), Copy(True, False, (-1, 2))])
def test_each_copy_is_undone_where_it_saw_the_pixels(copy):
    batch = slices()
    back, seen = copy.inverse(copy.forward(batch))
    assert seen.shape == (SIZE, SIZE) and set(np.unique(seen)) <= {0.0, 1.0}
    assert seen.sum() == (SIZE - abs(copy.shift[0])) * (SIZE - abs(copy.shift[1]))
    np.testing.assert_array_equal(back[:, seen > 0], batch[:, seen > 0])


def test_the_modes_name_their_copies_and_unknown_ones_are_refused():
    assert len(tta_copies("none", SIZE)) == 1
    assert len(tta_copies("flips", SIZE)) == 4
    assert len(tta_copies("flips+shifts", SIZE)) == 8
    assert spread_model(model_of(equivariant), "none") is None  # the plain path runs the model as before
    with pytest.raises(UserError, match="--tta 'rotations'"):
        tta_copies("rotations", SIZE)


def test_pool_is_the_population_spread_of_all_members_and_copies():
    rng = np.random.default_rng(1)
    members = rng.normal(size=(3, 5, 1, 4, 4))  # (copies, members, B, S, S)
    weights = np.ones((3, 4, 4))
    pooled = pool(members.mean(axis=1), members.std(axis=1), weights)
    flat = members.reshape(15, 1, 4, 4)
    np.testing.assert_allclose(pooled[..., 0], flat.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(pooled[..., 1], flat.std(axis=0), atol=1e-6)


@pytest.mark.parametrize("mode", ["flips", "flips+shifts"])
def test_a_flip_equivariant_model_is_certain_everywhere(mode):
    model = model_of(equivariant)
    batch = slices()
    both = spread_model(model, mode)(batch)
    assert both.shape == (3, SIZE, SIZE, 2)
    np.testing.assert_allclose(both[..., 0:1], equivariant(batch), atol=1e-6)
    assert np.abs(both[..., 1]).max() < 1e-6


def test_a_model_that_disagrees_with_its_flipped_self_is_unsure_exactly_there():
    batch = slices()
    both = spread_model(model_of(biased), "flips")(batch)
    bias = np.zeros((SIZE, SIZE))
    bias[BLOCK] = 0.4
    seen_as = np.stack([bias, bias[::-1], bias[:, ::-1], bias[::-1, ::-1]])  # each copy's bias, flipped back
    expected = seen_as.std(axis=0)
    assert (expected > 0).sum() == 4 * 4 * 6  # the four mirrored blocks, nothing else
    for k in range(len(batch)):
        np.testing.assert_allclose(both[k, ..., 1], expected, atol=1e-6)
        np.testing.assert_allclose(both[k, ..., 0], 0.5 * batch[k, ..., 0] + seen_as.mean(axis=0), atol=1e-6)


def test_copies_go_through_the_model_in_one_call():
    calls = []
    model = model_of(lambda images: calls.append(len(images)) or equivariant(images))
    translation_lib.predict_slices(spread_model(model, "flips"), slices(6), batch_size=3)
    assert calls == [12, 12]  # 2 batches of 3 tiles × 4 copies, one forward pass each


def test_translate_volume_gives_the_spread_in_the_target_unit():
    array = np.random.default_rng(0).gamma(2.0, 1.0, (SIZE, SIZE, 4)).astype(np.float32)
    volume = Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV")
    plain = translation_lib.translate_volume(model_of(biased), volume)
    assert plain.uncertainty is None
    translation = translation_lib.translate_volume(model_of(biased), volume, tta="flips")
    spread = translation.uncertainty
    assert spread.unit == "SUV" and spread.modality == "PT" and spread.array.shape == array.shape
    bias = np.zeros((SIZE, SIZE))
    bias[BLOCK] = 0.4
    expected = np.stack([bias, bias[::-1], bias[:, ::-1], bias[::-1, ::-1]]).std(axis=0)
    half_window = 0.5 * (translation.target_params["high"] - translation.target_params["low"])
    for k in range(array.shape[2]):
        np.testing.assert_allclose(spread.array[..., k], expected * half_window, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("uncertainty")
    make_run(root / "run", "pet_denoise")
    return root / "run"


def test_translate_writes_the_uncertainty_nifti_and_refuses_it_without_a_spread(run_dir, tmp_path):
    array = np.random.default_rng(2).gamma(2.0, 1.0, (SIZE, SIZE, 3)).astype(np.float32)
    write_nifti(Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV"), tmp_path / "in.nii.gz")
    base = ["translate", "--model", str(run_dir), "--input", str(tmp_path / "in.nii.gz"), "-q"]
    with pytest.raises(UserError, match="--uncertainty needs a spread"):
        translation_lib.translate_file(run_dir, tmp_path / "in.nii.gz", tmp_path / "a.nii.gz",
                                       uncertainty_path=tmp_path / "u.nii.gz", quiet=True)
    assert main(base + ["--output", str(tmp_path / "a.nii.gz"), "--uncertainty", str(tmp_path / "u.nii.gz")]) != 0
    assert not (tmp_path / "a.nii.gz").exists() and not (tmp_path / "u.nii.gz").exists()
    assert main(base + ["--output", str(tmp_path / "none.nii.gz")]) == 0
    assert main(base + ["--output", str(tmp_path / "out.nii.gz"), "--tta", "flips",
                        "--uncertainty", str(tmp_path / "u.nii.gz")]) == 0
    spread = nib.load(str(tmp_path / "u.nii.gz"))
    assert spread.shape == array.shape and np.allclose(spread.affine, np.diag([2.8, 2.8, 2.0, 1.0]))
    assert np.all(np.asarray(spread.dataobj) >= 0) and np.asarray(spread.dataobj).max() > 0  # untrained: not flip-equivariant


@pytest.mark.parametrize("source_kind", ["dicom", "nifti"])
def test_the_dicom_uncertainty_is_a_conformant_second_series_of_the_output_study(run_dir, tmp_path, source_kind):
    """From a DICOM source the two series join its study; from a NIfTI source (a new study) the
    uncertainty still joins the output's."""
    import pydicom

    source = scanner_series(tmp_path / "pet", "PT", np.diag([2.8, 2.8, 2.0, 1.0]), shape=(SIZE, SIZE, 3))
    if source_kind == "nifti":
        write_nifti(read_volume(source), tmp_path / "pet.nii.gz")
        source = tmp_path / "pet.nii.gz"
    assert main(["translate", "--model", str(run_dir), "--input", str(source), "--output", str(tmp_path / "out"),
                 "--tta", "flips", "--uncertainty", str(tmp_path / "out_sd"), "-q"]) == 0
    output, spread = sorted((tmp_path / "out").iterdir()), sorted((tmp_path / "out_sd").iterdir())
    assert len(output) == len(spread) == 3
    first, other = pydicom.dcmread(str(output[0])), pydicom.dcmread(str(spread[0]))
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "ImageOrientationPatient", "Modality"):
        assert first[keyword].value == other[keyword].value, keyword
    assert first.SeriesInstanceUID != other.SeriesInstanceUID and first.SeriesNumber != other.SeriesNumber
    assert other.SeriesDescription.startswith("SD ") and other.SeriesDescription != first.SeriesDescription
    assert "standard deviation" in other.DerivationDescription
    assert not dciodvfy_errors(tmp_path / "out_sd") - dciodvfy_errors(tmp_path / "out")
    if source_kind == "dicom":
        assert not dciodvfy_errors(tmp_path / "out_sd") - dciodvfy_errors(source)
        assert other.StudyInstanceUID == pydicom.dcmread(str(sorted(source.iterdir())[0])).StudyInstanceUID
    values = read_volume(tmp_path / "out_sd").array
    assert values.min() >= 0 and values.max() > 0


def test_translate_inputs_writes_each_rows_uncertainty_beside_its_output(run_dir, tmp_path):
    affine = np.diag([2.8, 2.8, 2.0, 1.0])
    for name in ("a", "b"):
        array = np.random.default_rng(len(name)).gamma(2.0, 1.0, (SIZE, SIZE, 2)).astype(np.float32)
        write_nifti(Volume(array, affine, "PT", "SUV"), tmp_path / f"{name}.nii.gz")
    (tmp_path / "inputs.csv").write_text("patient_id,input\npa,a.nii.gz\npb,b.nii.gz\n")
    out = tmp_path / "out"
    assert main(["translate", "--model", str(run_dir), "--inputs", str(tmp_path / "inputs.csv"), "--output-dir",
                 str(out), "--tta", "flips", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pa.nii.gz", "pa_uncertainty.nii.gz", "pb.nii.gz",
                                                     "pb_uncertainty.nii.gz"]
    plain = tmp_path / "plain"
    assert main(["translate", "--model", str(run_dir), "--inputs", str(tmp_path / "inputs.csv"), "--output-dir",
                 str(plain), "-q"]) == 0
    assert sorted(p.name for p in plain.iterdir()) == ["pa.nii.gz", "pb.nii.gz"]
