"""The output folder of a conversion: one writer at a time, a private work folder per run, and a
publish step after which DIR holds either the old or the new complete dataset, never a mix.

Next to DIR, while a conversion runs:

    DIR.convert.lock                 held (flock) by the running converter; JSON {"pid", "host", "started"}
    DIR.partial-<pid>-<random>       that run's work folder, renamed to DIR once complete
    DIR.old-<pid>-<random>           the replaced dataset during --overwrite, deleted right after

(The lock is not `DIR.lock`: the built-in dataset cache holds that one around its own call of the
converter.) `exclusive_output(out)` takes the lock (a second run refuses with a UserError naming the holder; a
lock left by a dead process on this host is taken over with a log line) and cleans what dead runs
left: partial folders, and a replaced dataset that an interrupted --overwrite had moved aside
(restored when DIR is missing, deleted otherwise). `publish` swaps the new dataset in with one
atomic exchange of names where the filesystem supports it (renameat2 RENAME_EXCHANGE), else with
two renames whose gap the next run repairs. `write_failure` turns a full disk or a denied write
anywhere in the run into one message naming the path and what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Iterator

from medgan_tf import files
from medgan_tf.errors import UserError

LOCK_SUFFIX = ".convert.lock"
# Errors of the storage rather than of the data: reported as one line, not a traceback.
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the filesystem is read-only",
    errno.EIO: "an input/output error of the device",
}
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]")


class OutputWriteError(UserError):
    """The output could not be written (disk full, permission denied, ...); nothing was published."""


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + LOCK_SUFFIX)


@contextlib.contextmanager
def exclusive_output(out: Path) -> Iterator[Path]:
    """Hold the lock on `out` for the block, after cleaning what dead runs left; yields the lock path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _acquire(out)
    try:
        recover(out)
        yield lock_path(out)
    finally:
        _release(out, descriptor)


# --------------------------------------------------------------------------- the lock


def _acquire(out: Path) -> int:
    path, host, me = lock_path(out), socket.gethostname(), os.getpid()
    for _ in range(20):  # retried only when a finishing run removed the file we opened
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            state = _flock(descriptor)
            holder = _holder(descriptor)
            if state == "busy":
                raise _busy(out, path, holder)
            if not _same_file(path, descriptor):
                os.close(descriptor)
                continue
            if holder and holder.get("pid") != me:
                _check_stale(out, path, holder, host, flock_held=state == "held")
            record = {"pid": me, "host": host, "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
            return descriptor
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(descriptor)
            raise
    raise UserError(f"could not take the lock {path}: it keeps being replaced; is another conversion starting?")


def _flock(descriptor: int) -> str:
    """"held" (we hold the flock now), "busy" (another process does) or "unsupported" (a
    filesystem without flock, e.g. ENOLCK on some network mounts: the PID in the file must do)."""
    import fcntl

    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "busy"
    except OSError as error:
        logging.debug("flock unavailable (%s); relying on the PID in the lock file", error.strerror)
        return "unsupported"
    return "held"


def _holder(descriptor: int) -> dict:
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_file(path: Path, descriptor: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _busy(out: Path, path: Path, holder: dict) -> UserError:
    who = f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
    return UserError(f"another conversion ({who}) is writing {out} (lock {path}); wait for it to finish, "
                     "or choose another --out")


def _check_stale(out: Path, path: Path, holder: dict, host: str, flock_held: bool) -> None:
    """A lock file left by another process: taken over if that process ran on this host and is
    gone. With the flock held, a live PID in the file is a reused number, not a writer."""
    pid = holder.get("pid")
    if holder.get("host") != host:
        raise UserError(f"{path} names a conversion by PID {pid} on host {holder.get('host')!r}, which this host cannot "
                        f"check; if no conversion into {out} is running there, delete {path} and run again")
    if not flock_held and isinstance(pid, int) and files.is_alive(pid):
        raise _busy(out, path, holder)
    logging.warning("taking over the lock %s of PID %s, which ended without releasing it", path, pid)


def _release(out: Path, descriptor: int) -> None:
    path = lock_path(out)
    with contextlib.suppress(OSError):
        if _same_file(path, descriptor):
            path.unlink()
    os.close(descriptor)  # drops the flock


# --------------------------------------------------------------------------- leftovers


def _siblings(out: Path, kind: str) -> list[tuple[Path, int | None]]:
    """(path, pid) of `out`'s sibling work folders of `kind` ("partial" or "old")."""
    pattern = re.compile(re.escape(out.name) + rf"\.{kind}(?:-(\d+)-[0-9a-f]+)?$")
    found = []
    for path in out.parent.iterdir():
        match = pattern.match(path.name)
        if match and path.is_dir():
            found.append((path, int(match.group(1)) if match.group(1) else None))
    return sorted(found, key=lambda item: item[0].stat().st_mtime)


def recover(out: Path) -> None:
    """Clean up after dead runs (call with the lock held): restore a dataset that an interrupted
    --overwrite moved aside when DIR is missing, delete replaced datasets and partial folders."""
    olds = [path for path, _ in _siblings(out, "old")]
    if olds and not out.exists():
        restored = olds.pop()  # the newest
        os.rename(restored, out)
        logging.warning("restored %s from %s, which an interrupted --overwrite had moved aside", out, restored.name)
    for path in olds:
        logging.warning("removing %s, a dataset replaced by an earlier --overwrite", path)
        shutil.rmtree(path)
    for path, pid in _siblings(out, "partial"):
        if pid is not None and pid != os.getpid() and files.is_alive(pid):
            logging.warning("leaving %s in place: its PID %d is running (another host's run, or a reused "
                            "PID); delete it if no conversion into %s is running", path, pid, out)
            continue
        logging.warning("removing %s, left by an interrupted conversion", path)
        shutil.rmtree(path)


def new_work_dir(out: Path) -> Path:
    """A fresh work folder of this run next to `out` (same filesystem, so publishing is a rename)."""
    work_dir = out.with_name(f"{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    work_dir.mkdir()
    return work_dir


def discard(work_dir: Path) -> None:
    if work_dir.exists():
        shutil.rmtree(work_dir, ignore_errors=True)


# --------------------------------------------------------------------------- publishing


def publish(work_dir: Path, out: Path) -> None:
    """Make the complete `work_dir` the dataset at `out`, replacing a previous one so that at every
    instant `out` (or, between two renames, `out.old-*`) holds one complete dataset
    (`medgan_tf.files.publish_folder`; `recover` repairs the gap between two renames)."""
    aside = out.with_name(f"{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    files.publish_folder(work_dir, out, aside=aside)


# --------------------------------------------------------------------------- failures


def write_failure(error: BaseException, out: Path) -> OutputWriteError | None:
    """An OutputWriteError for `error` when it (or, from a Beam worker, its message) is a storage
    error such as ENOSPC or EACCES; None for anything else."""
    code = _storage_errno(error)
    if code is None:
        return None
    what = WRITE_ERRNOS[code]
    advice = {
        errno.ENOSPC: f"free space on the filesystem of {out.parent} or choose another --out",
        errno.EDQUOT: f"free space within your quota on {out.parent} or choose another --out",
        errno.EROFS: "choose an --out on a writable filesystem",
        errno.EIO: "check the device, then run again",
    }.get(code, f"make {out.parent} writable for this user or choose another --out")
    return OutputWriteError(f"could not write the dataset {out}: {what}; nothing was published and any previous "
                            f"dataset there is untouched; {advice}, then run again")


def _storage_errno(error: BaseException) -> int | None:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error.errno
        for match in _ERRNO_TEXT.finditer(str(error)):  # Beam re-raises worker errors as text
            if int(match.group(1)) in WRITE_ERRNOS:
                return int(match.group(1))
        error = error.__cause__ or error.__context__
    return None
