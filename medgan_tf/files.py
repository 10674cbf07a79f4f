"""Files and folders that appear complete or not at all.

Every output of medgan-tf that someone may read while it is being written (reports, figures,
run state, manifests, NIfTI and DICOM outputs, exports, converted datasets) is written under a
temporary name in its destination's folder and renamed into place when complete: a reader, a
crash or a full disk never leaves half a file under the real name, and an earlier version stays
valid until the new one replaces it. The temporary names start with a dot and name the
destination, so a leftover is recognizable; work folders also name the process that owns them
(`.NAME.KIND-<pid>-<random>`), so that the next run removes those of a dead process, and puts
back an earlier folder a killed replacement had moved aside (`recover_leftovers`).

Temporary files are made by `tempfile`, which creates them readable by their owner only; a
published file or folder gets the permissions a plain `open()` / `mkdir()` would have given it
(0666 / 0777 less the umask), so another account (a PACS sender, a web server) can read it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>writing|export|old)-(?P<pid>\d+)-[^.]+$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, folder: bool) -> None:
    """Give `path` the mode `open()` (files) or `mkdir()` (folders) would have given it."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends normally it is renamed to `path`
    (replacing an earlier file in one step), when it raises it is removed.

    `suffix` is kept at the end of the temporary name for writers that choose a format by name
    (".nii.gz", ".png"). The folder of `path` is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        _as_if_created(temporary, folder=False)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through `atomic_file`."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, **dump_options: Any) -> Path:
    """`payload` as JSON (with `json.dumps` options, e.g. indent, sort_keys) and a final newline,
    through `atomic_file`."""
    return write_text_atomic(path, json.dumps(payload, **dump_options) + "\n")


def new_folder(path: str | os.PathLike, kind: str) -> Path:
    """A fresh work folder beside `path` (same file system, so publishing is a rename), hidden and
    named after it and this process: `.NAME.KIND-<pid>-<random>`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{kind}-{os.getpid()}-"))


def is_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine and is not a zombie (one of another user
    counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def recover_leftovers(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[str]:
    """Clean up after killed writers in `folder` (only for destinations in `names`, default all):
    a work folder (`.NAME.writing-…`, `.NAME.export-…`) of a dead process is removed; an earlier
    folder a dead replacement had moved aside (`.NAME.old-…`) is put back when NAME is missing,
    else removed. Folders of living processes are left alone. Returns what was done, one line each
    (also logged)."""
    folder = Path(folder)
    wanted = None if names is None else set(names)
    done = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = LEFTOVER.match(entry.name)
        if not match or not entry.is_dir() or (wanted is not None and match["name"] not in wanted):
            continue
        if int(match["pid"]) == os.getpid() or is_alive(int(match["pid"])):
            continue
        destination = folder / match["name"]
        if match["kind"] == "old" and not destination.exists():
            os.rename(entry, destination)
            done.append(f"put back {destination}, which a killed run had moved aside to {entry.name}")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry}, left by a killed run (process {match['pid']})")
    for line in done:
        log.warning("%s", line)
    return done


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = True, kind: str = "writing") -> Iterator[Path]:
    """Yield a fresh work folder beside `path`; when the block ends normally it becomes `path`
    (`publish_folder`), when it raises it is removed. With `replace=False` an existing `path` is
    an error (FileExistsError) and is left untouched."""
    work = new_folder(path, kind)
    try:
        yield work
        publish_folder(work, Path(path), replace=replace)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def publish_folder(work: Path, path: Path, *, replace: bool = True, aside: Path | None = None) -> None:
    """Make the complete folder `work` the folder `path`.

    Onto nothing (or an empty folder) it is one rename. An existing `path` is, with `replace`,
    swapped with `work` in one atomic step where the kernel can (Linux renameat2), else moved
    aside to `aside` (default `.NAME.old-<pid>-<random>` beside it), replaced and then deleted,
    with the old one put back if the second rename fails; without `replace` it is an error.
    """
    work, path = Path(work), Path(path)
    _as_if_created(work, folder=True)
    if not path.exists() or (replace and path.is_dir() and not any(path.iterdir())):
        os.replace(work, path) if path.exists() else os.rename(work, path)
        return
    if not replace:
        raise FileExistsError(f"{path} already exists")
    if exchange(work, path):  # `path` is new, `work` holds the old folder
        shutil.rmtree(work)
        return
    old = aside or path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(path, old)
    try:
        os.rename(work, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))
