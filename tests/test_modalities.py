"""The modality table's plausibility checks: each built-in check on hand-built arrays, and the
three places that apply them — the converter (a rejected pair with the check's reason, the other
pairs converted), `translate` (a one-line error) and `evaluate --pairs` (a failed patient, the
others scored). A NIfTI file says nothing about its modality: these checks are what stops an MR
declared as PET, or a CT not in HU, from being trained on or scored."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import modalities
from medgan_tf.cli import main
from medgan_tf.data import manifest as manifest_lib
from medgan_tf.data.io import Volume, write_nifti
from medgan_tf.errors import UserError
from pipelines.convert import convert
from pipelines.options import ConvertOptions

from helpers import make_run  # noqa: E402  (tests/ is on sys.path)

SHAPE = (16, 16, 6)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])  # pet_ct's 1 mm grid: nothing to resample


def _ct(rng, shape=SHAPE) -> np.ndarray:
    """A CT in HU: air around a soft-tissue box with a bone block."""
    ct = np.full(shape, -1000.0)
    ct[3:-3, 3:-3, :] = rng.normal(40.0, 15.0, (shape[0] - 6, shape[1] - 6, shape[2]))
    ct[6:9, 6:9, :] = 900.0
    return ct


def _pet(rng, shape=SHAPE) -> np.ndarray:
    """A PET in SUV: background near 0, a body of about 1, a hot spot of 8."""
    pet = np.abs(rng.normal(0.05, 0.02, shape))
    pet[3:-3, 3:-3, :] += 1.0
    pet[7:9, 7:9, :] += 7.0
    return pet


def _reason(key: str, values) -> str | None:
    try:
        modalities.get(key).plausible(np.asarray(values, np.float32), "the volume")
    except UserError as error:
        return str(error)
    return None


# --------------------------------------------------------------------------- each check on arrays


def test_ct_with_air_and_padding_passes_and_far_below_air_fails_unless_cbct():
    rng = np.random.default_rng(0)
    ct = _ct(rng)
    assert _reason("CT", ct) is None
    for padding in (-1024.0, -3024.0):  # outside the reconstructed field of view: one value
        padded = ct.copy()
        padded[:2] = padding  # 12.5 % of the voxels
        assert _reason("CT", padded) is None, padding
    streaks = ct.copy()
    chosen = rng.random(SHAPE) < 0.05
    streaks[chosen] = rng.uniform(-2100.0, -1900.0, int(chosen.sum()))  # 5 %, not one padding value
    reason = _reason("CT", streaks)
    assert reason.startswith("the volume cannot be CT (CT check): ") and "below -1100 HU" in reason
    assert _reason("CBCT", streaks) is None  # cone-beam streaks may lie far below air
    assert "no air" in _reason("CT", rng.uniform(0.0, 100.0, SHAPE))  # not in HU
    assert "no contrast" in _reason("CT", np.full(SHAPE, -1000.0))


def test_pet_with_fbp_like_negatives_passes_zero_and_z_scored_fail():
    rng = np.random.default_rng(1)
    pet = _pet(rng) + rng.normal(0.0, 0.03, SHAPE)  # filtered back-projection noise: small negatives
    assert (pet < 0).any() and _reason("PT", pet) is None
    assert "no activity" in _reason("PT", np.zeros(SHAPE))
    z_scored = rng.normal(0.0, 1.0, SHAPE)
    reason = _reason("PT", z_scored)
    assert reason.startswith("the volume cannot be PET (PT check): ") and "z-scored" in reason


def test_mr_needs_contrast_only():
    rng = np.random.default_rng(2)
    assert _reason("MR", rng.normal(0.0, 1.0, SHAPE)) is None  # any scale, even z-scored
    assert _reason("MR", np.full(SHAPE, 7.0)) == "the volume cannot be MR (MR check): every voxel is 7 (no contrast)"


def test_every_built_in_modality_has_a_check():
    assert set(modalities.MODALITIES.names()) >= {"CT", "CBCT", "MR", "PT"}
    for key, modality in modalities.MODALITIES.items():
        assert modality.check is not None, key


# --------------------------------------------------------------------------- where they apply


def _write(path: Path, array, modality: str, unit: str) -> str:
    write_nifti(Volume(np.asarray(array, np.float32), AFFINE, modality, unit), path)
    return path.name


def test_convert_rejects_a_ct_without_air_and_an_mr_declared_as_pet(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for number in range(3):
        rows.append((f"good{number}", _write(tmp_path / f"pet{number}.nii.gz", _pet(rng), "OT", "a.u."),
                     _write(tmp_path / f"ct{number}.nii.gz", _ct(rng), "OT", "a.u.")))
    # NIfTI files that do not say what they hold (descrip "OT"): only the values can tell.
    rows.append(("ct_without_air", rows[0][1], _write(tmp_path / "no_air.nii.gz", rng.uniform(0, 100, SHAPE), "OT", "a.u.")))
    rows.append(("mr_as_pet", _write(tmp_path / "mr.nii.gz", rng.normal(0.0, 1.0, SHAPE), "OT", "a.u."), rows[1][2]))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("patient_id,source,target\n" + "".join(",".join(row) + "\n" for row in rows))

    options = ConvertOptions(pairs=pairs, task="pet_ct", out=tmp_path / "out", image_size=16, salt="test-salt-0123456789",
                             num_shards=1, val_fraction=0.34)
    assert convert(options) == 0
    manifest = manifest_lib.read_manifest(tmp_path / "out")
    assert manifest["converted_pairs"] == 3 and manifest["rejected_pairs"] == 2
    reasons = {item["row"]: item["reason"] for item in manifest["rejected"]}
    assert reasons[5].startswith("target cannot be CT (CT check): no air")
    assert reasons[6].startswith("source cannot be PET (PT check): ") and "never negative" in reasons[6]
    assert all("\n" not in reason and "nii" not in reason for reason in reasons.values())


def test_translate_refuses_an_implausible_input_in_one_line(tmp_path, capsys):
    make_run(tmp_path / "run", "pet_denoise", image_size=16)
    path = tmp_path / "zero.nii.gz"
    write_nifti(Volume(np.zeros(SHAPE, np.float32), np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV"), path)
    code = main(["translate", "--model", str(tmp_path / "run"), "--input", str(path), "--output",
                 str(tmp_path / "out.nii.gz"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not (tmp_path / "out.nii.gz").exists()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("error: the input of this pet_denoise model cannot be PET (PT check): no activity"), err


def test_evaluate_pairs_reports_an_implausible_target_and_scores_the_others(tmp_path, capsys):
    rng = np.random.default_rng(4)
    shape = (24, 24, 12)  # room for SSIM's window inside the body
    rows = []
    for number in range(2):
        ct = _ct(rng, shape)
        rows.append([f"p{number}", _write(tmp_path / f"t{number}.nii.gz", ct, "CT", "HU"),
                     _write(tmp_path / f"pred{number}.nii.gz", ct + 20.0, "CT", "HU")])
    rows.append(["not_hu", _write(tmp_path / "t_bad.nii.gz", rng.uniform(0, 100, shape), "OT", "a.u."), rows[0][2]])
    with open(tmp_path / "eval.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["patient_id", "target", "prediction"], *rows])

    code = main(["evaluate", "--pairs", str(tmp_path / "eval.csv"), "--task", "pet_ct", "--out", str(tmp_path / "r"),
                 "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["num_patients"] == 2
    assert [f["patient_id"] for f in payload["failures"]] == ["not_hu"]
    assert payload["failures"][0]["reason"].startswith("line 4, column target: the target volume cannot be CT (CT check): no air")
    assert payload["summary"]["model"]["mae"]["mean"] == pytest.approx(20.0, abs=1.0)
