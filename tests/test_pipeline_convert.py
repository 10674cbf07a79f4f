"""The Beam conversion pipeline end to end: synth → convert per task, the
standalone module and multi-process runs, DICOM = NIfTI, bad inputs, no identifying data, the
tf.data reader and de-normalization, atomic outputs and the built-in dataset cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medgan_tf.cli import main as cli_main
from medgan_tf.tasks import TASKS
from medgan_tf.data import dataset as data
from medgan_tf.data import manifest as manifest_lib
from medgan_tf.data import geometry, normalization
from medgan_tf.data.io import Volume, read_volume, write_nifti
from medgan_tf.data.synthetic import write_synthetic_dataset
from medgan_tf.errors import UserError
from medgan_tf.data import pairs, pseudonyms
from pipelines import convert
from helpers import assert_no_secret_bytes, oblique_affine, smooth_volume, write_dicom_series  # noqa: E402  (tests/ is on sys.path)

SIZE = 48
REPO = Path(__file__).resolve().parents[1]


def _convert(pairs, task, out, *extra):
    return convert.run(["--pairs", str(pairs), "--task", task, "--out", str(out), "--image-size", str(SIZE), "--salt", "test-salt", "--num-shards", "2", *extra])


def _records(directory, split):
    return list(data.iterate_records(directory, split))


def _raw_records(directory):
    import tensorflow as tf

    return {
        split: sorted(bytes(r) for path in data.shard_files(directory, split) for r in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
        for split in ("train", "val")
    }


@pytest.fixture(scope="module")
def pet_ct_pairs(tmp_path_factory):
    return write_synthetic_dataset("pet_ct", tmp_path_factory.mktemp("pet_ct"), patients=3, seed=0, field_of_view_mm=SIZE)


@pytest.fixture(scope="module")
def pet_ct_converted(pet_ct_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "pet_ct"
    assert _convert(pet_ct_pairs, "pet_ct", out) == 0
    return out


@pytest.mark.parametrize("task", ["pet_ct", "mr_motion", "pet_denoise"])
def test_synth_then_convert_commands_give_both_splits_and_counts_that_match_the_records(tmp_path, task):
    assert cli_main(["synth", "--task", task, "--out", str(tmp_path / "volumes"), "--patients", "3", "--seed", "1", "--image-size", str(SIZE)]) == 0
    out = tmp_path / "records"
    status = cli_main(["convert", "--pairs", str(tmp_path / "volumes" / "pairs.csv"), "--task", task, "--out", str(out),
                       "--image-size", str(SIZE), "--salt", "s", "--num-shards", "2", "--direct_running_mode=in_memory"])
    assert status == 0
    manifest = manifest_lib.read_manifest(out)
    assert manifest["task"] == task and manifest["image_size"] == SIZE and manifest["rejected"] == []
    assert manifest["converted_pairs"] == 3
    assert manifest["counts"]["train"]["patients"] == 2 and manifest["counts"]["val"]["patients"] == 1
    for split in ("train", "val"):  # no test split unless asked for
        records = _records(out, split)
        assert len(records) == manifest["counts"][split]["slices"] > 0
        assert len(records) == sum(v["slices"] for v in manifest["volumes"] if v["split"] == split)
        # No empty slices: every kept slice shows the head in both images.
        assert all(r["source"].max() > -0.9 and r["target"].max() > -0.9 for r in records)
        keys = {r["patient_key"] for r in records}
        assert keys == {v["patient_key"] for v in manifest["volumes"] if v["split"] == split}
    assert not (set(r["patient_key"] for r in _records(out, "train")) & set(r["patient_key"] for r in _records(out, "val")))
    expected_unit = {"pet_ct": "Bq/ml", "pet_denoise": "Bq/ml", "mr_motion": None}[task]
    assert manifest["pet_unit"] == expected_unit
    assert list(out.parent.glob(out.name + ".*")) == []  # no partial folder, no lock


def test_reader_yields_float32_batches_in_range_and_ct_denormalizes_to_hu(pet_ct_converted, pet_ct_pairs):
    import tensorflow as tf

    batches = list(data.make_dataset(pet_ct_converted, "train", 4, augment=True, deterministic=True, seed=1))
    again = list(data.make_dataset(pet_ct_converted, "train", 4, augment=True, deterministic=True, seed=1))
    source, target = batches[0]
    assert source.dtype == tf.float32 and source.shape == (4, SIZE, SIZE, 1) and target.shape == (4, SIZE, SIZE, 1)
    for (s, t), (s2, t2) in zip(batches, again):
        assert -1.0 <= float(tf.reduce_min(s)) and float(tf.reduce_max(t)) <= 1.0
        np.testing.assert_array_equal(s.numpy(), s2.numpy())  # deterministic mode
    manifest = manifest_lib.read_manifest(pet_ct_converted)
    assert sum(int(s.shape[0]) for s, _ in batches) == manifest["counts"]["train"]["slices"]

    groups = data.records_by_patient(pet_ct_converted, "val")
    (key, records), = groups.items()
    indices = [r["slice_index"] for r in records]
    assert indices == sorted(indices) and len(records) == manifest["counts"]["val"]["slices"]

    # De-normalize CT slices and compare with the CT resampled independently onto the grid.
    volumes = {v["patient_key"]: v for v in manifest["volumes"]}
    record = _records(pet_ct_converted, "val")[3]
    summary = volumes[record["patient_key"]]
    patient = [line.split(",") for line in pet_ct_pairs.read_text().splitlines()[1:]]
    assert record["target_params"]["unit"] == "HU" and record["target_params"]["kind"] == "window"
    hu = normalization.denormalize(record["target"][..., 0], record["target_params"])
    grid_affine = np.array(summary["grid_affine"])
    matches = 0
    for _, _, target_path in patient:
        ct = read_volume(pet_ct_pairs.parent / target_path)
        expected = geometry.resample(ct.array, ct.affine, summary["grid_shape"], grid_affine, fill=ct.array.min())
        expected = np.clip(expected[:, :, record["slice_index"]], -1000, 2000)
        if np.abs(hu - expected).max() < 1.0:  # within 1 HU
            matches += 1
    assert matches == 1


def test_augmentation_moves_source_and_target_together():
    import tensorflow as tf

    image = tf.reshape(tf.range(16 * 16, dtype=tf.float32) / 256.0, (16, 16, 1))
    moved = set()
    for index in range(12):
        source, target = data._augment(image, image, tf.constant([0, index], tf.int64), 3)
        np.testing.assert_array_equal(source.numpy(), target.numpy())
        moved.add(bool(np.any(source.numpy() != image.numpy())))
        assert source.shape == (16, 16, 1)
    assert moved == {True}


@pytest.mark.slow
def test_standalone_module_and_two_workers_produce_the_same_records(tmp_path):
    pairs = write_synthetic_dataset("pet_denoise", tmp_path / "volumes", patients=2, seed=0)
    assert _convert(pairs, "pet_denoise", tmp_path / "default") == 0
    assert _convert(pairs, "pet_denoise", tmp_path / "workers", "--num-workers", "2") == 0
    standalone = subprocess.run(
        [sys.executable, "-m", "pipelines.convert", "--pairs", str(pairs), "--task", "pet_denoise", "--out", str(tmp_path / "module"),
         "--image-size", str(SIZE), "--salt", "test-salt", "--num-shards", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert standalone.returncode == 0, standalone.stderr[-2000:]
    reference = _raw_records(tmp_path / "default")
    assert len(reference["train"]) == 32 and len(reference["val"]) == 32  # 2 patients × 32 slices
    assert _raw_records(tmp_path / "workers") == reference
    assert _raw_records(tmp_path / "module") == reference


def _pet_and_ct(rng):
    """An oblique, anisotropic PET (Bq/ml) and CT (HU) pair centred on the same world point."""
    pet_shape, ct_shape = (30, 26, 9), (40, 36, 8)
    pet_affine = oblique_affine(spacing=(2.0, 2.4, 3.0), angles_degrees=(15.0, -10.0), origin=(0, 0, 0))
    ct_affine = oblique_affine(spacing=(1.5, 1.4, 4.0), angles_degrees=(-8.0, 5.0), origin=(0, 0, 0))
    for affine, shape in ((pet_affine, pet_shape), (ct_affine, ct_shape)):
        affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    pet = np.round(smooth_volume(pet_shape, rng, 0, 20000))
    ct = np.round(smooth_volume(ct_shape, rng, -1000, 1500))
    return (pet, pet_affine), (ct, ct_affine)


def test_dicom_series_convert_to_the_same_slices_as_the_nifti_of_the_volumes(tmp_path):
    (pet, pet_affine), (ct, ct_affine) = _pet_and_ct(np.random.default_rng(7))
    pet_dicom = write_dicom_series(tmp_path / "pet", pet, pet_affine, modality="PT", intercept=0.0, extra={"Units": "BQML"})
    ct_dicom = write_dicom_series(tmp_path / "ct", ct, ct_affine, modality="CT")
    pet_nifti = write_nifti(Volume(pet.astype(np.float32), pet_affine, "PT", "Bq/ml"), tmp_path / "pet.nii.gz")
    ct_nifti = write_nifti(Volume(ct.astype(np.float32), ct_affine, "CT", "HU"), tmp_path / "ct.nii.gz")
    config = TASKS.get("pet_ct").data.__class__(**{**TASKS.get("pet_ct").data.__dict__, "image_size": 40})
    from_dicom, dicom_summary = pairs.convert_pair(str(pet_dicom), str(ct_dicom), "k", config)
    from_nifti, nifti_summary = pairs.convert_pair(str(pet_nifti), str(ct_nifti), "k", config)
    assert dicom_summary["source"]["unit"] == "Bq/ml" and dicom_summary["target"]["unit"] == "HU"
    assert [k for k, _ in from_dicom] == [k for k, _ in from_nifti] and len(from_dicom) >= 20
    from medgan_tf.data.schema import parse_example_numpy

    worst = 0.0
    for (_, a), (_, b) in zip(from_dicom, from_nifti):
        a, b = parse_example_numpy(a), parse_example_numpy(b)
        for side in ("source", "target"):
            worst = max(worst, float(np.abs(a[side] - b[side]).max()))
        assert abs(a["source_params"]["high"] / b["source_params"]["high"] - 1) < 1e-5
    # Tolerance: 1e-4 of the [-1, 1] range (0.15 HU, 1e-4 × the PET scale): DICOM positions are
    # decimal strings, so world coordinates agree to ~1e-6 mm, far below one voxel.
    assert worst < 1e-4, worst
    # Negative control: the CT voxels with rows and columns swapped (a reader bug) do not match.
    swapped = write_nifti(Volume(ct.transpose(1, 0, 2).copy().astype(np.float32), ct_affine, "CT", "HU"), tmp_path / "swapped.nii.gz")
    wrong, _ = pairs.convert_pair(str(pet_nifti), str(swapped), "k", config)
    differences = [np.abs(parse_example_numpy(a)["target"] - parse_example_numpy(b)["target"]).max() for (_, a), (_, b) in zip(wrong, from_nifti)]
    assert max(differences) > 0.05


def _bad_inputs(tmp_path, pet_ct_pairs):
    import nibabel as nib

    rows = [line.split(",") for line in pet_ct_pairs.read_text().splitlines()[1:]]
    base = pet_ct_pairs.parent
    good_pet, good_ct = str(base / rows[0][1]), str(base / rows[0][2])
    pet = read_volume(good_pet)
    ct = read_volume(good_ct)
    nan = pet.array.copy()
    nan[3, 3, 3] = np.nan
    nan_path = write_nifti(Volume(nan, pet.affine, "PT", "Bq/ml"), tmp_path / "nan.nii.gz")
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([pet.array] * 2, axis=-1), pet.affine), str(four_d))
    far = ct.affine.copy()
    far[:3, 3] += 2000.0
    far_path = write_nifti(Volume(ct.array, far, "CT", "HU"), tmp_path / "far.nii.gz")
    truncated = write_dicom_series(tmp_path / "truncated", np.round(ct.array[:, :, :4]), ct.affine)
    victim = sorted(truncated.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    report = tmp_path / "report"
    report.mkdir()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr = Dataset()
    sr.file_meta = meta
    sr.SOPClassUID = meta.MediaStorageSOPClassUID
    sr.Modality = "SR"
    sr.save_as(report / "sr.dcm", enforce_file_format=True)
    bad = {
        "bad-missing": (str(tmp_path / "nowhere" / "pet.nii.gz"), good_ct, "does not exist"),
        "bad-truncated": (good_pet, str(truncated), "truncated"),
        "bad-nonimage": (good_pet, str(report), "without pixel data"),
        "bad-nan": (str(nan_path), good_ct, "NaN"),
        "bad-4d": (str(four_d), good_ct, "4-D"),
        "bad-apart": (good_pet, str(far_path), "do not overlap"),
    }
    csv_path = tmp_path / "mixed.csv"
    lines = ["patient_id,source,target"] + [f"{p},{base / s},{base / t}" for p, s, t in rows]
    lines += [f"{name},{s},{t}" for name, (s, t, _) in bad.items()]
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path, bad, len(rows)


def test_bad_pairs_are_rejected_with_reasons_and_the_rest_converts(tmp_path, pet_ct_pairs, capsys):
    csv_path, bad, good = _bad_inputs(tmp_path, pet_ct_pairs)
    assert _convert(csv_path, "pet_ct", tmp_path / "out") == 0
    manifest = manifest_lib.read_manifest(tmp_path / "out")
    assert manifest["converted_pairs"] == good and manifest["rejected_pairs"] == len(bad)
    reasons = {item["row"]: item["reason"] for item in manifest["rejected"]}
    for line_number, (name, (_, _, expected)) in enumerate(bad.items(), start=2 + good):
        assert expected in reasons[line_number], (name, reasons[line_number])
    stderr = capsys.readouterr().err
    assert stderr.count("rejected pair") == len(bad)
    assert len(_records(tmp_path / "out", "train")) + len(_records(tmp_path / "out", "val")) == sum(v["slices"] for v in manifest["volumes"])
    # --strict: non-zero, and nothing that looks like a dataset is left behind.
    assert _convert(csv_path, "pet_ct", tmp_path / "strict", "--strict") == 1
    assert not (tmp_path / "strict").exists() and list(tmp_path.glob("strict.*")) == []


def test_nothing_converted_exits_non_zero(tmp_path):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("patient_id,source,target\np1,missing_a.nii.gz,missing_b.nii.gz\n")
    assert _convert(csv_path, "pet_ct", tmp_path / "out") == 1
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="patient_id"):
        bad_header = tmp_path / "bad.csv"
        bad_header.write_text("id,src,tgt\n")
        _convert(bad_header, "pet_ct", tmp_path / "out")


def test_no_identifying_header_value_reaches_any_output_byte(tmp_path):
    import pydicom

    identity = {"PatientName": "Doe^Johnathan", "PatientID": "MRN-4711-XQ", "StudyDate": "19870413", "PatientBirthDate": "19500101"}
    (pet, pet_affine), (ct, ct_affine) = _pet_and_ct(np.random.default_rng(3))
    pet_dir = write_dicom_series(tmp_path / "in" / "a", pet, pet_affine, modality="PT", intercept=0.0, extra={"Units": "BQML", **identity})
    ct_dir = write_dicom_series(tmp_path / "in" / "b", ct, ct_affine, modality="CT", extra=identity)
    header = pydicom.dcmread(next(ct_dir.iterdir()))
    secrets_ = list(identity.values()) + ["Johnathan", "4711", str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID)]
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"patient_id,source,target\nMRN-4711-XQ,{pet_dir},{ct_dir}\nMRN-4711-XQ-2,{pet_dir},{ct_dir}\n")
    out = tmp_path / "out"
    assert _convert(csv_path, "pet_ct", out) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".tfrecord.gz") for p in files) and (out / "manifest.json") in files
    assert_no_secret_bytes(files, secrets_)
    assert "test-salt" not in (out / "manifest.json").read_text()


def test_interrupted_conversion_leaves_no_directory_that_looks_complete(tmp_path, pet_ct_pairs, monkeypatch):
    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "_read_jsonl", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _convert(pet_ct_pairs, "pet_ct", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob("out.*")) == []  # the partial folder removed, the lock released
    with pytest.raises(UserError, match="manifest"):
        manifest_lib.read_manifest(tmp_path / "out")


def test_existing_output_is_not_replaced_without_overwrite(tmp_path, pet_ct_pairs):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="--overwrite"):
        _convert(pet_ct_pairs, "pet_ct", tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        _convert(pet_ct_pairs, "pet_ct", tmp_path / "file", "--overwrite")
    assert (tmp_path / "out" / "keep.txt").read_text() == "x" and (tmp_path / "file").read_text() == "x"


def test_splits_are_by_patient_deterministic_and_never_empty():
    keys = [f"{i:016x}" for i in range(3)]
    assert pairs.assign_splits(keys, 0.2) == pairs.assign_splits(list(reversed(keys)), 0.2)
    for count in (2, 3, 4, 10):
        assignment = pairs.assign_splits([f"k{i}" for i in range(count)], 0.2)
        assert set(assignment.values()) == {"train", "val"}
    assert list(pairs.assign_splits([f"k{i}" for i in range(10)], 0.2).values()).count("val") == 2
    assert pseudonyms.pseudonym("A", b"salt") != pseudonyms.pseudonym("A", b"other") and len(pseudonyms.pseudonym("A", b"s")) == 16


def test_builtin_dataset_is_made_once_then_reused(tmp_path, monkeypatch):
    from medgan_tf.workflows import builtin

    monkeypatch.setenv("MEDGAN_TF_CACHE", str(tmp_path / "cache"))
    path = builtin.ensure_builtin_dataset("pet_denoise", 32, patients=2)
    assert path.parent.parent == tmp_path / "cache" and (path / "manifest.json").is_file()
    assert manifest_lib.read_manifest(path)["counts"]["val"]["slices"] > 0

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("the cached dataset should have been reused")

    monkeypatch.setattr(convert, "convert", must_not_run)
    assert builtin.ensure_builtin_dataset("pet_denoise", 32, patients=2) == path


def test_salt_comes_from_flag_then_environment_then_a_private_per_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("MEDGAN_TF_SALT", raising=False)
    assert pseudonyms.resolve_salt("flag") == (b"flag", "--salt")
    salt, source = pseudonyms.resolve_salt(None)
    secret_file = tmp_path / "medgan-tf" / "pseudonym-salt"
    assert source == "per-user secret file" and len(salt) == 64
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert pseudonyms.resolve_salt(None)[0] == salt  # stable: the same patient keeps one key
    monkeypatch.setenv("MEDGAN_TF_SALT", "from-env")
    assert pseudonyms.resolve_salt(None) == (b"from-env", "MEDGAN_TF_SALT")
