"""A task of your own, through the real command line and nothing synthetic of the package:
`medgan-tf tasks --show mr_ct > t.toml`, edited to another name and MR → MR, then `convert --task
t.toml` on NIfTI pairs made here, `train --data` (no --task: the manifest's), `export`, `translate`
to a DICOM MR series and `evaluate --pairs` (with the model, and on a prediction column with
--task t.toml). The task's name travels: manifest, run config.json, export assets, report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medgan_tf.cli import main

SIZE = 16
SLICES = 8
SPACING = 2.0
TASK = "my_t1_t2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
TINY = ["--image-size", str(SIZE), "--ublocks", "1", "--base-filters", "4", "--epochs", "1", "--steps-per-epoch", "2",
        "--lambda-style", "0", "--lambda-content", "0", "--validation-steps", "1", "--quiet"]  # VGG-19 needs ≥ 32²


def _head(rng: np.random.Generator, shape=(SIZE, SIZE, SLICES)) -> np.ndarray:
    """A smooth MR-like head: an ellipsoid of signal in air, a darker core and two bright blobs (a.u.)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    radius = np.sqrt(np.sum((grid / np.array([0.8, 0.9, 1.3])) ** 2, axis=-1))
    head = 600.0 / (1.0 + np.exp((radius - 0.85) * 25.0))
    head -= 250.0 * np.exp(-np.sum(grid**2, axis=-1) / 0.08)
    for _ in range(2):
        centre = rng.uniform(-0.4, 0.4, 3)
        head += rng.uniform(150, 300) * np.exp(-np.sum((grid - centre) ** 2, axis=-1) / 0.03)
    return np.clip(head + rng.normal(0.0, 5.0, shape), 0.0, None)


def _t2_like(t1: np.ndarray) -> np.ndarray:
    """The target: a blurred, contrast-changed version of the source."""
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(t1, 0.8)
    return 1.5 * np.sqrt(blurred * blurred.max()) * (blurred > 20.0) + 0.2 * blurred


def write_pairs(root: Path, patients: int = 4) -> Path:
    import nibabel as nib

    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    lines = ["patient_id,source,target"]
    for number in range(patients):
        t1 = _head(np.random.default_rng(number))
        for name, array in (("t1", t1), ("t2", _t2_like(t1))):
            nib.Nifti1Image(array.astype(np.float32), affine).to_filename(root / f"p{number}_{name}.nii.gz")
        lines.append(f"patient{number},p{number}_t1.nii.gz,p{number}_t2.nii.gz")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def edited_task(text: str) -> str:
    """`tasks --show mr_ct` edited as a user would: another name, an MR target, our grid."""
    text = re.sub(r'(?m)^name = .*$', f'name = "{TASK}"', text)
    text = re.sub(r'(?m)^target = .*$', 'target = "MR"', text)
    text = re.sub(r'(?m)^spacing_mm = .*$', f"spacing_mm = [{SPACING}, {SPACING}, {SPACING}]", text)
    text = re.sub(r'(?m)^image_size = .*$', f"image_size = {SIZE}", text)
    text = re.sub(r'(?m)^protocol = .*$', 'protocol = "paper"', text)
    text = re.sub(r'(?m)^description = .*$', 'description = "T1 → T2 of the head (a test)"', text)
    return text


@pytest.mark.slow
def test_a_task_file_runs_convert_train_export_translate_evaluate(tmp_path, capsys):
    import pydicom

    from medgan_tf import tasks
    from medgan_tf.data.io import read_volume

    assert main(["tasks", "--show", "mr_ct"]) == 0
    toml = tmp_path / "t.toml"
    toml.write_text(edited_task(capsys.readouterr().out))
    # The CT window table left under the MR target is refused, with what to do.
    assert main(["tasks", "--show", str(toml)]) == 2
    assert ("target_normalization.unit: 'HU' does not fit MR (values in a.u.); edit the table for MR, or delete it"
            in capsys.readouterr().err)
    toml.write_text(toml.read_text().split("[target_normalization]")[0])  # deleted: MR's default
    task = tasks.get(str(toml))
    assert (task.name, task.data.source_modality, task.data.target_modality) == (TASK, "MR", "MR")
    assert task.data.target_normalization.share_source  # same modality: one scale for both sides

    pairs = write_pairs(tmp_path)
    data = tmp_path / "data"
    assert main(["convert", "--pairs", str(pairs), "--task", str(toml), "--out", str(data), "--val-fraction", "0.25",
                 "--salt", "own-task-salt-0123456789"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["task"] == TASK and manifest["config"]["target_modality"] == "MR"

    run = tmp_path / "run"
    assert main(["train", "--data", str(data), *TINY, "--logdir", str(run)]) == 0  # no --task: the manifest's
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == TASK and config["data"]["target_modality"] == "MR"
    assert config["data"]["spacing_mm"] == [SPACING] * 3 and config["data"]["image_size"] == SIZE

    assert main(["export", str(run), "--out", str(tmp_path / "savedmodels")]) == 0
    version = tmp_path / "savedmodels" / "1"
    exported = json.loads((version / "assets" / "config.json").read_text())
    assert exported["task"] == TASK and exported["data"]["target_modality"] == "MR"
    capsys.readouterr()

    exported = json.loads((version / "assets" / "normalization.json").read_text())
    assert exported["task"] == TASK and exported["target"]["modality"] == "MR" and exported["target"]["share_source"]

    series = tmp_path / "t2_series"
    assert main(["translate", "--model", str(version), "--input", str(tmp_path / "p0_t1.nii.gz"),
                 "--output", str(series), "--quiet"]) == 0
    files = sorted(series.glob("*.dcm"))
    assert len(files) == SLICES
    headers = [pydicom.dcmread(path) for path in files]
    assert {h.Modality for h in headers} == {"MR"} and {h.SOPClassUID for h in headers} == {MR_IMAGE_STORAGE}
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and TASK in headers[0].SeriesDescription

    (tmp_path / "eval.csv").write_text("patient_id,source,target\n" + "".join(
        f"patient{n},p{n}_t1.nii.gz,p{n}_t2.nii.gz\n" for n in range(4)))
    assert main(["translate", "--model", str(version), "--inputs", str(tmp_path / "eval.csv"),
                 "--output-dir", str(tmp_path / "predictions"), "--quiet"]) == 0
    # The DICOM series holds the NIfTI translation of the same volume (up to its 16-bit storage).
    written, direct = read_volume(series), read_volume(tmp_path / "predictions" / "patient0.nii.gz")
    assert written.modality == "MR" and written.shape == direct.shape == (SIZE, SIZE, SLICES)
    np.testing.assert_allclose(written.array, direct.array, atol=1e-3 * max(np.ptp(direct.array), 1.0) + 1e-3)
    np.testing.assert_allclose(written.affine, direct.affine, atol=1e-4)

    capsys.readouterr()
    assert main(["evaluate", "--model", str(version), "--pairs", str(tmp_path / "eval.csv"),
                 "--out", str(tmp_path / "report"), "--json"]) == 0
    with_model = json.loads(capsys.readouterr().out)
    assert with_model["task"] == TASK and with_model["protocol"] == "paper" and with_model["num_patients"] == 4
    assert not with_model["failures"] and TASK in (tmp_path / "report" / "metrics.md").read_text()

    (tmp_path / "pred.csv").write_text("patient_id,target,prediction\n" + "".join(
        f"patient{n},p{n}_t2.nii.gz,predictions/patient{n}.nii.gz\n" for n in range(4)))
    assert main(["evaluate", "--pairs", str(tmp_path / "pred.csv"), "--task", str(toml),
                 "--out", str(tmp_path / "report2"), "--json"]) == 0
    columns = json.loads(capsys.readouterr().out)
    assert columns["task"] == TASK and columns["protocol"] == "paper" and columns["num_patients"] == 4
    assert TASK in (tmp_path / "report2" / "metrics.md").read_text()
    for metric in ("ssim", "psnr", "mae"):  # the model's own translations, scored either way
        assert columns["summary"]["model"][metric]["mean"] == pytest.approx(
            with_model["summary"]["model"][metric]["mean"], rel=1e-4, abs=1e-6)
