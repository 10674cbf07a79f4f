"""The converter under faults a user meets: two runs on one output, leftovers of killed runs, an
--overwrite killed half-way, a full disk or a denied write, patient names in file and folder
names, and SIGKILL of a multi-process run (its Beam workers must not outlive it)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import files
from medgan_tf.cli import main as cli_main
from medgan_tf.data import manifest as manifest_lib
from medgan_tf.data.io import Volume, read_volume, write_nifti
from medgan_tf.data.synthetic import write_synthetic_dataset
from medgan_tf.errors import UserError
from pipelines import convert, output
from helpers import assert_no_secret_bytes, write_dicom_series  # noqa: E402  (tests/ is on sys.path)

SIZE = 32
REPO = Path(__file__).resolve().parents[1]
SALT = "test-salt-0123456789"


def _argv(pairs, out, *extra):
    return ["--pairs", str(pairs), "--task", "pet_denoise", "--out", str(out), "--image-size", str(SIZE),
            "--salt", SALT, "--num-shards", "2", *extra]


def _convert(pairs, out, *extra):
    return convert.run(_argv(pairs, out, *extra))


def _subprocess_env(**extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    """Everything next to `out` that belongs to a conversion of it (lock, partial or old folders)."""
    return sorted(p.name for p in out.parent.glob(out.name + ".*"))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _consistent(out: Path) -> dict:
    """The manifest of `out`, checked against its records: one run's records and manifest."""
    from medgan_tf.data import dataset

    manifest = manifest_lib.read_manifest(out)
    for split in ("train", "val"):
        records = list(dataset.iterate_records(out, split))
        assert len(records) == manifest["counts"][split]["slices"]
        assert {r["patient_key"] for r in records} == {v["patient_key"] for v in manifest["volumes"] if v["split"] == split}
    return manifest


@pytest.fixture(scope="module")
def two_patients(tmp_path_factory):
    return write_synthetic_dataset("pet_denoise", tmp_path_factory.mktemp("two"), patients=2, seed=0, field_of_view_mm=SIZE * 2.8)


@pytest.fixture(scope="module")
def three_patients(tmp_path_factory):
    return write_synthetic_dataset("pet_denoise", tmp_path_factory.mktemp("three"), patients=3, seed=1, field_of_view_mm=SIZE * 2.8)


# --------------------------------------------------------------------------- one writer per output


def test_a_second_run_is_refused_while_another_holds_the_output_then_a_dead_holder_is_taken_over(tmp_path, two_patients, caplog):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from pipelines import output\n"
         f"with output.exclusive_output(Path({str(out)!r})):\n    print('held', flush=True); sys.stdin.read()"],
        cwd=REPO, env=_subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"another conversion \(PID {holder.pid} on {socket.gethostname()}\)"):
            _convert(two_patients, out)
        assert not out.exists() and _leftovers(out) == ["out.convert.lock"]  # no partial folder was made
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind with a dead PID
        holder.wait()
    caplog.set_level(logging.WARNING)
    assert _convert(two_patients, out) == 0
    assert f"taking over the lock {out}.convert.lock of PID {holder.pid}" in caplog.text
    assert _leftovers(out) == [] and _consistent(out)["converted_pairs"] == 2


def test_two_runs_started_together_never_mix_their_outputs(tmp_path, two_patients, three_patients):
    out = tmp_path / "out"
    runs = [subprocess.Popen([sys.executable, "-m", "pipelines.convert", *_argv(csv_path, out, "--overwrite")], cwd=REPO,
                             env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for csv_path in (two_patients, three_patients)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    statuses = sorted(status for status, _ in results)
    # Either the second run found the lock taken (status 2, naming the holder), or it started
    # after the first had finished; never a mix of one run's records and the other's manifest.
    assert statuses in ([0, 2], [0, 0]), results
    for status, stderr in results:
        if status == 2:
            assert "another conversion (PID" in stderr and "Traceback" not in stderr
    assert _consistent(out)["converted_pairs"] in (2, 3)
    assert _leftovers(out) == []


def test_leftovers_of_dead_runs_are_removed_and_a_lock_from_another_host_is_refused(tmp_path, two_patients, caplog):
    out = tmp_path / "out"
    dead = _dead_pid()
    for name in (f"out.partial-{dead}-0123abcd", "out.partial"):
        (tmp_path / name / "train").mkdir(parents=True)
        (tmp_path / name / "train" / "data-00000-of-00001.tfrecord.gz").write_bytes(b"half a shard")
    (tmp_path / "out.convert.lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    caplog.set_level(logging.WARNING)
    assert _convert(two_patients, out) == 0
    assert _leftovers(out) == [] and _consistent(out)
    assert f"out.partial-{dead}-0123abcd, left by an interrupted conversion" in caplog.text

    (tmp_path / "out.convert.lock").write_text(json.dumps({"pid": 4242, "host": "another-host.example"}))
    with pytest.raises(UserError, match=r"PID 4242 on host 'another-host.example'.*delete .*out.convert.lock"):
        _convert(two_patients, out, "--overwrite")


# --------------------------------------------------------------------------- --overwrite swaps


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_overwrite_replaces_the_dataset_and_leaves_nothing_beside_it(tmp_path, two_patients, three_patients, monkeypatch, exchange):
    out = tmp_path / "out"
    assert _convert(two_patients, out) == 0
    if not exchange:
        monkeypatch.setattr(files, "exchange", lambda first, second: False)
    assert _convert(three_patients, out, "--overwrite") == 0
    assert _consistent(out)["converted_pairs"] == 3 and _leftovers(out) == []


_KILL_DURING_SWAP = """
import os, shutil, sys
from medgan_tf import files
from pipelines import convert, output
files.exchange = lambda first, second: False  # the two-rename path, whose gap we die in
real_rename, real_rmtree = os.rename, shutil.rmtree
def rename(source, target):
    real_rename(source, target)
    if {where!r} == "between-renames" and ".old-" in str(target):
        os._exit(9)  # like SIGKILL: no cleanup runs
def rmtree(path, *args, **kwargs):
    if {where!r} == "before-delete" and ".old-" in str(path):
        os._exit(9)
    real_rmtree(path, *args, **kwargs)
output.os.rename, output.shutil.rmtree = rename, rmtree
sys.exit(convert.run({argv!r}))
"""


@pytest.mark.parametrize("where", ["between-renames", "before-delete"])
def test_overwrite_killed_at_any_point_leaves_one_complete_dataset_that_the_next_run_keeps(tmp_path, two_patients, three_patients, where):
    out = tmp_path / "out"
    assert _convert(two_patients, out) == 0
    old = _snapshot(out)
    script = _KILL_DURING_SWAP.format(where=where, argv=_argv(three_patients, out, "--overwrite"))
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr[-2000:]
    # One complete dataset exists: the new one at DIR, or (between the renames) the old one moved aside.
    if where == "between-renames":
        assert not out.exists()
        (moved,) = tmp_path.glob("out.old-*")
        assert _snapshot(moved) == old
    else:
        assert _consistent(out)["converted_pairs"] == 3
    # The next run repairs: the old dataset back in place (the killed run never reported success),
    # or the replaced one deleted; no partial folder, no lock.
    with pytest.raises(UserError, match="--overwrite"):
        _convert(two_patients, out)
    assert _leftovers(out) == []
    if where == "between-renames":
        assert _snapshot(out) == old
    else:
        assert _consistent(out)["converted_pairs"] == 3


# --------------------------------------------------------------------------- clean failures


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/data-00000-of-00002.tfrecord.gz")


def _denied(*_args, **_kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/volumes-00000-of-00001.jsonl")


@pytest.mark.parametrize(
    "target, fault, expected",
    [
        ("pipelines.convert.write_manifest", _no_space, "no space left on the device"),  # the driver's last write
        ("apache_beam.io.tfrecordio._TFRecordUtil.write_record", _no_space, "no space left on the device"),  # inside Beam
        ("apache_beam.io.filesystems.FileSystems.create", _denied, "permission denied"),  # opening a shard
    ],
    ids=["manifest-enospc", "shard-enospc", "open-eacces"],
)
def test_a_failed_write_is_one_message_and_the_previous_dataset_is_untouched(tmp_path, two_patients, three_patients, monkeypatch,
                                                                            capsys, target, fault, expected):
    out = tmp_path / "out"
    assert _convert(two_patients, out) == 0
    before = _snapshot(out)
    capsys.readouterr()
    monkeypatch.setattr(target, fault)
    status = cli_main(["convert", *_argv(three_patients, out, "--overwrite"), "--direct_running_mode=in_memory"])
    stderr = capsys.readouterr().err
    assert status == 2
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert str(out) in line and expected in line and "run again" in line and "untouched" in line
    assert "Traceback" not in stderr
    assert _snapshot(out) == before and _leftovers(out) == []


def test_storage_errors_reported_by_beam_workers_as_text_are_recognised(tmp_path):
    from_worker = RuntimeError("Traceback (most recent call last):\n  ...\nOSError: [Errno 28] No space left on device: '/x'")
    assert "no space left" in str(output.write_failure(from_worker, tmp_path / "out"))
    assert output.write_failure(RuntimeError("ValueError: [Errno 2] something else"), tmp_path / "out") is None
    assert output.write_failure(ValueError("a bug"), tmp_path / "out") is None


# --------------------------------------------------------------------------- no identity in artefacts

NAMES = ("DOE^JANE", "Jane_Doe")


def _named_pairs(root: Path, pairs_csv: Path) -> tuple[Path, int]:
    """A CSV whose good and bad pairs carry the patient's name in folder and file names (and as patient_id)."""
    rows = [line.split(",") for line in pairs_csv.read_text().splitlines()[1:]]
    low, full = (pairs_csv.parent / rows[0][1], pairs_csv.parent / rows[0][2])
    folder = root / "DOE^JANE" / "Jane_Doe_study"
    folder.mkdir(parents=True)
    good_low, good_full = folder / "Jane_Doe_low.nii.gz", folder / "DOE^JANE_full.nii.gz"
    shutil.copy(low, good_low)
    shutil.copy(full, good_full)
    volume = read_volume(full)
    series = {}
    for side, source in (("low", low), ("full", full)):
        array = read_volume(source).array
        slope = max(1.0, float(array.max()) / 30000.0)
        series[side] = write_dicom_series(root / "Jane_Doe" / f"DOE^JANE_{side}", np.round(array / slope) * slope, volume.affine,
                                          modality="PT", slope=slope, intercept=0.0, extra={"Units": "BQML"})
        for file in sorted(series[side].iterdir()):
            file.rename(file.with_name(f"Jane_Doe_{file.name}"))
    truncated = shutil.copytree(series["full"], root / "DOE^JANE_truncated")
    victim = sorted(truncated.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])
    junk = folder / "DOE^JANE_junk.nii.gz"
    junk.write_bytes(b"not a NIfTI at all")
    singular = volume.affine.copy()
    singular[:3, 2] = 0.0
    singular_path = write_nifti(Volume(volume.array, np.eye(4), "PT", "Bq/ml"), folder / "Jane_Doe_singular.nii.gz")
    _set_sform(singular_path, singular)
    lines = [
        f"DOE^JANE,{good_low},{good_full}",
        f"Jane_Doe,{series['low']},{series['full']}",
        f"Jane_Doe_2,{good_low},{truncated}",
        f"DOE^JANE_3,{junk},{good_full}",
        f"DOE^JANE_4,{folder / 'Jane_Doe_missing.nii.gz'},{good_full}",
        f"Jane_Doe_5,{good_low},{singular_path}",
        f"Jane_Doe_6,{folder},{good_full}",  # a folder of NIfTI files read as a DICOM series
    ]
    csv_path = root / "named.csv"
    csv_path.write_text("patient_id,source,target\n" + "\n".join(lines) + "\n")
    return csv_path, 5


def _set_sform(path: Path, affine: np.ndarray) -> None:
    import nibabel as nib

    image = nib.load(str(path))
    header = image.header.copy()
    header.set_sform(affine, code=1)
    header["qform_code"] = 0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, header), str(path))


def test_patient_names_in_file_and_folder_names_reach_no_byte_of_the_output(tmp_path, two_patients, capsys):
    csv_path, bad = _named_pairs(tmp_path / "in", two_patients)
    out = tmp_path / "out"
    assert _convert(csv_path, out) == 0
    manifest = _consistent(out)
    assert manifest["converted_pairs"] == 2 and manifest["rejected_pairs"] == bad
    reasons = {item["row"]: item["reason"] for item in manifest["rejected"]}
    assert set(reasons) == {4, 5, 6, 7, 8}
    assert reasons[4].startswith("target: ") and ("truncated or corrupt pixel data" in reasons[4] or "unreadable DICOM" in reasons[4])
    assert reasons[5].startswith("source: not a readable NIfTI file (")
    assert reasons[6] == "source: path does not exist"
    assert reasons[7].startswith("target: singular voxel-to-world affine")
    assert reasons[8].startswith("source: ")
    assert not any("withheld" in reason for reason in reasons.values())  # clean by construction
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 3
    assert_no_secret_bytes(files, NAMES, ignore_case=True)
    # The user's own terminal still shows where each rejected pair lives.
    stderr = capsys.readouterr().err
    assert "DOE^JANE_junk.nii.gz" in stderr and "Jane_Doe_singular.nii.gz" in stderr


def test_a_reason_from_an_unexpected_error_keeps_its_type_but_not_its_message(monkeypatch):
    from medgan_tf.config import to_dict
    from medgan_tf.tasks import TASKS

    def explode(source, *_args, **_kwargs):
        raise ValueError(f"cannot parse {source}")

    monkeypatch.setattr(convert, "convert_pair", explode)
    step = convert.ConvertPairFn(to_dict(TASKS.get("pet_denoise").data), b"salt")
    step.setup()
    (tagged,) = list(step.process({"row": 7, "patient_id": "p", "source": "/data/DOE^JANE/a.nii", "target": "/b.nii"}))
    item = json.loads(tagged.value)
    assert item["row"] == 7 and item["reason"] == "unexpected ValueError"
    assert "DOE^JANE" in item["detail"]  # for stderr only; the driver drops it from the manifest
    row = {"source": "/data/DOE^JANE/a.nii", "target": "/b.nii", "patient_id": "p"}
    # The driver's last line of defence: a reason quoting the path or the file name is withheld.
    assert "withheld" in convert._identity_free("source: cannot read /data/DOE^JANE/a.nii", row)
    assert "withheld" in convert._identity_free("source: a.nii is odd", {**row, "source": "/x/a.nii"})
    assert convert._identity_free("source: path does not exist", row) == "source: path does not exist"


# --------------------------------------------------------------------------- workers die with their parent


def _processes_with(marker: str) -> dict[int, str]:
    """PID → command line of live (non-zombie) processes whose environment holds `marker`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state not in ("Z", "X"):
            found[int(entry.name)] = command
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_sigkill_of_the_converter_leaves_no_worker_process(tmp_path):
    pairs_csv = write_synthetic_dataset("pet_denoise", tmp_path / "volumes", patients=6, seed=2, field_of_view_mm=64 * 2.8)
    marker = f"MEDGAN_TF_TEST_MARKER={uuid.uuid4().hex}"
    name, value = marker.split("=")
    converter = subprocess.Popen(
        [sys.executable, "-m", "pipelines.convert", "--pairs", str(pairs_csv), "--task", "pet_denoise", "--out", str(tmp_path / "out"),
         "--image-size", "64", "--salt", SALT, "--num-workers", "2"],
        cwd=REPO, env=_subprocess_env(**{name: value}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        workers = {}
        while len(workers) < 2 and time.monotonic() < deadline and converter.poll() is None:
            workers = {pid: cmd for pid, cmd in _processes_with(marker).items() if pid != converter.pid}
            time.sleep(0.05)
        assert len(workers) >= 2 and converter.poll() is None, f"no worker processes seen: {workers}"
        assert all("pipelines/worker.py --watch-pid" in command for command in workers.values()), workers
        time.sleep(0.5)  # let them start on their work
        assert converter.poll() is None, "the conversion ended before it could be killed; give it more data"
        converter.send_signal(signal.SIGKILL)
        converter.wait()
        deadline = time.monotonic() + 10
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_with(marker) == {}
    finally:
        converter.kill()
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)
    assert not (tmp_path / "out").exists()  # and the next run removes the partial folder and the lock
    assert _leftovers(tmp_path / "out") != []


@pytest.fixture
def small_filesystem(tmp_path):
    """A 3 MB tmpfs at tmp_path/disk (root only; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("workers", [[], ["--num-workers", "2"]], ids=["in-process", "two-workers"])
def test_a_full_disk_is_one_message_for_the_user_and_the_previous_dataset_is_untouched(small_filesystem, two_patients,
                                                                                    three_patients, workers):
    out = small_filesystem / "out"
    assert _convert(two_patients, out) == 0
    before = _snapshot(out)
    free = shutil.disk_usage(small_filesystem).free
    (small_filesystem / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))  # leave 16 kB
    command = [sys.executable, "-c", "import sys; from medgan_tf.cli import main; sys.exit(main())", "convert"]
    run = subprocess.run([*command, *_argv(three_patients, out, "--overwrite", *workers)],
                         cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert f"could not write the dataset {out}: no space left on the device" in line and "free space" in line
    assert _snapshot(out) == before and _leftovers(out) == []
