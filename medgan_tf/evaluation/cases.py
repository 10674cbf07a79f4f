"""The evaluation CSV and the volumes of one patient, all on the target's grid.

The CSV (`medgan-tf evaluate --pairs CSV`) has a header and one row per patient:

    patient_id   required; names the row in reports (and the mask file under `--mask-dir`)
    target       required; the reference volume (NIfTI file or DICOM series folder)
    source       the model's input (needed with `--model`, for the input row and the baselines)
    source_2, …  a multi-source model's extra sources, in training order (the converter's pairs
                 CSV columns, read by `medgan_tf.data.pairs`); needed with such a `--model`, not
                 used otherwise (the input row and the baselines take `source` only)
    prediction   an existing output volume of any tool (scored when there is no `--model`)
    mask         optional body/evaluation mask volume (any grid; > 0 is inside)
    labels       optional integer label map (lesions, organs) for the pet protocol's regions
    split        optional train | val | test: train rows fit baselines, val rows choose their
                 parameters, the others are scored
    suv_factor   optional Bq/ml → SUV factor; or weight_kg, injected_dose_bq, half_life_s and
                 optional delay_s (injection → scan start) from which it is computed

Relative paths are resolved against the CSV's folder. Every volume is read in physical units and
put on the target's voxel grid by world coordinates (`medgan_tf.data.geometry.resample`; labels
and masks by nearest neighbour); arrays are returned in (Z, Y, X) = (k, j, i) order, so axis 0
indexes the axial slices the protocols and figures expect.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf.errors import UserError

PATH_COLUMNS = ("target", "source", "prediction", "mask", "labels")
SUV_COLUMNS = ("weight_kg", "injected_dose_bq", "half_life_s", "delay_s")
TRAINING_SPLITS = ("train", "val")
ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(])(?:/|~/|[A-Za-z]:\\)\w")  # "/data/…", "~/…", "C:\…", not "Bq/ml"


class CaseError(UserError):
    """A patient that cannot be scored: the message (stderr) may name its files; `reason` names
    only the CSV line and column, for reports (metrics.json, metrics.md)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def report_reason(row: "Row", error: UserError) -> str:
    """`error` as a report may carry it: its own `reason`, or its text with every file of the row
    replaced by the CSV column that names it, after the CSV line. Reports hold no path."""
    reason = getattr(error, "reason", None)
    if reason:
        return reason
    text = str(error)
    cells = [(column, path) for column, path in row.paths.items() if path is not None]
    cells += [(f"source_{index}", path) for index, path in enumerate(row.extra_sources, start=2) if path is not None]
    for column, path in sorted(cells, key=lambda cell: -len(str(cell[1]))):
        text = text.replace(str(path), f"<{column} column>")
        if not path.name.isalpha() and len(path.name) >= 4:
            text = text.replace(path.name, f"<{column} column>")
    if row.csv is not None:
        text = text.replace(str(row.csv), "the CSV")
    if ABSOLUTE_PATH.search(text):  # a path the row does not name (a file inside a DICOM folder, ...)
        text = "see the terminal's message for this patient"
    return f"line {row.line}: {text}"


@dataclasses.dataclass
class Row:
    """One CSV row: paths resolved (None when the column is absent or empty); `extra_sources`
    one per source_2, … column of the CSV (`csv`), None for an empty cell."""

    line: int
    patient_id: str
    paths: dict[str, Path | None]
    split: str
    suv: dict[str, float]
    extra_sources: list[Path | None] = dataclasses.field(default_factory=list)
    csv: Path | None = None


def _number(row: dict, column: str, path: Path, line: int) -> float | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{path}:{line}: {column} {text!r} is not a number") from None


def read_evaluation_csv(path: str | Path, mask_dir: str | Path | None = None) -> list[Row]:
    """Rows of the evaluation CSV; UserError for a missing file, a header without patient_id and
    target or without source/prediction, extra source columns with a gap, a bad split or number,
    or a duplicate patient_id."""
    from medgan_tf.data.pairs import extra_source_columns, read_extra_sources

    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs CSV {path} does not exist; expected a CSV with header patient_id,target,source|prediction")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            raw = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"cannot read the pairs CSV {path} ({type(error).__name__}: {error})") from None
    missing = {"patient_id", "target"} - set(header)
    if missing or not {"source", "prediction"} & set(header):
        raise UserError(f"{path}: header {header} lacks {sorted(missing) or ['source or prediction']}; expected "
                        "patient_id,target and source and/or prediction (optional mask, labels, split, SUV columns)")
    extra_source_columns(path, header)  # a gap in source_2, source_3, … is refused before any row
    rows, seen = [], set()
    for line, row in enumerate(raw, start=2):
        patient_id = (row.get("patient_id") or "").strip()
        if not patient_id or patient_id in seen:
            raise UserError(f"{path}:{line}: {'duplicate' if patient_id else 'empty'} patient_id {patient_id!r}")
        seen.add(patient_id)
        paths = {c: (path.parent / row[c].strip()).resolve() if (row.get(c) or "").strip() else None
                 for c in PATH_COLUMNS}
        if paths["target"] is None:
            raise UserError(f"{path}:{line}: empty target for patient {patient_id}")
        if paths["mask"] is None and mask_dir is not None:
            paths["mask"] = _mask_file(Path(mask_dir), patient_id)
        split = (row.get("split") or "").strip().lower()
        if split not in ("", "test", *TRAINING_SPLITS):
            raise UserError(f"{path}:{line}: split {split!r}; expected train, val, test or empty")
        suv = {c: v for c in ("suv_factor", *SUV_COLUMNS) if (v := _number(row, c, path, line)) is not None}
        extra = [Path(p) if p else None for p in read_extra_sources(path, str(path.parent), row, header)]
        rows.append(Row(line, patient_id, paths, split, suv, extra, path))
    if not rows:
        raise UserError(f"{path} has no rows; expected at least one patient after the header")
    return rows


def _mask_file(mask_dir: Path, patient_id: str) -> Path | None:
    """`--mask-dir`: DIR/<patient_id>.nii.gz, .nii, or a DICOM folder DIR/<patient_id>."""
    for candidate in (mask_dir / f"{patient_id}.nii.gz", mask_dir / f"{patient_id}.nii", mask_dir / patient_id):
        if candidate.exists():
            return candidate
    return None


def suv_factor(row: Row, target_unit: str) -> tuple[float | None, str]:
    """Bq/ml → SUV factor for the target and where it came from: 1 when the target is already in
    SUV (a DICOM series whose header allowed it), the CSV's `suv_factor`, or body-weight SUV
    weight [g] / (dose [Bq] · 2^(−delay / half-life)) from the CSV's columns; else None."""
    if target_unit == "SUV":
        return 1.0, "the target is in SUV (DICOM header)"
    if "suv_factor" in row.suv:
        return row.suv["suv_factor"], "the CSV's suv_factor column"
    weight, dose, half_life = (row.suv.get(c) for c in SUV_COLUMNS[:3])
    if weight and dose and half_life:
        decayed = dose * 2.0 ** (-row.suv.get("delay_s", 0.0) / half_life)
        return weight * 1000.0 / decayed, "weight_kg, injected_dose_bq, half_life_s, delay_s columns"
    return None, f"no SUV information (target in {target_unit}); SUVs are shown in {target_unit}"


def read(path: Path, what: str, patient_id: str, modality: str | None = None, *, plausible: bool = True):
    """read_volume with a one-line UserError naming the patient, the column and the path; with
    `modality` (a key of `medgan_tf.modalities`), also when the volume is of another modality or
    (with `plausible`) its values cannot be that modality. A prediction is not checked for
    plausibility: whatever a model made is scored as it is."""
    from medgan_tf import modalities
    from medgan_tf.data.io import VolumeReadError, read_volume

    expected = modalities.get(modality) if modality is not None else None
    try:
        volume = read_volume(path, modality_hint=modality)
    except VolumeReadError as error:
        raise CaseError(f"patient {patient_id}: cannot read {what} {error.path}: {error.reason}",
                        f"column {what}: cannot read {what} volume: {error.reason}") from None
    if expected is not None:
        try:
            check = expected.check_volume if plausible else expected.check_modality
            check(volume, f"the {what} volume")
        except UserError as error:
            raise UserError(f"patient {patient_id}: {error}") from None
    return volume


def zyx(array: np.ndarray) -> np.ndarray:
    """(i, j, k) volume array → (Z, Y, X) = (k, j, i)."""
    return np.ascontiguousarray(np.transpose(np.asarray(array), (2, 1, 0)))


def on_grid(array: np.ndarray, affine: np.ndarray, target: Any, *, order: int = 1, fill: float | None = None) -> np.ndarray:
    """`array` (i, j, k on `affine`) sampled on the target Volume's grid by world coordinates, in
    (Z, Y, X) order; exactly the input when it already is on that grid (no interpolation)."""
    from medgan_tf.data import geometry

    array = np.asarray(array, dtype=np.float32)
    if array.shape == target.array.shape and np.allclose(affine, target.affine, atol=1e-5):
        return zyx(array)
    fill = float(np.min(array)) if fill is None else fill
    return zyx(geometry.resample(array, affine, target.array.shape, target.affine, order=order, fill=fill))


@dataclasses.dataclass
class Case:
    """One patient on the target's grid, (Z, Y, X) arrays in physical units."""

    row: Row
    target: np.ndarray
    target_volume: Any  # medgan_tf.data.io.Volume (grid, unit)
    source_volume: Any | None
    prediction: np.ndarray | None
    mask: np.ndarray | None
    labels: np.ndarray | None
    extra_source_volumes: list[Any] = dataclasses.field(default_factory=list)  # source_2, … as read
    registration: dict[str, Any] | None = None  # what `--register` did (`data.registration` report)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.target_volume.spacing))

    def source_on_target(self) -> np.ndarray:
        return on_grid(self.source_volume.array, self.source_volume.affine, self.target_volume)


def load_case(row: Row, target_modality: str, source_modality: str, *, need_source: bool,
              extra_modalities: tuple[str, ...] = (), registration: Any = None) -> Case:
    """Read one row's volumes and put prediction, mask and labels on the target's grid; with
    `extra_modalities` (a multi-source model's source_2, …) read those sources too, as they are.
    With `registration` (`data.registration.RegistrationSettings`, enabled) the target is first
    registered to the source, and the target's mask and labels move with it."""
    target = _cell(row, "target", lambda: read(row.paths["target"], "target", row.patient_id, target_modality))
    source = None
    if row.paths["source"] is not None:
        source = _cell(row, "source", lambda: read(row.paths["source"], "source", row.patient_id, source_modality))
        _check_overlap(row, "source", source, target)
    elif need_source:
        raise UserError(f"patient {row.patient_id}: no source volume (the CSV's source column is needed with --model)")
    report = moved_by = None
    if registration is not None and registration.enabled:
        target, report, moved_by = _register(row, source, target, source_modality, target_modality, registration)
    extra_volumes = _extra_sources(row, extra_modalities)
    prediction = None
    if row.paths["prediction"] is not None and not need_source:
        volume = _cell(row, "prediction", lambda: read(row.paths["prediction"], "prediction", row.patient_id,
                                                       target_modality, plausible=False))
        _check_overlap(row, "prediction", volume, target)
        prediction = on_grid(volume.array, volume.affine, target)
    mask = labels = None
    if row.paths["mask"] is not None:
        volume = _follow(row, "mask", _cell(row, "mask", lambda: read(row.paths["mask"], "mask", row.patient_id)), moved_by)
        _check_overlap(row, "mask", volume, target, minimum=0.0)
        mask = on_grid(volume.array, volume.affine, target, order=0, fill=0.0) > 0
        if not mask.any():
            raise CaseError(f"patient {row.patient_id}: mask {row.paths['mask']} is empty on the target's grid",
                            f"line {row.line}, column mask: the mask is empty on the target's grid")
    if row.paths["labels"] is not None:
        volume = _follow(row, "labels", _cell(row, "labels", lambda: read(row.paths["labels"], "labels", row.patient_id)),
                         moved_by)
        _check_overlap(row, "labels", volume, target, minimum=0.0)
        labels = np.rint(on_grid(volume.array, volume.affine, target, order=0, fill=0.0)).astype(np.int32)
    return Case(row, zyx(target.array).astype(np.float64), target, source, prediction, mask, labels, extra_volumes, report)


def _register(row: Row, source: Any, target: Any, source_modality: str, target_modality: str,
              settings: Any) -> tuple[Any, dict[str, Any], np.ndarray | str]:
    """The row's target registered to its source → (registered target, report, the 4×4 that
    moved a linear registration's target grid, or "deformable"). CaseError when the
    registration is rejected (`registration.check`) or there is no source."""
    from medgan_tf.data import registration
    from medgan_tf.data.rejections import PairRejected

    if source is None:
        raise CaseError(f"patient {row.patient_id}: --register needs the source volume (the CSV's source column)",
                        f"line {row.line}: --register needs the source column")
    metric = registration.metric_of(source_modality, target_modality)
    moved, report = registration.register_target(source, target, settings, metric)
    try:
        registration.check(report, settings)
    except PairRejected as error:
        raise CaseError(f"patient {row.patient_id}: {error.reason}", f"line {row.line}: {error.reason}") from None
    linear = settings.method != "deformable"
    return moved, report, (moved.affine @ np.linalg.inv(target.affine) if linear else "deformable")


def _follow(row: Row, column: str, volume: Any, moved_by: Any) -> Any:
    """A volume on the target's frame (mask, labels) moved as a registration moved the target."""
    if moved_by is None:
        return volume
    if isinstance(moved_by, str):
        raise CaseError(f"patient {row.patient_id}: a {column} column with --register deformable is not supported; "
                        "use rigid or affine", f"line {row.line}: a {column} column with --register deformable is not supported")
    return dataclasses.replace(volume, affine=moved_by @ volume.affine)


def _cell(row: Row, column: str, read_volume: Any) -> Any:
    """`read_volume()`, its UserError given a report reason naming the CSV line and `column`."""
    try:
        return read_volume()
    except CaseError as error:
        raise CaseError(str(error), f"line {row.line}, {error.reason}") from None
    except UserError as error:  # the modality's plausibility check: values, never paths
        detail = str(error).split(": ", 1)[-1]
        raise CaseError(str(error), f"line {row.line}, column {column}: {detail}") from None


def _check_overlap(row: Row, column: str, volume: Any, target: Any, minimum: float | None = None) -> None:
    """CaseError when `volume` (the CSV's `column`) does not overlap the target in world space:
    the converter's reason (`medgan_tf.data.preparation.overlap_problem`)."""
    from medgan_tf.data.preparation import MIN_OVERLAP, overlap_problem

    reason = overlap_problem(volume, target, column, "target", MIN_OVERLAP if minimum is None else minimum)
    if reason:
        raise CaseError(f"patient {row.patient_id}: {column} {row.paths[column]}: {reason}",
                        f"line {row.line}, column {column}: {reason}")


def _extra_sources(row: Row, extra_modalities: tuple[str, ...]) -> list[Any]:
    """The row's source_2, … volumes for a model taking `extra_modalities`; UserError naming the
    line and the empty cell(s) (the CSV's columns were checked against the model before)."""
    from medgan_tf.serving.channels import empty_extra_cells, sources_text

    if not extra_modalities:
        return []
    cells = (list(row.extra_sources) + [None] * len(extra_modalities))[: len(extra_modalities)]
    empty = empty_extra_cells(cells)
    if empty:
        raise UserError(f"patient {row.patient_id} (line {row.line}): empty {', '.join(empty)} cell; the model takes "
                        f"{sources_text(extra_modalities)}")
    return [_cell(row, f"source_{index}", lambda path=path, index=index, modality=modality:
                  read(path, f"source_{index}", row.patient_id, modality))
            for index, (path, modality) in enumerate(zip(cells, extra_modalities), start=2)]
