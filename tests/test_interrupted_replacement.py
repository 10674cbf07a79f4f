"""A replacement killed at any point: replacing a DICOM series (`translate --output EXISTING_SERIES`)
or writing an export leaves the earlier output in place or the new one complete, and the next run
puts back what a dead run moved aside and removes its work folders (never those of a live run).

The kills are real: a child process SIGKILLs itself between the two renames of a replacement (the
path where the file system cannot exchange two folders atomically) or in the middle of a write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import files
from medgan_tf.data.io import Volume, read_volume
from medgan_tf.data.io.dicom_writer import write_dicom_series

SHAPE = (8, 8, 4)
REPO = Path(__file__).resolve().parents[1]


def _ct(value: float) -> Volume:
    array = np.full(SHAPE, -1000.0, dtype=np.float32)
    array[2:6, 2:6, :] = value
    return Volume(array, np.diag([2.0, 2.0, 3.0, 1.0]), "CT", "HU")


def _killed(script: str) -> None:
    """Run `script` in a child that imports like the tests; it must die of SIGKILL."""
    prelude = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        import numpy as np
        from medgan_tf import files
        from medgan_tf.data.io import Volume
        from medgan_tf.data.io.dicom_writer import write_dicom_series
        def ct(value):
            array = np.full((8, 8, 4), -1000.0, dtype=np.float32)
            array[2:6, 2:6, :] = value
            return Volume(array, np.diag([2.0, 2.0, 3.0, 1.0]), "CT", "HU")
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], env=env, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _center(folder: Path) -> float:
    return float(read_volume(folder).array[4, 4, 1])


def test_a_replacement_killed_between_its_two_renames_is_put_back_by_the_next_run(tmp_path):
    series = tmp_path / "series"
    write_dicom_series(_ct(100.0), series)
    _killed(f"""
        files.exchange = lambda first, second: False  # the two-rename path of file systems without an exchange
        renames = []
        real_rename = os.rename
        def rename(source, destination):
            renames.append(destination)
            if len(renames) == 2:
                die()  # the old series moved aside, the new one not yet in place
            real_rename(source, destination)
        os.rename = rename
        write_dicom_series(ct(500.0), Path({str(series)!r}))
    """)
    assert not series.exists() and [n.split("-")[0] for n in _hidden(tmp_path)] == [".series.old", ".series.writing"]

    done = files.recover_leftovers(tmp_path, ["series"])

    assert _center(series) == pytest.approx(100.0), "the earlier series is back"
    assert _hidden(tmp_path) == [] and len(done) == 2
    write_dicom_series(_ct(300.0), series)  # and the next replacement works as usual
    assert _center(series) == pytest.approx(300.0) and _hidden(tmp_path) == []


def test_a_write_killed_midway_leaves_the_earlier_series_and_the_next_write_removes_its_folder(tmp_path):
    series = tmp_path / "series"
    write_dicom_series(_ct(100.0), series)
    _killed(f"""
        import pydicom
        saved = []
        real_save = pydicom.Dataset.save_as
        def save_as(self, *args, **kwargs):
            saved.append(1)
            if len(saved) == 3:
                die()
            return real_save(self, *args, **kwargs)
        pydicom.Dataset.save_as = save_as
        write_dicom_series(ct(500.0), Path({str(series)!r}))
    """)
    assert _center(series) == pytest.approx(100.0)
    assert [n.split("-")[0] for n in _hidden(tmp_path)] == [".series.writing"]

    write_dicom_series(_ct(300.0), series)

    assert _center(series) == pytest.approx(300.0) and _hidden(tmp_path) == []


def test_work_folders_of_a_living_run_are_left_alone(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / f".series.writing-{sleeper.pid}-abc123"
        dead = tmp_path / f".series.writing-{_dead_pid()}-def456"
        busy.mkdir(), dead.mkdir()
        write_dicom_series(_ct(100.0), tmp_path / "series")
        assert busy.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_export_removes_the_half_written_versions_of_dead_exports(tmp_path):
    from medgan_tf.errors import UserError
    from medgan_tf.serving.export import export_generator

    from helpers import tiny_config  # noqa: E402

    out = tmp_path / "models"
    (out / "1").mkdir(parents=True)
    leftover = out / f".2.export-{_dead_pid()}-k1ll3d"
    (leftover / "variables").mkdir(parents=True)
    not_ours = out / ".notes"
    not_ours.mkdir()
    wrong_shape = types.SimpleNamespace(input_shape=(None, 1, 1, 1))

    with pytest.raises(UserError, match="the generator takes"):
        export_generator(wrong_shape, tiny_config(), out)

    assert sorted(p.name for p in out.iterdir()) == [".notes", "1"]
