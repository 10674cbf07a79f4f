"""Adding a modality is one entry of the modality table, adding a task one entry of the task
registry: a toy modality (ultrasound in dB, with its own normalization, body-mask rule and
plausibility check) and a toy task MR → ultrasound, registered here and nowhere else, are
converted (the check refuses a pair that cannot be ultrasound), trained for one step, and
translated to a volume of the new modality in its own unit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import modalities, tasks
from medgan_tf.cli import main
from medgan_tf.data import manifest as manifest_lib
from medgan_tf.data.io import Volume, read_volume, write_nifti
from medgan_tf.modalities import MODALITIES, Modality
from medgan_tf.tasks import TASKS

SHAPE = (32, 32, 4)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def echo_check(values: np.ndarray) -> str | None:
    """B-mode echo amplitude in dB after log compression: 0…100 dB, with some contrast."""
    low, high = float(np.min(values)), float(np.max(values))
    if low < 0.0 or high > 100.0:
        return f"echo amplitudes run from {low:.4g} to {high:.4g} dB; log-compressed B-mode lies in 0…100 dB"
    return modalities.varying_check(values)


ULTRASOUND = Modality(
    "US", "ultrasound", "US", "1.2.840.10008.5.1.4.1.1.6.2", "dB",
    {"kind": "window", "low": 0.0, "high": 60.0, "unit": "dB"},
    mask_threshold=lambda _: 5.0, mask_rule="echo > 5 dB", check=echo_check)


@pytest.fixture
def toy_task():
    with MODALITIES.temporarily("US", ULTRASOUND):
        task = tasks.make("mr_us", "MR", "US", (1.0, 1.0, 1.0), 32,
                          description="MR → ultrasound (a toy task of this test)", reference="this test")
        with TASKS.temporarily("mr_us", task):
            yield task
    assert "US" not in MODALITIES and "mr_us" not in TASKS


def _write(path: Path, array, modality: str = "OT", unit: str = "a.u.") -> str:
    write_nifti(Volume(np.asarray(array, np.float32), AFFINE, modality, unit), path)
    return path.name


def _pairs(root: Path) -> Path:
    """Three MR → ultrasound pairs (ultrasound = 40 dB inside a body, 2 dB speckle outside) and one
    whose 'ultrasound' is a CT in HU (refused by the ultrasound check)."""
    rng = np.random.default_rng(0)
    lines = ["patient_id,source,target"]
    for number in range(3):
        body = np.zeros(SHAPE)
        body[3 + number:13, 4:12, :] = 1.0
        mr = body * rng.normal(600.0, 50.0, SHAPE) + rng.normal(0.0, 5.0, SHAPE)
        us = np.clip(body * 40.0 + rng.gamma(2.0, 1.0, SHAPE), 0.0, 100.0)
        lines.append(f"p{number},{_write(root / f'mr{number}.nii.gz', mr)},{_write(root / f'us{number}.nii.gz', us, 'US', 'dB')}")
    ct = np.where(np.arange(SHAPE[0])[:, None, None] > 3, 40.0, -1000.0) * np.ones(SHAPE)
    lines.append(f"ct_as_us,mr0.nii.gz,{_write(root / 'ct.nii.gz', ct)}")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def test_a_modality_and_a_task_registered_in_one_place_convert_train_and_translate(toy_task, tmp_path):
    assert toy_task.target.unit == "dB" and toy_task.data.target_normalization.high == 60.0
    assert toy_task.protocol == "paper" and not toy_task.denoising and not toy_task.same_unit

    data = tmp_path / "data"
    assert main(["convert", "--pairs", str(_pairs(tmp_path)), "--task", "mr_us", "--out", str(data),
                 "--salt", "test-salt-0123456789", "--num-shards", "1", "--val-fraction", "0.34"]) == 0
    manifest = manifest_lib.read_manifest(data)
    assert manifest["task"] == "mr_us" and manifest["converted_pairs"] == 3
    assert manifest["config"]["target_modality"] == "US"
    [rejected] = manifest["rejected"]
    assert rejected["reason"].startswith("target cannot be ultrasound (US check): echo amplitudes run from -1000")
    assert {volume["target"]["unit"] for volume in manifest["volumes"]} == {"dB"}

    run = tmp_path / "run"
    assert main(["train", "--task", "mr_us", "--data", str(data), "--logdir", str(run), "--image-size", "32",
                 "--base-filters", "4", "--ublocks", "1", "--epochs", "1", "--steps-per-epoch", "1",
                 "--validation-steps", "1", "--vgg-weights", "none", "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 1
    assert json.loads((run / "config.json").read_text())["task"] == "mr_us"

    assert main(["translate", "--model", str(run), "--input", str(tmp_path / "mr0.nii.gz"), "--output",
                 str(tmp_path / "us.nii.gz"), "--quiet"]) == 0
    output = read_volume(tmp_path / "us.nii.gz")
    assert (output.modality, output.unit, output.shape) == ("US", "dB", SHAPE)
