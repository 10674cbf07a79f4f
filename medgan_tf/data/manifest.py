"""`manifest.json` of a converted dataset: what it holds, written last, checked by every reader.

A converted dataset directory:

    DIR/manifest.json                              written last: its presence means complete
    DIR/train/data-SSSSS-of-NNNNN.tfrecord.gz      records, schema in `medgan_tf.data.schema`
    DIR/val/data-SSSSS-of-NNNNN.tfrecord.gz
    DIR/test/data-SSSSS-of-NNNNN.tfrecord.gz     when a test split was asked for

The manifest holds the task, the grid (image size, spacing), the data config, counts per split,
every converted volume's summary (pseudonymous key, normalization parameters, split) and every
rejected pair with its reason. This module owns writing it, reading it and the one compatibility
check (task, slice size, a non-empty split) that training, evaluation and the paper comparison use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from medgan_tf import files
from medgan_tf.config import DataConfig, from_dict, to_dict
from medgan_tf.data import pseudonyms
from medgan_tf.data.pairs import SPLIT_RULE, SPLITS
from medgan_tf.data.schema import SCHEMA_VERSION
from medgan_tf.errors import UserError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
FORMAT = "medgan-tf tfrecords"


def build_manifest(
    task: str,
    data_config: DataConfig,
    volumes: Sequence[Mapping[str, Any]],
    rejected: Sequence[Mapping[str, Any]],
    shards: Mapping[str, Sequence[str]],
    salt_source: str,
    seconds: float,
) -> dict[str, Any]:
    """The manifest of a conversion. `volumes` carry their "split"; `shards` maps a split to its
    shard file names."""
    counts = {}
    for split in SPLITS:
        in_split = [v for v in volumes if v["split"] == split]
        counts[split] = {
            "patients": len({v["patient_key"] for v in in_split}),
            "pairs": len(in_split),
            "slices": sum(v["slices"] for v in in_split),
            "shards": sorted(shards.get(split, [])),
        }
    pet_units = sorted({side["unit"] for v in volumes for side in (v["source"], v["target"]) if side["modality"] == "PT"})
    return {
        "format": FORMAT,
        "manifest_version": MANIFEST_VERSION,
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "image_size": data_config.image_size,
        "spacing_mm": list(data_config.spacing_mm),
        "config": to_dict(data_config),
        "counts": counts,
        "converted_pairs": len(volumes),
        "rejected_pairs": len(rejected),
        "masked_pairs": sum(1 for v in volumes if "mask" in v),
        "pet_unit": pet_units[0] if len(pet_units) == 1 else (pet_units or None),
        "volumes": list(volumes),
        "rejected": list(rejected),
        # No salt fingerprint on purpose: it would let anyone test guesses of a weak salt.
        "pseudonym": {"method": pseudonyms.METHOD, "salt_source": salt_source},
        "split": SPLIT_RULE,
        "compression": "GZIP",
        "seconds": round(seconds, 2),
    }


def write_manifest(data_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write DIR/manifest.json through a temporary file and a rename (never half a file)."""
    path = Path(data_dir) / MANIFEST
    with files.atomic_file(path) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return path


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a converted dataset; a clear error when DIR is not one (or incomplete)."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{data_dir} is not a converted dataset (no {MANIFEST}); expected the output of "
            "`medgan-tf convert` (an interrupted conversion leaves no manifest)"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"{path} is not valid JSON ({error}); convert the data again") from error


def split_slices(manifest: Mapping[str, Any]) -> dict[str, int]:
    """{split: number of slices} from the manifest's counts (0 for a split it does not list)."""
    counts = manifest.get("counts", {})
    return {split: int(counts.get(split, {}).get("slices", 0)) for split in SPLITS}


def manifest_task(manifest: Mapping[str, Any]) -> str | None:
    task = manifest.get("task")
    if task is None and isinstance(manifest.get("config"), Mapping):
        task = manifest["config"].get("task")
    return task if isinstance(task, str) else None


def manifest_data_config(manifest: Mapping[str, Any]) -> DataConfig | None:
    """The data config (modalities, grid, normalizations) the dataset was converted with; None
    when the manifest does not hold a readable one."""
    config = manifest.get("config")
    if not isinstance(config, Mapping):
        return None
    try:
        return from_dict(DataConfig, config)
    except (TypeError, ValueError):
        return None


def manifest_image_size(manifest: Mapping[str, Any]) -> int | None:
    size = manifest.get("image_size") or manifest.get("config", {}).get("image_size")
    return int(size) if size is not None else None


def manifest_spacing(manifest: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """The model-grid voxel size (mm) the dataset was converted at; None when not recorded."""
    spacing = manifest.get("spacing_mm") or manifest.get("config", {}).get("spacing_mm")
    if not isinstance(spacing, (list, tuple)) or len(spacing) != 3:
        return None
    return tuple(float(v) for v in spacing)  # type: ignore[return-value]


def check_compatible(
    data_dir: str | Path,
    *,
    task: str | None = None,
    image_size: int | None = None,
    split: str | None = None,
    who: str = "the run",
) -> dict[str, Any]:
    """The manifest of `data_dir` after checking it fits: converted for `task`, slices of
    `image_size`², and `split` non-empty. UserError otherwise, saying how to fix it."""
    manifest = read_manifest(data_dir)
    size = manifest_image_size(manifest)
    if image_size is not None and size is not None and size != int(image_size):
        raise UserError(f"{data_dir} holds {size}×{size} slices but {who} is configured for "
                        f"{image_size}×{image_size}; pass --image-size {size} (or convert with --image-size {image_size})")
    converted_for = manifest_task(manifest)
    if task is not None and converted_for is not None and converted_for != task:
        raise UserError(f"{data_dir} was converted for task {converted_for!r}, not {task!r}")
    if split is not None and split_slices(manifest).get(split, 0) == 0:
        raise UserError(f"{data_dir}: the {split!r} split holds no slices (see {Path(data_dir) / MANIFEST})")
    return manifest
