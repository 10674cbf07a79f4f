"""Failures the user can fix end in one `error: …` line (exit 2), not a traceback, and leave the
earlier outputs intact: a full disk under `export` and `evaluate`, two exports racing for one
version folder; a constant target is scored without a raw numpy warning."""

from __future__ import annotations

import contextlib
import csv
import errno
import warnings
from pathlib import Path

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import Volume, write_nifti

from helpers import make_run  # noqa: E402

NO_SPACE = "No space left on device"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    make_run(root / "run", "pet_denoise", image_size=32)
    return root / "run"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith("error: ")
    return lines[-1]


@pytest.mark.parametrize("failure", ["OSError", "ResourceExhaustedError"])
def test_export_on_a_full_disk_is_one_line_and_keeps_the_earlier_versions(run, tmp_path, monkeypatch, capsys, failure):
    import tensorflow as tf

    base = tmp_path / "models"
    assert main(["export", str(run), "--out", str(base)]) == 0
    capsys.readouterr()

    def full_disk(module, path, **kwargs):
        Path(path, "saved_model.pb").write_bytes(b"half")
        if failure == "OSError":
            raise OSError(errno.ENOSPC, NO_SPACE, str(Path(path, "variables")))
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}/variables/variables.data; {NO_SPACE}")

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    assert main(["export", str(run), "--out", str(base)]) == 2

    line = _one_error_line(capsys.readouterr().err)
    assert NO_SPACE in line and "earlier outputs are intact" in line and str(base / "2") in line
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["1"] and (base / "1" / "saved_model.pb").is_file()


def test_two_exports_into_one_folder_at_once_are_one_line(run, tmp_path, monkeypatch, capsys):
    """The other export publishes version 1 while this one is saving it."""
    import tensorflow as tf

    base = tmp_path / "models"
    real_save = tf.saved_model.save

    def raced(module, path, **kwargs):
        real_save(module, path, **kwargs)
        (base / "1").mkdir()
        (base / "1" / "saved_model.pb").write_bytes(b"the other export's")

    monkeypatch.setattr(tf.saved_model, "save", raced)
    assert main(["export", str(run), "--out", str(base)]) == 2

    line = _one_error_line(capsys.readouterr().err)
    assert "written by another export" in line and "--version" in line
    assert sorted(p.name for p in base.iterdir()) == ["1"]
    assert (base / "1" / "saved_model.pb").read_bytes() == b"the other export's"


SHAPE = (12, 12, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _write(path: Path, array, modality="CT", unit="HU") -> str:
    write_nifti(Volume(np.asarray(array, dtype=np.float32), AFFINE, modality, unit), path)
    return path.name


def _ct():
    ct = np.full(SHAPE, -1000.0)
    ct[2:10, 2:10, 1:7] = 40.0
    ct[4:8, 4:8, 2:6] = 900.0
    return ct


def test_evaluate_on_a_full_disk_is_one_line_and_keeps_the_earlier_report(tmp_path, monkeypatch, capsys):
    from medgan_tf import files

    with open(tmp_path / "eval.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["patient_id", "target", "prediction"],
                                      ["p0", _write(tmp_path / "t.nii.gz", _ct()), _write(tmp_path / "p.nii.gz", _ct() + 5)]])
    argv = ["evaluate", "--pairs", str(tmp_path / "eval.csv"), "--task", "pet_ct", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    before = (tmp_path / "r" / "metrics.json").read_text()
    capsys.readouterr()

    @contextlib.contextmanager
    def full_disk(path, **kwargs):
        raise OSError(errno.ENOSPC, NO_SPACE, str(path))
        yield  # pragma: no cover

    monkeypatch.setattr(files, "atomic_file", full_disk)
    assert main(argv) == 2

    line = _one_error_line(capsys.readouterr().err)
    assert NO_SPACE in line and str(tmp_path / "r") in line
    assert (tmp_path / "r" / "metrics.json").read_text() == before


def test_a_constant_target_is_scored_without_a_numpy_warning(tmp_path):
    from medgan_tf.evaluation.cases import read_evaluation_csv
    from medgan_tf.evaluation.volumes import evaluate_volumes

    target = np.full(SHAPE, 1000.0)  # Bq/ml: no range
    prediction = np.full(SHAPE, 1003.0)
    with open(tmp_path / "eval.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["patient_id", "target", "prediction"],
                                      ["flat", _write(tmp_path / "t.nii.gz", target, "PT", "Bq/ml"),
                                       _write(tmp_path / "p.nii.gz", prediction, "PT", "Bq/ml")],
                                      ["same", "t.nii.gz", "t.nii.gz"]])
    rows = read_evaluation_csv(tmp_path / "eval.csv")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning (divide by zero in log10) fails the test
        result = evaluate_volumes(rows, "pet_denoise", "pet")

    scores = {entry["patient_id"]: entry["scores"]["model"] for entry in result.per_patient}
    assert np.isnan(scores["flat"]["nrmse"]) and np.isfinite(scores["flat"]["psnr"])  # UDPET's PSNR: peak / RMSE
    assert scores["same"]["psnr"] == np.inf and scores["same"]["nrmse"] == 0.0
    assert any("patient flat: the target holds one value (1000); nrmse" in note for note in result.notes)


def test_the_paper_protocol_without_a_window_scores_a_constant_target_on_a_one_unit_window():
    from medgan_tf.evaluation.protocols import PROTOCOLS

    target = np.full((8, 12, 12), 1000.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        off = PROTOCOLS.get("paper").function(target + 3.0, target)
        same = PROTOCOLS.get("paper").function(target, target)
    assert off["mae"] == pytest.approx(3.0) and off["psnr"] == pytest.approx(0.0)  # 0 vs 255 on the 0–255 scale
    assert same["psnr"] == np.inf and same["mse"] == 0.0
