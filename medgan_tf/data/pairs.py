"""Pair preparation: one row of a pairs CSV → normalized axial slice records on the model grid.

Plain numpy, no Beam: the conversion pipeline (`pipelines/convert.py`) runs `convert_pair` for
each row, and tests call it directly. Per pair: read both volumes (NIfTI or DICOM series) → put the
target on the source grid by world coordinates → resample to the task spacing → centre crop/pad
to `image_size` → normalize per task with the parameters stored in every record → axial slices.
A pair that cannot be used raises `PairRejected` with a one-line reason that names the side and
the problem but never a path, file or folder name (the manifest stores it; names can identify a
patient) and a `detail` for the user's terminal.

`assign_splits` assigns patients to train/val/test deterministically from their pseudonym, except
the patients whose rows name their split (the CSV's optional `split` column). An optional `mask`
column names a body/evaluation mask volume on the source's frame, carried into the records.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from medgan_tf.config import DataConfig
from medgan_tf.data.rejections import PairRejected, read_pair_volume
from medgan_tf.errors import UserError

SPLITS = ("train", "val", "test")
SPLIT_RULE = ("a split named in the pairs CSV wins; the other converted patients ranked by SHA-256 of patient_key: "
              "the first round(test_fraction * n) (≥ 1 when test_fraction > 0 and n ≥ 3) go to test, the next "
              "round(val_fraction * n) (≥ 1 when val_fraction > 0 and n ≥ 2) to val, the rest (≥ 1) to train")


def read_pairs_csv(path: str | Path, base: str | None = None) -> list[dict[str, Any]]:
    """Rows of the pairs CSV with paths resolved against the CSV folder (or `base`, the folder of
    a CSV read from an object store); UserError on a bad header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs CSV {path} does not exist; expected a CSV with header patient_id,source,target")
    try:
        rows = _read_rows(path, base)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else f"{type(error).__name__}: {error}"
        raise UserError(f"cannot read the pairs CSV {path} ({why}); expected a readable UTF-8 CSV") from None
    if not rows:
        raise UserError(f"{path} has no pairs; expected at least one row after the header")
    return mark_split_conflicts(rows)


def _read_rows(path: Path, base: str | None = None) -> list[dict[str, Any]]:
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
                resolved[side] = resolve_input(base or str(path.parent), value) if value else ""
            rows.append({"row": number, "patient_id": (row.get("patient_id") or "").strip(), **resolved,
                         **optional_columns(row, base or str(path.parent)),
                         "extra_sources": read_extra_sources(path, base or str(path.parent), row, reader.fieldnames or [])})
    return rows


def extra_source_columns(path: str | Path, fieldnames: Iterable[str]) -> list[str]:
    """The extra source columns of a CSV header — source_2, source_3, … (multi-channel sources,
    `medgan_tf.data.context`) — in column-number order, which is the channel order; [] for the
    paper's one-source CSV. UserError naming `path` when the numbers have a gap."""
    numbered = sorted((int(name.split("_")[1]), name) for name in fieldnames if re.fullmatch(r"source_\d+", name))
    if [n for n, _ in numbered] != list(range(2, 2 + len(numbered))):
        raise UserError(f"{path}: extra source columns {[name for _, name in numbered]} must be source_2, source_3, … "
                        "without gaps")
    return [name for _, name in numbered]


def read_extra_sources(path: str | Path, base: str, row: Mapping[str, Any], fieldnames: Iterable[str]) -> list[str]:
    """One CSV row's extra sources (`extra_source_columns` order) resolved like `source` against
    `base` (`resolve_input`); "" for an empty cell. The converter, `translate --inputs` and
    `evaluate --pairs` all read them here."""
    values = [(row.get(name) or "").strip() for name in extra_source_columns(path, fieldnames)]
    return [resolve_input(base, value) if value else "" for value in values]


def resolve_input(base: str, value: str) -> str:
    """A path of the pairs CSV: absolute or with a scheme (`gs://…`) as written, else relative to
    `base` (the CSV's folder, local or in an object store)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        return value
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", base):
        import posixpath

        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, value))}"
    return str((Path(base) / value).resolve())


def optional_columns(row: dict[str, Any], base: str) -> dict[str, str]:
    """The optional `split` (lower-cased, "" when blank) and `mask` (resolved path, "" when
    blank) of one CSV row; a split outside `SPLITS` is kept as written and rejected by
    `check_row`, so the rest of the CSV still converts."""
    split = (row.get("split") or "").strip()
    mask = (row.get("mask") or "").strip()
    return {"split": split.lower() if split.lower() in SPLITS else split,
            "mask": resolve_input(base, mask) if mask else ""}


def mark_split_conflicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with `split_conflict` set (a reason) for every row of a patient whose rows name
    different splits: such a patient cannot be placed, and `check_row` rejects all its rows."""
    named: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        if row.get("split") in SPLITS and row["patient_id"]:
            named.setdefault(row["patient_id"], {}).setdefault(row["split"], []).append(row["row"])
    for row in rows:
        splits = named.get(row["patient_id"], {})
        if len(splits) > 1:
            lines = "; ".join(f"{split} on line{'s' if len(n) > 1 else ''} {', '.join(map(str, n))}"
                              for split, n in sorted(splits.items()))
            row["split_conflict"] = f"split: this patient's rows name different splits ({lines}); name one"
    return rows


def check_row(row: dict[str, Any]) -> str:
    """The split a CSV row names ("" for the hash split); PairRejected for a split that is not
    train, val or test (any case) or that contradicts another row of the same patient."""
    if row.get("split_conflict"):
        raise PairRejected(row["split_conflict"])
    split = row.get("split", "")
    if split and split not in SPLITS:
        # The cell may hold anything a shifted column puts there (a name, an ID): the manifest names
        # where it is, only the terminal quotes it.
        where = f"the cell on line {row['row']}, column split," if row.get("row") else "the split cell"
        expected = f"is not one of {', '.join(SPLITS)} (any case) or blank"
        raise PairRejected(f"split: {where} {expected}", f"split: {split!r} {expected}")
    return split


def assign_splits(patient_keys: Iterable[str], val_fraction: float, test_fraction: float = 0.0,
                  named: Mapping[str, str] | None = None) -> dict[str, str]:
    """Patient key → "train" | "val" | "test", deterministic. A patient in `named` (key → split,
    from the pairs CSV) gets that split; the others are ranked by SHA-256 of their key: the first
    round(test_fraction·n) go to test (at least 1 when test_fraction > 0 and n ≥ 3), the next
    round(val_fraction·n) to val (at least 1 when val_fraction > 0 and n ≥ 2), the rest to train,
    which keeps at least one. Ranking by hash (rather than thresholding it) keeps the splits
    non-empty even for 2–4 patients."""
    named = {key: split for key, split in (named or {}).items() if split in SPLITS}
    keys = sorted(set(patient_keys) - set(named), key=lambda key: hashlib.sha256(key.encode()).hexdigest())
    n = len(keys)
    num_test = min(n - 1, max(1, int(round(test_fraction * n)))) if test_fraction > 0 and n >= 3 else 0
    num_val = int(round(val_fraction * n))
    num_val = max(0, min(n - num_test - 1, max(1, num_val) if val_fraction > 0 else num_val))
    ranked = {key: ("test" if rank < num_test else "val" if rank < num_test + num_val else "train")
              for rank, key in enumerate(keys)}
    return {**ranked, **named}


def unexpected_reason(error: BaseException) -> str:
    """The manifest's reason for an error nobody anticipated: its type (and, for an OS error, the
    system's fixed text) but not its message, which may quote a path."""
    if isinstance(error, OSError) and error.strerror:
        return f"unexpected {type(error).__name__} ({error.strerror})"
    return f"unexpected {type(error).__name__}"


def convert_pair(
    source_path: str,
    target_path: str,
    patient_key: str,
    data_config: DataConfig,
    extra_source_paths: tuple[str, ...] | list[str] = (),
    mask_path: str = "",
    allow_different_patients: bool = False,
    registration: Any = None,
    preview: Callable[[PairView], None] | None = None,
) -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
    """One pair → ([(slice_index, serialized Example)], volume summary). Raises PairRejected.

    Pure function of its inputs (no Beam): read → `preparation.prepare` (model grid, kept slices,
    normalization, windows) → slices. Records carry the 2.5D / multi-source window of `data.context`
    when K > 0 or `extra_source_paths`.
    With `mask_path` (a mask volume on the source's frame), every record also carries the mask
    on the model grid (nearest neighbour, 1 inside, 0 outside) and the summary its voxel count.
    Two DICOM volumes of different patients are rejected unless `allow_different_patients`.
    With `registration` (`data.registration.RegistrationSettings`, method other than "none") the
    target is first registered to the source (`register_pair`) and the summary holds the report.
    `preview` is called with the pair's `PairView` once both volumes are read: after the
    conversion, or before a PairRejected leaves (with its reason; a registration's findings too).
    """
    source = read_pair_volume("source", source_path, data_config.source_modality)
    target = read_pair_volume("target", target_path, data_config.target_modality)
    view = PairView(source, target)
    try:
        if not allow_different_patients:
            check_same_patient(source, target)
        if registration is not None and registration.enabled:
            try:
                view.registered, view.report = register_pair(source, target, data_config, registration, mask_path)
            except PairRejected as rejected:
                view.registered, view.report = getattr(rejected, "registration", (None, None))
                raise
        moved = target if view.registered is None else view.registered
        converted = _convert_volumes(source, moved, patient_key, data_config, extra_source_paths, mask_path, view.report)
    except PairRejected as rejected:
        view.rejected = rejected.reason
        if preview is not None:
            preview(view)
        raise
    if preview is not None:
        preview(view)
    return converted


@dataclasses.dataclass
class PairView:
    """What a pair's preview shows (`data.pair_previews`): the source, the target as read, the
    target registered to the source and the registration's report (None without registration, or
    when it failed before finding a transform), and the reason it was rejected (None: converted)."""

    source: Any
    target: Any
    registered: Any = None
    report: dict[str, Any] | None = None
    rejected: str | None = None


def _convert_volumes(source: Any, target: Any, patient_key: str, data_config: DataConfig,
                     extra_source_paths: tuple[str, ...] | list[str], mask_path: str,
                     registered: dict[str, Any] | None) -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
    """`convert_pair` once the source and the (registered) target are read: the records and the summary."""
    from medgan_tf.data import schema
    from medgan_tf.data.preparation import prepare

    modalities = data_config.extra_source_modalities
    if len(extra_source_paths) != len(modalities):
        raise PairRejected(f"{len(extra_source_paths)} extra source volume(s); the conversion expects {len(modalities)}")
    extras = [read_pair_volume(f"source_{index}", path, modality)
              for index, (path, modality) in enumerate(zip(extra_source_paths, modalities), start=2)]
    prepared = prepare(source, data_config, target=target, extra_sources=extras)
    shape, grid_affine, keep = prepared.grid_shape, prepared.grid_affine, prepared.keep
    spacing = tuple(data_config.spacing_mm)
    window = (lambda z: schema.stack_features(prepared.window(z), prepared.context_slices,
                                              [prepared.source_params, *prepared.extra_params])) \
        if prepared.uses_stack else (lambda z: None)
    mask = mask_on_grid(mask_path, shape, grid_affine) if mask_path else None
    records = [
        (
            int(k),
            schema.encode_example(
                prepared.source_normalized[:, :, k], prepared.target_normalized[:, :, k], patient_key, int(k), spacing,
                prepared.source_params, prepared.target_params, extra_features=window(int(k)),
                **({"mask_slice": mask[:, :, k]} if mask is not None else {}),
            ),
        )
        for k in keep
    ]
    summary = {
        "patient_key": patient_key,
        "slices": len(records),
        "grid_affine": np.round(grid_affine, 6).tolist(),
        "grid_shape": list(shape),
        "source": _volume_summary(source, prepared.source_params),
        "target": _volume_summary(target, prepared.target_params),
    }
    summary.update({f"source_{i}": _volume_summary(v, p)
                    for i, (v, p) in enumerate(zip(prepared.extra_volumes, prepared.extra_params), start=2)})
    if mask is not None:
        summary["mask"] = {"voxels": int(mask[..., keep].sum()), "shape": list(mask.shape)}
    if registered is not None:
        summary["registration"] = registered
    return records, summary


def register_pair(source: Any, target: Any, data_config: DataConfig, settings: Any, mask_path: str = "") -> tuple[Any, dict]:
    """`target` registered to `source` (`data.registration`; the metric from the task's modalities,
    the body mask at `mask_path` when given) → (registered target, report). PairRejected with the
    reason when the registration is not to be trusted (`registration.check`)."""
    from medgan_tf.data import registration
    from medgan_tf.data.io import VolumeReadError, read_volume

    mask = None
    if mask_path:
        try:
            mask = read_volume(mask_path)
        except VolumeReadError as error:
            raise PairRejected(f"mask: {error.reason}", f"mask: {error.detail}") from None
    metric = registration.metric_of(data_config.source_modality, data_config.target_modality)
    moved, report = registration.register_target(source, target, settings, metric, mask)
    try:
        registration.check(report, settings)
    except PairRejected as rejected:
        rejected.registration = (moved, report)  # what the registration found, for the pair's preview
        raise
    return moved, report


def check_same_patient(source: Any, target: Any) -> None:
    """PairRejected when both volumes come from DICOM and their headers name different patients:
    PatientIDs that differ, or (without both IDs) PatientName and PatientBirthDate that differ.
    The reason names which tags differ, never their values."""
    headers = (source.dicom_header, target.dicom_header)
    if any(header is None for header in headers):
        return  # a NIfTI file names no patient

    def tag(header: Any, keyword: str) -> str:
        return str(header.get(keyword, "") or "").strip().upper()

    ids = [tag(header, "PatientID") for header in headers]
    if all(ids):
        differ = ["PatientID"] if ids[0] != ids[1] else []
    else:
        differ = [keyword for keyword in ("PatientName", "PatientBirthDate")
                  if all(tag(h, keyword) for h in headers) and tag(headers[0], keyword) != tag(headers[1], keyword)]
    if differ:
        raise PairRejected(f"source and target are of different patients (their {' and '.join(differ)} differ); "
                           "a pair must show one patient (pass --allow-different-patients if this pairing is intended)")


def mask_on_grid(mask_path: str, shape: tuple[int, ...], grid_affine: np.ndarray) -> np.ndarray:
    """The mask volume at `mask_path` on the model grid (`shape`, `grid_affine`) by world
    coordinates: uint8, 1 where the nearest mask voxel is non-zero, 0 elsewhere and outside the
    mask's extent. PairRejected when it cannot be read or does not overlap the grid."""
    from medgan_tf.data import geometry
    from medgan_tf.data.io import VolumeReadError, read_volume

    try:
        volume = read_volume(mask_path)
    except VolumeReadError as error:
        raise PairRejected(f"mask: {error.reason}", f"mask: {error.detail}") from None
    if geometry.overlap_fraction(volume, shape, grid_affine) <= 0:
        raise PairRejected("mask: does not overlap the source in world space; expected a mask on the source's frame")
    inside = (np.asarray(volume.array) != 0).astype(np.float32)
    return (geometry.resample(inside, volume.affine, shape, grid_affine, order=0, fill=0.0) > 0.5).astype(np.uint8)


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
