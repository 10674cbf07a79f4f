"""Nothing silently wrong: damaged or missing shards, a full disk during `train`, and resuming on
data that changed. Each failure must end in one `error: …` line (exit 2) that names the file or
field, and must keep every finished step.

Damaged datasets are copies of the built-in 64² pet_denoise dataset (4 train, 2 val shards).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from medgan_tf import cli

TINY = ["--task", "pet_denoise", "--image-size", "64", "--ublocks", "1", "--base-filters", "8",
        "--vgg-weights", "none", "--quiet"]
NO_SPACE = "No space left on device"


@pytest.fixture(scope="module")
def builtin_dir():
    from medgan_tf.workflows.builtin import ensure_builtin_dataset

    return ensure_builtin_dataset("pet_denoise", 64)


@pytest.fixture
def data_copy(builtin_dir, tmp_path):
    """A private copy of the built-in dataset, free to damage."""
    return Path(shutil.copytree(builtin_dir, tmp_path / "data"))


def _shard(data_dir: Path, split: str, index: int) -> Path:
    return sorted((data_dir / split).glob("*.tfrecord.gz"))[index]


def _truncate(path: Path, keep_fraction: float) -> None:
    payload = path.read_bytes()
    path.write_bytes(payload[: int(len(payload) * keep_fraction)])


def _train(run: Path, *extra: str) -> int:
    return cli.main(["train", *TINY, "--steps-per-epoch", "2", "--logdir", str(run), *extra])


def _checkpoints(run: Path) -> list[str]:
    """The checkpoint files of the run (the best-by-validation copy in checkpoints/best/ aside)."""
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name != "best")


# ---- the reader ---------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty"])
def test_the_reader_names_a_damaged_shard(data_copy, damage):
    import tensorflow as tf

    from medgan_tf.data import dataset
    from medgan_tf.errors import UserError

    shard = _shard(data_copy, "train", 1)
    payload = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(payload[: len(payload) // 2])
    elif damage == "garbled":
        shard.write_bytes(payload[:1000] + bytes(500) + payload[1500:])
    else:
        shard.write_bytes(b"")
    with pytest.raises(UserError, match=shard.name):
        list(dataset.iterate_records(data_copy, "train"))
    with pytest.raises((UserError, tf.errors.DataLossError)) as raised:
        for _ in dataset.make_dataset(data_copy, "train", 8, shuffle=False):
            pass
    error = raised.value
    if isinstance(error, tf.errors.DataLossError):  # the tf.data path: named after the fact
        error = dataset.read_error(data_copy, "train", error)
    assert shard.name in str(error) and "convert the dataset again" in str(error)
    assert _shard(data_copy, "train", 0).name not in str(error), "only the damaged shard is named"


def test_a_missing_listed_shard_is_refused_by_name(data_copy, tmp_path, capsys):
    from medgan_tf.data import dataset
    from medgan_tf.errors import UserError

    shard = _shard(data_copy, "train", 2)
    shard.unlink()
    with pytest.raises(UserError, match=f"{shard.name} is missing"):
        dataset.shard_files(data_copy, "train")
    assert _train(tmp_path / "run", "--epochs", "1", "--data", str(data_copy)) == 2
    err = capsys.readouterr().err
    assert "manifest.json lists 4 'train' shard(s)" in err and shard.name in err
    assert "Traceback" not in err


def test_a_shard_the_manifest_does_not_list_is_not_read(data_copy):
    from medgan_tf.data import dataset

    stray = data_copy / "train" / "data-00009-of-00010.tfrecord.gz"
    shutil.copy(_shard(data_copy, "train", 0), stray)
    assert str(stray) not in dataset.shard_files(data_copy, "train")
    assert len(list(dataset.iterate_records(data_copy, "train"))) == 192  # 6 patients × 32 slices


# ---- damaged data during train and evaluate -----------------------------------------------------

def test_a_truncated_training_shard_stops_train_with_its_name(data_copy, tmp_path, capsys):
    shard = _shard(data_copy, "train", 1)
    _truncate(shard, 0.5)
    run = tmp_path / "run"
    assert _train(run, "--epochs", "1", "--data", str(data_copy)) == 2
    err = capsys.readouterr().err
    assert f"error: damaged TFRecord shard in the 'train' split: {shard}" in err
    assert "truncated record" in err and "Traceback" not in err


def test_a_damaged_validation_shard_keeps_the_epochs_checkpoint(data_copy, tmp_path, capsys):
    from medgan_tf.training.checkpoints import latest_checkpoint

    shard = _shard(data_copy, "val", 1)
    _truncate(shard, 0.8)  # the preview batch (first records) still reads; validation does not
    run = tmp_path / "run"
    # --validation-steps 64: the whole val split (2 patients × 32 slices at batch 1) is read.
    assert _train(run, "--epochs", "1", "--validation-steps", "64", "--data", str(data_copy)) == 2
    err = capsys.readouterr().err
    assert "'val' split" in err and shard.name in err
    assert "Training stopped at step 2" in err and "--resume" in err
    assert latest_checkpoint(run).endswith("ckpt-2"), "validation failed, but the epoch's steps must be saved"


def test_a_truncated_shard_stops_evaluate_with_its_name(data_copy, tmp_path, capsys):
    from helpers import make_run  # noqa: E402  (tests/ is on sys.path)

    make_run(tmp_path / "run", "pet_denoise", image_size=64)
    shard = _shard(data_copy, "val", 0)
    _truncate(shard, 0.5)
    code = cli.main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(data_copy),
                     "--out", str(tmp_path / "report")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: {shard} is damaged (truncated record" in err and "Traceback" not in err


# ---- a full disk --------------------------------------------------------------------------------

def _fail_checkpoint_write(monkeypatch, where: str, at_call: int) -> dict:
    """Make the `at_call`-th checkpoint save fail with ENOSPC, after leaving what a real failure
    leaves: a staging folder (where="data") or merged but unrecorded files and a state temp file
    (where="state"). Returns what the run directory looked like at that moment."""
    import tensorflow as tf
    from tensorflow.python.checkpoint import checkpoint_management

    seen = {"calls": 0}
    original_write = tf.train.Checkpoint._write
    original_state = checkpoint_management.update_checkpoint_state_internal

    def failing_write(self, prefix, options=None, **kwargs):
        if Path(prefix).parent.name == "best":  # the best-by-validation copy is not what this test counts
            return original_write(self, prefix, options=options, **kwargs)
        seen["calls"] += 1
        if where == "data" and seen["calls"] == at_call:
            seen["state_file"] = (Path(prefix).parent / "checkpoint").read_bytes()
            staging = Path(f"{prefix}_temp")
            staging.mkdir()
            (staging / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 4096)
            raise tf.errors.ResourceExhaustedError(None, None, f"{staging}/part-00000-of-00001: {NO_SPACE}")
        return original_write(self, prefix, options=options, **kwargs)

    def failing_state(save_dir, *args, **kwargs):
        if Path(save_dir).name == "best":
            return original_state(save_dir, *args, **kwargs)
        if where == "state" and seen["calls"] == at_call and "state_file" not in seen:
            seen["state_file"] = (Path(save_dir) / "checkpoint").read_bytes()
            (Path(save_dir) / "checkpoint.tmp0123abcd").write_bytes(b"partial")
            raise OSError(28, NO_SPACE)
        return original_state(save_dir, *args, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "_write", failing_write)
    monkeypatch.setattr(checkpoint_management, "update_checkpoint_state_internal", failing_state)
    return seen


@pytest.mark.parametrize("where", ["data", "state"])
def test_a_failed_checkpoint_write_keeps_the_earlier_ones(builtin_dir, tmp_path, monkeypatch, capsys, where):
    from medgan_tf.training.checkpoints import latest_checkpoint

    run = tmp_path / "run"
    seen = _fail_checkpoint_write(monkeypatch, where, at_call=2)
    code = cli.main(["train", *TINY, "--steps-per-epoch", "1", "--epochs", "3", "--data", str(builtin_dir),
                     "--logdir", str(run)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"could not write checkpoint ckpt-2 in {run / 'checkpoints'}: " in err and NO_SPACE in err
    assert f"--resume {run}" in err and "Traceback" not in err
    assert (run / "checkpoints" / "checkpoint").read_bytes() == seen["state_file"], "the state file was touched"
    assert latest_checkpoint(run).endswith("ckpt-1")
    assert _checkpoints(run) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    assert not (run / "summary.json").exists()

    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 3


def test_leftovers_of_a_killed_save_are_removed_on_resume(builtin_dir, tmp_path):
    run = tmp_path / "run"
    assert _train(run, "--epochs", "1", "--data", str(builtin_dir)) == 0
    staging = run / "checkpoints" / "ckpt-3_temp"
    staging.mkdir()
    (staging / "part-00000-of-00001.index").write_bytes(b"\0" * 16)
    (run / "checkpoints" / "checkpoint.tmp99").write_text("half a state")
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert not list((run / "checkpoints").glob("*_temp*")) and not list((run / "checkpoints").glob("*.tmp*"))
    assert json.loads((run / "summary.json").read_text())["step"] == 4


def test_a_json_write_on_a_full_disk_leaves_the_old_file(tmp_path, monkeypatch):
    from medgan_tf.errors import UserError
    from medgan_tf.training import checkpoints

    path = tmp_path / "summary.json"
    checkpoints.write_json_atomic(path, {"step": 1})

    def no_space(*args, **kwargs):
        raise OSError(28, NO_SPACE)

    monkeypatch.setattr(Path, "write_text", no_space)  # the write into the temporary file fails
    with pytest.raises(UserError, match=f"could not write {path}: {NO_SPACE}"):
        checkpoints.write_json_atomic(path, {"step": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"], "the temporary file must be removed"


@pytest.fixture
def small_disk(tmp_path):
    """A 96 MB tmpfs mounted for the test (needs root in a container allowing mounts; else skip): room
    for the run, its best-by-validation copy and one save in flight (a save stages, then merges)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount_point)],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def test_a_real_full_disk_during_train(builtin_dir, small_disk, capsys):
    import os

    from medgan_tf.training.checkpoints import latest_checkpoint

    run = small_disk / "run"
    assert _train(run, "--epochs", "1", "--data", str(builtin_dir)) == 0
    checkpoint_bytes = sum(p.stat().st_size for p in (run / "checkpoints").glob("ckpt-2.*"))
    state = (run / "checkpoints" / "checkpoint").read_bytes()
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free - checkpoint_bytes // 2))  # room for logs, not for a checkpoint
    capsys.readouterr()

    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not write") and NO_SPACE in err and "Traceback" not in err
    assert (run / "checkpoints" / "checkpoint").read_bytes() == state
    assert latest_checkpoint(run).endswith("ckpt-2")
    assert not list((run / "checkpoints").glob("*_temp*"))

    filler.unlink()
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["step"] == 4


# ---- resuming on the run's own data -------------------------------------------------------------

def test_resume_without_data_trains_on_the_runs_own_dataset(data_copy, tmp_path, monkeypatch):
    from medgan_tf.data import dataset
    from medgan_tf.training.experiment import manifest_fingerprint
    from medgan_tf.workflows import builtin

    run = tmp_path / "run"
    assert _train(run, "--epochs", "1", "--data", str(data_copy)) == 0
    record = json.loads((run / "data.json").read_text())
    assert record["data_dir"] == str(data_copy.resolve())
    assert record["manifest_sha256"] == manifest_fingerprint(data_copy) and len(record["manifest_sha256"]) == 64
    assert [entry["event"] for entry in record["history"]] == ["started"]

    read_from = []
    original = dataset.make_dataset
    monkeypatch.setattr(dataset, "make_dataset", lambda data_dir, *a, **k: read_from.append(Path(data_dir)) or
                        original(data_dir, *a, **k))
    monkeypatch.setattr(builtin, "ensure_builtin_dataset", lambda *a, **k: pytest.fail("used the built-in data"))
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert read_from and {p.resolve() for p in read_from} == {data_copy.resolve()}
    assert json.loads((run / "summary.json").read_text())["step"] == 4


def test_resume_on_other_or_reconverted_data_needs_data_changed(builtin_dir, data_copy, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--epochs", "1", "--data", str(builtin_dir)) == 0
    capsys.readouterr()

    assert cli.main(["train", "--resume", str(run), "--data", str(data_copy), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: data_dir:" in err and str(builtin_dir) in err and str(data_copy) in err
    assert "--data-changed" in err

    assert cli.main(["train", "--resume", str(run), "--data", str(data_copy), "--data-changed", "--epochs", "2",
                     "--quiet"]) == 0
    record = json.loads((run / "data.json").read_text())
    assert record["data_dir"] == str(data_copy.resolve())
    changed = record["history"][-1]
    assert changed["event"] == "changed (--data-changed)"
    assert changed["previous"]["data_dir"] == str(builtin_dir.resolve())

    # The dataset is converted again (a new manifest): refused until the user says so.
    manifest = json.loads((data_copy / "manifest.json").read_text())
    manifest["seconds"] = manifest.get("seconds", 0) + 1
    (data_copy / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: manifest_sha256:" in err and "converted again" in err and "--data-changed" in err
    assert cli.main(["train", "--resume", str(run), "--epochs", "3", "--data-changed", "--quiet"]) == 0
    assert len(json.loads((run / "data.json").read_text())["history"]) == 3


def test_data_changed_without_resume_is_refused(tmp_path, capsys):
    assert _train(tmp_path / "run", "--epochs", "1", "--data-changed") == 2
    assert "--data-changed only applies with --resume" in capsys.readouterr().err
