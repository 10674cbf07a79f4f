"""Patient folds of a converted dataset's training split (`medgan-tf train --folds K`).

The training split's patients are dealt into K folds (sorted by their pseudonymous key, then
round-robin: deterministic, sizes differ by at most one). Fold k's dataset is a converted dataset of
its own, written beside the runs: its `train` split holds the records of every other fold, its
`val` split the records of fold k's patients (they are held out, so validation and checkpoint
selection see patients the fold never trained on). The parent's own val and test splits are left
out. The records are copied byte for byte; the manifest is the parent's with the splits
re-counted and a "fold" entry naming the parent and the held-out patients.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

from medgan_tf import files
from medgan_tf.data.manifest import SPLITS, read_manifest, write_manifest
from medgan_tf.errors import UserError

SHARD = "data-00000-of-00001.tfrecord.gz"


def training_patients(data_dir: str | Path) -> list[str]:
    """The patient keys of `data_dir`'s training split, sorted (from its manifest's volumes)."""
    manifest = read_manifest(data_dir)
    return sorted({volume["patient_key"] for volume in manifest.get("volumes", []) if volume.get("split") == "train"})


def assign_folds(patients: Sequence[str], count: int) -> list[list[str]]:
    """`patients` dealt into `count` folds (sorted, round-robin). UserError for fewer than 2 folds
    or more folds than patients (a fold would hold nobody out)."""
    if count < 2:
        raise UserError(f"--folds must be at least 2; received {count}")
    ordered = sorted(patients)
    if count > len(ordered):
        raise UserError(f"--folds {count}: the training split has only {len(ordered)} patient(s); each fold needs "
                        "at least one held-out patient")
    return [ordered[index::count] for index in range(count)]


def write_fold_dataset(data_dir: str | Path, out_dir: str | Path, held_out: Sequence[str], fold: int,
                       count: int) -> Path:
    """Fold `fold` (1-based) of `count` of `data_dir` as the dataset `out_dir` (see the module doc),
    written atomically: a folder with a manifest is complete. Returns `out_dir`."""
    import tensorflow as tf

    from medgan_tf.data.dataset import _serialized_records
    from medgan_tf.data.schema import parse_example_numpy

    held = set(held_out)
    manifest = read_manifest(data_dir)
    out_dir = Path(out_dir)
    with files.atomic_folder(out_dir, kind="fold") as work:
        counts = {"train": 0, "val": 0}
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        (work / "train").mkdir()
        (work / "val").mkdir()
        with tf.io.TFRecordWriter(str(work / "train" / SHARD), options) as train, \
                tf.io.TFRecordWriter(str(work / "val" / SHARD), options) as val:
            for serialized in _serialized_records(data_dir, "train"):
                split = "val" if parse_example_numpy(serialized)["patient_key"] in held else "train"
                (val if split == "val" else train).write(serialized)
                counts[split] += 1
        write_manifest(work, fold_manifest(manifest, held, counts, data_dir, fold, count))
    return out_dir


def fold_manifest(manifest: dict[str, Any], held: set[str], slices: dict[str, int], data_dir: str | Path,
                  fold: int, count: int) -> dict[str, Any]:
    """The parent `manifest` re-split for one fold: its training volumes, held-out ones as val."""
    result = copy.deepcopy(manifest)
    volumes = [dict(volume, split="val" if volume["patient_key"] in held else "train")
               for volume in manifest.get("volumes", []) if volume.get("split") == "train"]
    result["volumes"] = volumes
    result["counts"] = {}
    for split in SPLITS:
        in_split = [volume for volume in volumes if volume["split"] == split]
        result["counts"][split] = {
            "patients": len({volume["patient_key"] for volume in in_split}),
            "pairs": len(in_split),
            "slices": slices.get(split, 0),
            "shards": [SHARD] if split in slices else [],
        }
    result["converted_pairs"] = len(volumes)
    result["fold"] = {"fold": fold, "folds": count, "parent": str(Path(data_dir).resolve()),
                      "held_out_patients": sorted(held)}
    return result
