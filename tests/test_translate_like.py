"""`translate --like SERIES_FOLDER`: a NIfTI input's DICOM output joins the patient, study and
frame of reference of a DICOM series, on that series' grid when both hold the same voxels; without
it the log says a new study is made."""

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.data.geometry import on_same_voxels
from medgan_tf.data.io import Volume, read_volume
from medgan_tf.errors import UserError
from medgan_tf.serving import loading, signatures
from medgan_tf.serving.translation import translate_file

from dicom_tools import scanner_series
from helpers import SIZE, dcm2niix_nifti, oblique_affine, same_grid


def identity_model(task: str) -> loading.RunModel:
    experiment = config_lib.override(presets.task_preset(task), {"data.image_size": SIZE})
    return loading.RunModel(Path(f"identity-{task}"), experiment, signatures.normalization_description(experiment),
                            lambda images, training: images)


def series(folder):
    return sorted((pydicom.dcmread(str(p)) for p in folder.iterdir()), key=lambda ds: int(ds.InstanceNumber))


@pytest.fixture
def mr_series_and_nifti(tmp_path):
    folder = scanner_series(tmp_path / "mr", "MR", oblique_affine((1.5, 1.7, 3.0)), shape=(24, 20, 5))
    image = dcm2niix_nifti(folder, tmp_path / "nifti")  # the independent converter: its own axis order
    path = tmp_path / "mr.nii"
    nib.save(image, str(path))
    return folder, path


def test_a_nifti_input_joins_the_like_series_study_on_its_grid(mr_series_and_nifti, tmp_path, caplog):
    folder, nifti = mr_series_and_nifti
    model = identity_model("mr_motion")
    plain = translate_file(model, nifti, tmp_path / "plain.nii.gz", quiet=True)
    with caplog.at_level(logging.INFO):
        translate_file(model, nifti, tmp_path / "out", quiet=True, like=folder)
    assert "joins the --like series' study on its grid" in caplog.text
    source, output = series(folder), series(tmp_path / "out")
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert {str(ds.get(keyword)) for ds in output} == {str(source[0].get(keyword))}, keyword
    def floats(datasets, keyword):
        return [[float(v) for v in ds.get(keyword)] for ds in datasets]

    for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
        np.testing.assert_allclose(floats(output, keyword), floats(source, keyword), atol=1e-4)
    assert [ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in output] == [ds.SOPInstanceUID for ds in source]
    back = read_volume(tmp_path / "out")  # the same image in the world as the NIfTI output
    theirs, ours, affine_error = same_grid(nib.Nifti1Image(back.array, back.affine), plain.volume.array,
                                           plain.volume.affine)
    assert affine_error <= 1e-3 and np.max(np.abs(theirs - ours)) <= float(output[0].RescaleSlope) and np.std(ours) > 0


def test_without_like_the_log_says_a_new_study_is_made(mr_series_and_nifti, tmp_path, caplog):
    _, nifti = mr_series_and_nifti
    with caplog.at_level(logging.INFO):
        translate_file(identity_model("mr_motion"), nifti, tmp_path / "out", quiet=True)
    assert "the output is a new study" in caplog.text
    assert series(tmp_path / "out")[0].PatientID == "ANONYMOUS"


def test_like_is_refused_where_it_cannot_be_right(mr_series_and_nifti, tmp_path):
    folder, nifti = mr_series_and_nifti
    model = identity_model("mr_motion")
    with pytest.raises(UserError, match="this input is a DICOM series and keeps its own study"):
        translate_file(model, folder, tmp_path / "a", quiet=True, like=folder)
    with pytest.raises(UserError, match="is not a DICOM series folder"):
        translate_file(model, nifti, tmp_path / "b", quiet=True, like=nifti)
    far = scanner_series(tmp_path / "far", "MR", np.diag([1.0, 1.0, 3.0, 1.0]) + np.array(
        [[0, 0, 0, 900.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), shape=(8, 8, 2))
    with pytest.raises(UserError, match="does not overlap that series"):
        translate_file(model, nifti, tmp_path / "c", quiet=True, like=far)
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.parametrize("order, flips", [((0, 1, 2), ()), ((1, 0, 2), (0,)), ((2, 0, 1), (1, 2)), ((0, 1, 2), (2,))])
def test_on_same_voxels_undoes_any_axis_order_and_direction(order, flips):
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = oblique_affine((1.0, 1.5, 2.0))
    # The same voxels, axes permuted by `order` and reversed along `flips`.
    other = np.transpose(array, order)
    other_affine = affine.copy()
    other_affine[:, :3] = affine[:, list(order)]
    for axis in flips:
        other = np.flip(other, axis)
        other_affine[:3, 3] += other_affine[:3, axis] * (other.shape[axis] - 1)
        other_affine[:3, axis] *= -1
    back = on_same_voxels(Volume(other, other_affine), array.shape, affine)
    np.testing.assert_array_equal(back, array)
    shifted = affine.copy()
    shifted[:3, 3] += 0.5 * affine[:3, 0]  # half a voxel off: not the same voxels
    assert on_same_voxels(Volume(other, other_affine), array.shape, shifted) is None


def test_the_command_takes_like_alone_and_as_a_csv_column(mr_series_and_nifti, tmp_path, capsys):
    from medgan_tf.cli import main

    from helpers import make_run

    folder, nifti = mr_series_and_nifti
    make_run(tmp_path / "run", "mr_motion", image_size=32)
    command = ["translate", "--model", str(tmp_path / "run"), "--quiet"]
    assert main(command + ["--input", str(nifti), "--output", str(tmp_path / "one"), "--like", str(folder)]) == 0
    (tmp_path / "rows.csv").write_text(f"input,patient_id,like\n{nifti},two,{folder}\n")
    assert main(command + ["--inputs", str(tmp_path / "rows.csv"), "--output-dir", str(tmp_path / "many"),
                           "--output-format", "dicom"]) == 0
    study = series(folder)[0].StudyInstanceUID
    assert series(tmp_path / "one")[0].StudyInstanceUID == series(tmp_path / "many" / "two")[0].StudyInstanceUID == study
    assert main(command + ["--inputs", str(tmp_path / "rows.csv"), "--output-dir", str(tmp_path / "x"),
                           "--like", str(folder)]) == 2
    assert "--like goes with --input" in capsys.readouterr().err
