"""The converter on an object store through Beam's FileSystems, offline: `testfs://` (tests/objectstore.py)
acts like gs:// or s3:// (no folders, listing by prefix). Inputs (a NIfTI file and a DICOM series
"folder") are staged for the readers, the dataset is written in place with manifest.json last, and
the records are byte for byte the ones a local conversion of the same CSV writes."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import pytest
import tensorflow as tf

from medgan_tf.data import dataset as data
from medgan_tf.data import manifest as manifest_lib
from medgan_tf.data.io import read_volume
from medgan_tf.data.synthetic import write_synthetic_dataset
from medgan_tf.errors import UserError
from pipelines import convert, filesystems
from helpers import write_dicom_series  # noqa: E402  (tests/ is on sys.path)
from objectstore import ObjectStoreTestFileSystem  # noqa: E402

SIZE = 32


def _convert(pairs, out, *extra):
    return convert.run(["--pairs", str(pairs), "--task", "pet_ct", "--out", str(out), "--image-size", str(SIZE),
                        "--salt", "test-salt", "--num-shards", "2", "--test-fraction", "0.3", *extra])


def _raw_records(directory: Path) -> dict[str, list[bytes]]:
    return {split: sorted(bytes(r) for path in data.shard_files(directory, split)
                          for r in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
            for split in data.SPLITS}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """ROOT/in: 3 pet_ct patients, the first one's PET as a DICOM series folder; `testfs://` maps to ROOT."""
    root = tmp_path_factory.mktemp("store")
    previous = ObjectStoreTestFileSystem.root
    ObjectStoreTestFileSystem.root = root
    write_synthetic_dataset("pet_ct", root / "in", patients=3, seed=5, field_of_view_mm=48)
    first = sorted(p for p in (root / "in").iterdir() if p.is_dir())[0]
    pet = read_volume(first / "source.nii.gz")
    write_dicom_series(first / "pet-dicom" / "series", pet.array, pet.affine, modality="PT", slope=float(pet.array.max()) / 30000, intercept=0.0,
                       extra={"Units": "BQML"})
    with open(root / "in" / "pairs.csv") as handle:
        rows = list(csv.reader(handle))
    rows[1][1] = f"{first.name}/pet-dicom"  # a folder with a sub-folder: staged with its layout
    with open(root / "in" / "pairs.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    yield root
    ObjectStoreTestFileSystem.root = previous


def test_object_store_inputs_and_output_give_the_local_conversion_byte_for_byte(store):
    assert filesystems.is_local(str(store)) and not filesystems.is_local("testfs://in/pairs.csv")
    assert _convert(store / "in" / "pairs.csv", store / "local") == 0
    assert _convert("testfs://in/pairs.csv", "testfs://remote") == 0
    local, remote = manifest_lib.read_manifest(store / "local"), manifest_lib.read_manifest(store / "remote")
    assert remote["counts"] == local["counts"] and remote["volumes"] == local["volumes"]
    assert [v["source"]["format"] for v in remote["volumes"]].count("dicom") == 1  # the staged series folder
    assert {split: local["counts"][split]["patients"] for split in data.SPLITS} == {"train": 1, "val": 1, "test": 1}
    assert _raw_records(store / "remote") == _raw_records(store / "local")
    written = sorted(p.relative_to(store / "remote").as_posix() for p in (store / "remote").rglob("*") if p.is_file())
    shards = [f"{split}/{name}" for split in data.SPLITS for name in remote["counts"][split]["shards"]]
    assert written == sorted(shards + ["manifest.json"])  # no summaries, no Beam temporaries left behind
    assert not list(Path(tempfile.gettempdir()).glob("medgan-stage-*"))  # staged copies removed


def test_an_unfinished_object_store_dataset_has_no_manifest_and_is_refused(store, monkeypatch):
    def fail(self, manifest):
        raise OSError("the store went away")

    monkeypatch.setattr(filesystems.RemoteOutput, "finish", fail)
    with pytest.raises(OSError, match="went away"):
        _convert("testfs://in/pairs.csv", "testfs://broken")
    with pytest.raises(UserError, match="no manifest.json"):
        manifest_lib.read_manifest(store / "broken")
    assert not [p for p in (store / "broken").rglob("*") if p.is_file()]  # what it wrote is deleted


def test_overwrite_on_an_object_store_removes_the_manifest_first(store, monkeypatch):
    assert _convert("testfs://in/pairs.csv", "testfs://again") == 0
    with pytest.raises(UserError, match="--overwrite"):
        _convert("testfs://in/pairs.csv", "testfs://again")
    deleted = []
    original = ObjectStoreTestFileSystem.delete

    def record(self, paths):
        deleted.append(list(paths))
        return original(self, paths)

    monkeypatch.setattr(ObjectStoreTestFileSystem, "delete", record)
    assert _convert("testfs://in/pairs.csv", "testfs://again", "--overwrite") == 0
    assert deleted[0] == ["testfs://again/manifest.json"]  # from then on the old dataset reads as incomplete
    assert manifest_lib.read_manifest(store / "again")["converted_pairs"] == 3


def test_a_missing_object_store_input_rejects_only_its_pair(store, capsys):
    shutil.copy(store / "in" / "pairs.csv", store / "in" / "missing.csv")
    with open(store / "in" / "missing.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(("ghost", "nowhere/source.nii.gz", "nowhere/target.nii.gz"))
    assert _convert("testfs://in/missing.csv", "testfs://partial") == 0
    manifest = manifest_lib.read_manifest(store / "partial")
    assert [(r["row"], r["reason"]) for r in manifest["rejected"]] == [(5, "source: path does not exist in the object store")]
    assert "testfs://in/nowhere/source.nii.gz" in capsys.readouterr().err  # the path on the terminal only
