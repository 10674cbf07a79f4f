"""Resuming a run whose checkpoints were damaged after they were written: a truncated data file or
a deleted index is named and the run continues from the newest intact checkpoint; with none intact
the run stops with one line (a new start from step 0 is `--resume RUN --restart`, on purpose); a
garbled state file is named."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from medgan_tf import cli

TINY = ["--task", "pet_denoise", "--image-size", "32", "--ublocks", "1", "--base-filters", "4",
        "--vgg-weights", "none", "--quiet", "--steps-per-epoch", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with ckpt-1 and ckpt-2 (one step an epoch, two epochs), copied per test."""
    from medgan_tf.workflows.builtin import ensure_builtin_dataset

    data = ensure_builtin_dataset("pet_denoise", 32)
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", *TINY, "--epochs", "2", "--data", str(data), "--logdir", str(run)]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = Path(shutil.copytree(trained, tmp_path / "run"))
    record = json.loads((copy / "data.json").read_text())
    assert Path(record["data_dir"]).is_dir()
    return copy


def _resume(run: Path, *extra: str) -> int:
    return cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet", *extra])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _data_file(run: Path, step: int) -> Path:
    return next((run / "checkpoints").glob(f"ckpt-{step}.data-*"))


@pytest.mark.parametrize("damage", ["truncated data", "deleted index"])
def test_a_damaged_latest_checkpoint_is_named_and_the_run_resumes_from_the_one_before(run, caplog, capsys, damage):
    if damage == "truncated data":
        _truncate(_data_file(run, 2))
    else:
        (run / "checkpoints" / "ckpt-2.index").unlink()

    with caplog.at_level(logging.INFO):
        assert _resume(run) == 0

    text = caplog.text + capsys.readouterr().err
    assert "ckpt-2" in text and "damaged" in text and "Traceback" not in text
    assert "resuming from" in text and "ckpt-1" in text
    assert json.loads((run / "summary.json").read_text())["step"] == 3
    assert (run / "checkpoints" / "ckpt-3.index").is_file()


def test_no_intact_checkpoint_is_an_error_not_a_silent_step_0(run, capsys):
    _truncate(_data_file(run, 2))
    (run / "checkpoints" / "ckpt-1.index").unlink()
    summary_before = (run / "summary.json").read_text()

    assert _resume(run) == 2

    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "no intact checkpoint" in err and "--restart" in err and "Traceback" not in err
    assert (run / "summary.json").read_text() == summary_before

    assert _resume(run, "--restart") == 0, "a new start on purpose"
    assert json.loads((run / "summary.json").read_text())["step"] == 3


@pytest.mark.parametrize("name, content", [("checkpoints/checkpoint", b"\xff\xfe\x00\x81garbage"),
                                           ("checkpoints/checkpoint", b'model_checkpoint_path: "ckpt-2"\nnot a field\n'),
                                           ("selection.json", b"\xff\xfe{"), ("data.json", b'{"data_dir": ')])
def test_a_garbled_state_file_is_an_error_naming_it(run, capsys, name, content):
    if not (run / name).exists():
        pytest.skip(f"the run has no {name}")
    (run / name).write_bytes(content)

    assert _resume(run) == 2

    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("error: ") and str(run / name) in err and "garbled" in err
    assert "Traceback" not in err


def test_restart_needs_resume(capsys):
    assert cli.main(["train", *TINY, "--restart"]) == 2
    assert "--restart only applies with --resume" in capsys.readouterr().err
