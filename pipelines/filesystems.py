"""Inputs and outputs of the converter through Beam's `FileSystems`: local paths as they are, any
other scheme Beam has a filesystem for (`gs://`, `s3://`, `azfs://`, `hdfs://`, ...) staged.

pydicom and nibabel read local files only, so an input on an object store (a NIfTI file, or a DICOM
series "folder", i.e. every object under that prefix) is copied to a worker-local temporary folder
for the time of one conversion and removed after it (`staged`). The pairs CSV likewise
(`staged_pairs_csv`). A non-local output folder is written in place (`RemoteOutput`): object stores
have no atomic rename of a folder, so completeness is marked by `manifest.json`, written last;
every reader refuses a dataset without one (`medgan_tf.data.manifest.read_manifest`), and
`--overwrite` deletes the old manifest before anything else, so a half-replaced dataset never
looks complete.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from medgan_tf.data.manifest import MANIFEST
from medgan_tf.data.pairs import PairRejected, read_pairs_csv
from medgan_tf.errors import UserError

COPY_CHUNK = 8 << 20


def is_local(path: str) -> bool:
    """True for a plain (or file://-less) local path; False for any other scheme."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.get_scheme(str(path)) in (None, "file")


def _copy_to_local(remote: str, local: Path) -> None:
    from apache_beam.io.filesystems import FileSystems

    local.parent.mkdir(parents=True, exist_ok=True)
    with FileSystems.open(remote, compression_type="uncompressed") as source, open(local, "wb") as target:
        shutil.copyfileobj(source, target, COPY_CHUNK)


def _files_under(path: str) -> tuple[str, list[str]]:
    """("file", [path]) when `path` is one object, else ("folder", every object under `path/`)."""
    from apache_beam.io.filesystems import FileSystems

    exact = FileSystems.match([path])[0].metadata_list
    if any(item.path.rstrip("/") == path.rstrip("/") for item in exact):
        return "file", [path]
    prefix = path.rstrip("/") + "/"
    listed = FileSystems.match([prefix + "**"])[0].metadata_list
    return "folder", sorted(item.path for item in listed if not item.path.endswith("/"))


@contextlib.contextmanager
def staged(path: str, side: str) -> Iterator[str]:
    """A local path holding the volume at `path`: `path` itself when local, else a temporary copy
    (file name kept, so `.nii.gz` still names the format; a folder copied with its sub-folders)
    removed on exit. PairRejected (reason without the path) when nothing is there or a copy fails."""
    if not path or is_local(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="medgan-stage-") as folder:
        try:
            kind, files = _files_under(path)
            name = posixpath.basename(path.rstrip("/")) or "volume"
            if kind == "file":
                _copy_to_local(path, Path(folder) / name)
            elif not files:
                raise PairRejected(f"{side}: path does not exist in the object store",
                                   f"{side}: {path} does not exist (no object at or under it)")
            prefix = path.rstrip("/") + "/"
            for remote in files if kind == "folder" else []:
                _copy_to_local(remote, Path(folder) / name / remote[len(prefix):])
        except PairRejected:
            raise
        except Exception as error:  # noqa: BLE001 — one pair, one line: the store's error type, not its text
            raise PairRejected(f"{side}: cannot copy from the object store ({type(error).__name__})",
                               f"{side}: cannot copy {path} ({type(error).__name__}: {error})") from None
        yield str(Path(folder) / name)


def read_pairs(path: str) -> list[dict[str, Any]]:
    """`read_pairs_csv` for a local CSV or one on an object store (its relative paths resolved
    against the CSV's folder there)."""
    if is_local(path):
        return read_pairs_csv(path)
    from apache_beam.io.filesystems import FileSystems

    with tempfile.TemporaryDirectory(prefix="medgan-pairs-") as folder:
        local = Path(folder) / "pairs.csv"
        try:
            _copy_to_local(path, local)
        except Exception as error:  # noqa: BLE001
            raise UserError(f"cannot read the pairs CSV {path} ({type(error).__name__}: {error}); expected a readable "
                            "CSV with header patient_id,source,target") from None
        return read_pairs_csv(local, base=FileSystems.split(path)[0])


class RemoteOutput:
    """A dataset folder on an object store, written in place: `prepare` refuses a complete
    dataset there without `overwrite` (with it, deletes its manifest first, then its shards), the
    pipeline writes the shards, `finish` writes manifest.json last. `discard` removes what an
    unfinished run wrote (never a complete dataset: it has a manifest only when finished)."""

    def __init__(self, out: str):
        self.out = out.rstrip("/")

    def join(self, *parts: str) -> str:
        return "/".join([self.out, *parts])

    def _existing(self) -> list[str]:
        from apache_beam.io.filesystems import FileSystems

        return [item.path for item in FileSystems.match([self.out + "/**"])[0].metadata_list]

    def prepare(self, overwrite: bool) -> None:
        from apache_beam.io.filesystems import FileSystems

        existing = self._existing()
        if existing and not overwrite:
            raise UserError(f"{self.out} exists and is not empty; pass --overwrite to replace it")
        manifest = self.join(MANIFEST)
        if manifest in existing:
            FileSystems.delete([manifest])  # from here on the old dataset reads as incomplete
        rest = [path for path in existing if path != manifest]
        if rest:
            FileSystems.delete(rest)

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        from apache_beam.io.filesystems import FileSystems

        items: list[dict[str, Any]] = []
        for item in sorted(FileSystems.match([self.join("_summaries", name + "*")])[0].metadata_list, key=lambda m: m.path):
            with FileSystems.open(item.path, compression_type="uncompressed") as handle:
                items += [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]
        return items

    def shard_names(self, split: str) -> list[str]:
        from apache_beam.io.filesystems import FileSystems

        found = FileSystems.match([self.join(split, "*.tfrecord.gz")])[0].metadata_list
        return sorted(posixpath.basename(item.path) for item in found)

    def drop_summaries(self) -> None:
        from apache_beam.io.filesystems import FileSystems

        found = [item.path for item in FileSystems.match([self.join("_summaries", "*")])[0].metadata_list]
        if found:
            FileSystems.delete(found)

    def finish(self, manifest: Mapping[str, Any]) -> None:
        """Write manifest.json, the mark of a complete dataset (one object written whole)."""
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(self.join(MANIFEST), mime_type="application/json") as handle:
            handle.write(json.dumps(manifest, indent=2, sort_keys=True).encode())

    def discard(self) -> None:
        from apache_beam.io.filesystems import FileSystems

        existing = self._existing()
        if existing and self.join(MANIFEST) not in existing:
            with contextlib.suppress(Exception):
                FileSystems.delete(existing)


@contextlib.contextmanager
def staged_row(row: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every volume of one pairs-CSV row staged locally (`staged`): {"source", "target", "mask"
    ("" when none), "extra_sources" (source_2, … of a multi-source CSV)}; copies removed on exit."""
    with contextlib.ExitStack() as stack:
        yield {
            "source": stack.enter_context(staged(row["source"], "source")),
            "target": stack.enter_context(staged(row["target"], "target")),
            "mask": stack.enter_context(staged(row.get("mask", ""), "mask")),
            "extra_sources": [stack.enter_context(staged(path, f"source_{index}"))
                              for index, path in enumerate(row.get("extra_sources", ()), start=2)],
        }


def exists(path: str) -> bool:
    """Whether a file, or any object under the "folder" `path`, exists (any scheme)."""
    if is_local(path):
        local = Path(path)
        return local.is_file() or (local.is_dir() and any(local.iterdir()))
    kind, found = _files_under(path)
    return kind == "file" or bool(found)


def write_bytes(path: str, data: bytes) -> None:
    """`data` as the file `path` (local, or on any scheme Beam writes), which appears whole or not
    at all: locally through `medgan_tf.files.atomic_file`, elsewhere as `upload` writes."""
    if is_local(path):
        from medgan_tf import files

        with files.atomic_file(path, suffix=posixpath.splitext(path)[1]) as temporary:
            temporary.write_bytes(data)
        return
    _write_remote(path, lambda target: target.write(data))


def upload(local: Path, remote: str) -> None:
    """Copy the local file `local` to `remote` (any scheme Beam writes) so that `remote` appears
    whole or not at all: written under a temporary name beside it, then renamed (an object store's
    rename is a server-side copy: readers never see a partly written object)."""

    def copy(target: Any) -> None:
        with open(local, "rb") as source:
            shutil.copyfileobj(source, target, COPY_CHUNK)

    _write_remote(remote, copy)


def _write_remote(remote: str, write: Any) -> None:
    """`write(handle)` into a temporary object beside `remote`, then renamed to `remote`."""
    import secrets

    from apache_beam.io.filesystems import FileSystems

    temporary = f"{remote}.partial-{secrets.token_hex(4)}"
    try:
        with FileSystems.create(temporary) as target:
            write(target)
        FileSystems.rename([temporary], [remote])
    except BaseException:
        with contextlib.suppress(Exception):
            FileSystems.delete([temporary])
        raise
