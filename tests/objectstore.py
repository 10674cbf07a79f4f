"""A Beam filesystem for tests: `testfs://` behaves like an object store (no folders, listing by
prefix, no rename of a folder) kept in a local folder, so the converter's non-local paths (staging
inputs, writing outputs in place, manifest last) run offline. Importing this module registers the
scheme with Beam's `FileSystems` in this process (the DirectRunner's in-memory workers and the
PortableRunner's LOOPBACK workers run here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "testfs"
PREFIX = SCHEME + "://"


class ObjectStoreTestFileSystem(FileSystem):
    """`testfs://KEY` is the file ROOT/KEY, ROOT being `ObjectStoreTestFileSystem.root`."""

    root: Path | None = None

    def __init__(self, pipeline_options=None):
        super().__init__(pipeline_options)
        self._local = LocalFileSystem(pipeline_options)

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    # ---- paths
    def _to_local(self, path: str) -> str:
        if not path.startswith(PREFIX) or self.root is None:
            raise ValueError(f"not a {PREFIX} path, or no root set: {path}")
        return str(self.root / path[len(PREFIX):])

    def _to_remote(self, local: str) -> str:
        return PREFIX + Path(local).relative_to(self.root).as_posix()

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def has_dirs(self):
        return False

    def mkdirs(self, path):
        pass  # an object store has no folders

    # ---- listing: every object whose key starts with the prefix
    def _list(self, dir_or_prefix):
        local = self._to_local(dir_or_prefix)
        top = local if os.path.isdir(local) and dir_or_prefix.endswith("/") else os.path.dirname(local)
        for dirpath, _, files in os.walk(top):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                if path.startswith(local):
                    stat = os.stat(path)
                    yield FileMetadata(self._to_remote(path), stat.st_size, stat.st_mtime)

    # ---- objects
    def create(self, path, mime_type="application/octet-stream", compression_type="auto"):
        local = self._to_local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return self._local.create(local, mime_type, compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type="auto"):
        return self._local.open(self._to_local(path), mime_type, compression_type)

    def copy(self, source_file_names, destination_file_names):
        for destination in destination_file_names:
            os.makedirs(os.path.dirname(self._to_local(destination)), exist_ok=True)
        self._local.copy([self._to_local(p) for p in source_file_names], [self._to_local(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        for destination in destination_file_names:
            os.makedirs(os.path.dirname(self._to_local(destination)), exist_ok=True)
        self._local.rename([self._to_local(p) for p in source_file_names], [self._to_local(p) for p in destination_file_names])

    def exists(self, path):
        return os.path.isfile(self._to_local(path))

    def size(self, path):
        return self._local.size(self._to_local(path))

    def last_updated(self, path):
        return self._local.last_updated(self._to_local(path))

    def checksum(self, path):
        return self._local.checksum(self._to_local(path))

    def metadata(self, path):
        local = self._to_local(path)
        stat = os.stat(local)
        return FileMetadata(path, stat.st_size, stat.st_mtime)

    def delete(self, paths):
        for path in paths:  # a "folder" is every object under the prefix; a missing key is no error
            local = self._to_local(path)
            if os.path.isdir(local):
                shutil.rmtree(local)
            elif os.path.exists(local):
                os.remove(local)

    def report_lineage(self, path, lineage):
        pass
