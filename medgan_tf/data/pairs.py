"""Pair preparation: one row of a pairs CSV → normalized axial slice records on the model grid.

Plain numpy, no Beam: the conversion pipeline (`pipelines/convert.py`) runs `convert_pair` for
each row, and tests call it directly. Per pair: read both volumes (NIfTI or DICOM series) → put the
target on the source grid by world coordinates → resample to the task spacing → centre crop/pad
to `image_size` → normalize per task with the parameters stored in every record → axial slices.
A pair that cannot be used raises `PairRejected` with a one-line reason that names the side and
the problem but never a path, file or folder name (the manifest stores it; names can identify a
patient) and a `detail` for the user's terminal.

`assign_splits` assigns patients to train/val deterministically from their pseudonym.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from medgan_tf.config import DataConfig
from medgan_tf.errors import UserError

SPLITS = ("train", "val")
SPLIT_RULE = ("converted patients ranked by SHA-256 of patient_key; the first round(val_fraction * n) "
              "(≥ 1, ≤ n − 1) go to val")


def read_pairs_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the pairs CSV with paths resolved against the CSV folder; UserError on a bad header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs CSV {path} does not exist; expected a CSV with header patient_id,source,target")
    try:
        rows = _read_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else f"{type(error).__name__}: {error}"
        raise UserError(f"cannot read the pairs CSV {path} ({why}); expected a readable UTF-8 CSV") from None
    if not rows:
        raise UserError(f"{path} has no pairs; expected at least one row after the header")
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"patient_id", "source", "target"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}: header {reader.fieldnames} lacks {sorted(missing)}; expected patient_id,source,target")
        rows = []
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            resolved = {}
            for side in ("source", "target"):
                value = (row.get(side) or "").strip()
                resolved[side] = str((path.parent / value).resolve()) if value else ""
            rows.append({"row": number, "patient_id": (row.get("patient_id") or "").strip(), **resolved,
                         "extra_sources": _extra_sources(path, row, reader.fieldnames or [])})
    return rows


def _extra_sources(path: Path, row: dict[str, Any], fieldnames: list[str]) -> list[str]:
    """Resolved paths of the extra source columns source_2, source_3, … (multi-channel sources,
    `medgan_tf.data.context`), in column-number order; [] for the paper's one-source CSV."""
    numbered = sorted((int(name.split("_")[1]), name) for name in fieldnames if re.fullmatch(r"source_\d+", name))
    if [n for n, _ in numbered] != list(range(2, 2 + len(numbered))):
        raise UserError(f"{path}: extra source columns {[name for _, name in numbered]} must be source_2, source_3, … "
                        "without gaps")
    values = [(row.get(name) or "").strip() for _, name in numbered]
    return [str((path.parent / value).resolve()) if value else "" for value in values]


def assign_splits(patient_keys: Iterable[str], val_fraction: float) -> dict[str, str]:
    """Patient key → "train" | "val", deterministic: patients ranked by SHA-256 of their key,
    the first round(val_fraction·n) (at least 1 when n ≥ 2, at most n − 1) go to val. Ranking by
    hash (rather than thresholding it) keeps both splits non-empty even for 2–4 patients."""
    keys = sorted(set(patient_keys), key=lambda key: hashlib.sha256(key.encode()).hexdigest())
    if len(keys) < 2:
        return {key: "train" for key in keys}
    num_val = min(len(keys) - 1, max(1, int(round(val_fraction * len(keys)))))
    return {key: ("val" if rank < num_val else "train") for rank, key in enumerate(keys)}


class PairRejected(Exception):
    """A pair that cannot be converted. `reason`: one line for the manifest, without any path,
    file or folder name; `detail`: the same with such names, for the user's terminal only."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail or reason
        super().__init__(reason)


def unexpected_reason(error: BaseException) -> str:
    """The manifest's reason for an error nobody anticipated: its type (and, for an OS error, the
    system's fixed text) but not its message, which may quote a path."""
    if isinstance(error, OSError) and error.strerror:
        return f"unexpected {type(error).__name__} ({error.strerror})"
    return f"unexpected {type(error).__name__}"


def _code(modality: str) -> str:
    """A modality code as read from a header, if it looks like one (never free text)."""
    return modality if re.fullmatch(r"[A-Z0-9_]{1,16}", modality) else "(not a modality code)"


def convert_pair(
    source_path: str,
    target_path: str,
    patient_key: str,
    data_config: DataConfig,
    extra_source_paths: tuple[str, ...] | list[str] = (),
) -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
    """One pair → ([(slice_index, serialized Example)], volume summary). Raises PairRejected.

    Pure function of its inputs (no Beam): read → pair onto the model grid → normalize → slices.
    With `data_config.context_slices` > 0 or extra sources (`extra_source_paths`, on the first
    source's grid), each record also carries its 2.5D / multi-source window (`data.context`).
    """
    from medgan_tf.data import context, geometry, normalization, schema
    from medgan_tf.data.io import VolumeReadError, read_volume

    volumes = {}
    for side, path, modality in (
        ("source", source_path, data_config.source_modality),
        ("target", target_path, data_config.target_modality),
    ):
        if not path:
            raise PairRejected(f"{side}: empty path")
        try:
            volume = read_volume(path, modality_hint=modality)
        except VolumeReadError as error:
            raise PairRejected(f"{side}: {error.reason}", f"{side}: {error.detail}") from None
        if volume.modality not in ("OT", modality):
            raise PairRejected(f"{side}: modality {_code(volume.modality)}; task expects {modality}")
        volumes[side] = volume
    source, target = volumes["source"], volumes["target"]
    size, spacing = data_config.image_size, tuple(data_config.spacing_mm)
    try:
        source_array, target_array, grid_affine = geometry.pair_to_model_grid(source, target, spacing, size)
    except geometry.GeometryError as error:
        raise PairRejected(error.reason) from None
    # Keep slices that both volumes cover (a PET longer than its CT gives no pair beyond the CT).
    source_mask = geometry.coverage(source, source_array.shape, grid_affine)
    target_mask = geometry.coverage(target, source_array.shape, grid_affine)
    source_cover, target_cover = source_mask.mean(axis=(0, 1)), target_mask.mean(axis=(0, 1))
    keep = np.flatnonzero((source_cover > 0) & (target_cover >= 0.5 * source_cover))
    if keep.size == 0:
        raise PairRejected("no axial slice is covered by both volumes")
    extras = context.extra_sources_on_grid(extra_source_paths, (source_array.shape, grid_affine), data_config)

    # Per-volume statistics over the voxels each volume really covers (not the crop/pad fill).
    source_params = normalization.fit(source_array[..., keep][source_mask[..., keep]], data_config.source_normalization, unit=source.unit)
    if data_config.target_normalization.share_source:
        target_params = dict(source_params, unit=target.unit)
    else:
        target_params = normalization.fit(target_array[..., keep][target_mask[..., keep]], data_config.target_normalization, unit=target.unit)
    source_norm = normalization.normalize(source_array, source_params)
    target_norm = normalization.normalize(target_array, target_params)
    extra_norm, extra_params = context.normalize_extra_sources(extras, keep, data_config)
    window = context.window_features([source_norm, *extra_norm], keep, data_config, [source_params, *extra_params])
    records = [
        (
            int(k),
            schema.encode_example(
                source_norm[:, :, k], target_norm[:, :, k], patient_key, int(k), spacing, source_params, target_params,
                extra_features=window(int(k)),
            ),
        )
        for k in keep
    ]
    summary = {
        "patient_key": patient_key,
        "slices": len(records),
        "grid_affine": np.round(grid_affine, 6).tolist(),
        "grid_shape": list(source_array.shape),
        "source": _volume_summary(source, source_params),
        "target": _volume_summary(target, target_params),
    }
    for index, ((_, _, volume), params) in enumerate(zip(extras, extra_params), start=2):
        summary[f"source_{index}"] = _volume_summary(volume, params)
    return records, summary


def _volume_summary(volume: Any, params: dict[str, Any]) -> dict[str, Any]:
    facts = {k: v for k, v in volume.metadata.items() if k in ("format", "num_files", "suv_factor", "suv_unavailable")}
    return {
        "modality": volume.modality,
        "unit": volume.unit,
        "shape": list(volume.shape),
        "spacing_mm": [round(v, 6) for v in volume.spacing],
        "normalization": params,
        **facts,
    }
