"""Scoring whole volumes in physical units on the target's grid (`medgan-tf evaluate --pairs`).

Per scored patient (`medgan_tf.evaluation.cases`): the model translates the source volume (any
field of view: `medgan_tf.serving.translation.translate_volume` tiles it) — or an existing
`prediction` volume is taken as is — and the output is resampled onto the target's grid by world
coordinates; the untouched input (where units allow) and the task's classical baselines
(`medgan_tf.evaluation.baselines`, fitted on the CSV's train/val rows) go the same way. Each of
these rows is scored against the target by one protocol (`medgan_tf.evaluation.protocols`),
inside the given mask or a computed body mask. A patient that cannot be read is reported and
skipped; the others are scored. When the model gives an uncertainty (`tta`, or an ensemble
export), the model row also reports how well it predicts the error
(`medgan_tf.evaluation.uncertainty`), and the figure shows it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medgan_tf import tasks
from medgan_tf.data.registration import metric_of
from medgan_tf.errors import UserError
from medgan_tf.evaluation import baselines as baselines_lib
from medgan_tf.evaluation.cases import Case, Row, load_case, on_grid, read, report_reason, suv_factor
from medgan_tf.evaluation.protocols import PROTOCOLS, Protocol, body_mask, protocol as get_protocol
from medgan_tf.evaluation.scoring import Summary, summarize
from medgan_tf.evaluation.uncertainty import uncertainty_scores

log = logging.getLogger(__name__)

HISTOGRAM_SAMPLES = 200_000


@dataclasses.dataclass
class VolumeEvaluation:
    """Per-patient protocol scores of every row (model, input, baselines) and what the figures need."""

    protocol: str
    task: str
    unit: str
    rows: list[str]
    per_patient: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    baselines: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    figure: dict[str, Any] = dataclasses.field(default_factory=dict)
    histogram: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=lambda: {"output": [], "target": []})
    regions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    definition: tasks.Task | None = None  # the task `task` names, as resolved (units, masks, normalization)

    def metric_keys(self) -> list[str]:
        """Every key any patient's scores hold, protocol columns first."""
        keys = list(PROTOCOLS.get(self.protocol).metrics)
        for entry in self.per_patient:
            for scores in entry["scores"].values():
                keys += [k for k in scores if k not in keys]
        return keys

    def summary(self) -> dict[str, dict[str, Summary]]:
        """{row: {metric: Summary (mean, sd, median over patients)}}."""
        keys = self.metric_keys()
        return {row: {key: summarize(e["scores"].get(row, {}).get(key) for e in self.per_patient) for key in keys}
                for row in self.rows}


def _pairs_for_fitting(rows: Sequence[Row], task: tasks.Task, notes: list[str],
                       registration: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(source on the target grid, target) arrays of rows that have a source (the target
    registered to it with `registration`); a row that cannot be read is left out, and `notes` says so."""
    data = task.data
    pairs = []
    for row in rows:
        if row.paths["source"] is None:
            continue
        try:
            case = load_case(row, data.target_modality, data.source_modality, need_source=True, registration=registration)
        except UserError as error:
            log.error("%s", error)
            notes.append(f"not used for the baselines ({row.split or 'evaluated'} row): {error}")
            continue
        pairs.append((case.source_on_target(), case.target))
    return pairs


def fit_csv_baselines(rows: Sequence[Row], scored: Sequence[Row], task: "str | tasks.Task",
                      registration: Any = None) -> tuple[list, list[str]]:
    """The task's baselines fitted on the CSV's train rows and chosen on its val rows; with
    neither, on the scored rows themselves (the notes say so: optimistic for the baselines).
    `registration`: targets registered to their sources first (`load_case`)."""
    train = [r for r in rows if r.split == "train"]
    val = [r for r in rows if r.split == "val"]
    notes, name = [], "validation"
    if not train and not val:
        val, name = list(scored), "evaluated (no train/val rows in the CSV)"
        notes.append("baseline parameters were chosen on the evaluated volumes themselves (the CSV has no "
                     "train/val rows), which favours the baselines")
    task = tasks.get(task)
    train_pairs, val_pairs = (_pairs_for_fitting(train, task, notes, registration),
                              _pairs_for_fitting(val, task, notes, registration))
    if not train_pairs and not val_pairs:
        return [], notes + ["no classical baselines: no row has a source volume"]
    return baselines_lib.fit_baselines(task, train_pairs, val_pairs, validation_name=name), notes


def _mask_for(case: Case, protocol: Protocol, modality: str) -> tuple[np.ndarray | None, str]:
    if not protocol.masked:
        return None, "not used by this protocol (whole volume)"
    if case.mask is not None:
        return case.mask, "given"
    mask, description = body_mask(case.target, modality=modality)
    if not mask.any():
        raise UserError(f"patient {case.row.patient_id}: the computed body mask is empty ({description})")
    return mask, f"computed: {description}"


def _protocol_inputs(case: Case, protocol: Protocol, factor: float, task: tasks.Task) -> dict[str, Any]:
    """The keyword inputs `protocol.inputs` names (`protocols.CASE_INPUTS`), for one case;
    `factor`: SUV per unit of the target (1.0 when unknown)."""

    def target_params():
        from medgan_tf.data import normalization

        return normalization.fit(case.target, task.data.target_normalization, unit=case.target_volume.unit)

    inputs = {"labels": lambda: case.labels, "suv_factor": lambda: factor,
              "voxel_volume_ml": lambda: float(np.prod(case.spacing_zyx)) / 1000.0, "target_params": target_params}
    return {name: inputs[name]() for name in protocol.inputs}


def _candidates(case: Case, model, rows: Sequence[str], baselines, batch_size: int, tile_overlap: float,
                tta: str = "none", translated: Mapping[int, Any] | None = None):
    """({row name: candidate (Z, Y, X) on the target grid}, the model's uncertainty on that grid
    or None) for one case."""
    out, uncertainty = {}, None
    if model is not None and translated is not None:
        found = translated.get(case.row.line, "its source was not translated")
        if isinstance(found, str):
            raise UserError(f"patient {case.row.patient_id}: {found}")
        volume = read(found, "translation", case.row.patient_id, plausible=False)
        out["model"] = on_grid(volume.array, volume.affine, case.target_volume)
    elif model is not None:
        from medgan_tf.serving.translation import translate_volume

        translation = translate_volume(model, case.source_volume, batch_size=batch_size, tile_overlap=tile_overlap,
                                       extra_volumes=case.extra_source_volumes, tta=tta)
        volume = translation.volume
        out["model"] = on_grid(volume.array, volume.affine, case.target_volume)
        if translation.uncertainty is not None:
            uncertainty = on_grid(translation.uncertainty.array, volume.affine, case.target_volume)
    else:
        if case.prediction is None:
            raise UserError(f"patient {case.row.patient_id}: no prediction volume (and no --model to make one)")
        out["model"] = case.prediction
    if case.source_volume is not None:
        source = case.source_volume
        for baseline in [baselines_lib.INPUT, *baselines]:
            if baseline.name in rows:
                out[baseline.name] = on_grid(baseline.apply(source.array), source.affine, case.target_volume)
    return out, uncertainty


def evaluate_volumes(
    rows: Sequence[Row],
    task: "str | tasks.Task",
    protocol: str,
    *,
    model=None,
    batch_size: int = 8,
    tile_overlap: float = 0.25,
    progress: Callable[[str], None] | None = None,
    fitted: tuple[list, list[str]] | None = None,
    registration: Any = None,
    tta: str = "none",
    translated: Mapping[int, Any] | None = None,
) -> VolumeEvaluation:
    """Score the CSV's test (or unsplit) rows with `protocol`: the model (or the prediction
    column), the untouched input and the task's baselines, per patient. See the module docstring.
    `fitted`: baselines and notes from an earlier `fit_csv_baselines` (several models scored on
    one CSV share them); default: fitted here. `registration`
    (`data.registration.RegistrationSettings`, enabled): each target is registered to its source
    before scoring (as SynthRAD scores against registered CTs); the notes say so and each patient's
    entry holds what the registration did. `tta`: the model's test-time augmentation
    (`translate --tta`). `translated`: the model's outputs made beforehand (on a Beam runner,
    `evaluation.archive.translate_rows`), {CSV line: output path, or why the row failed}, read
    instead of translating here."""
    get_protocol(protocol)  # a UserError naming the registered ones
    task = tasks.get(task)
    data = task.data
    scored = [r for r in rows if r.split not in ("train", "val")]
    if not scored:
        raise UserError("every row of the CSV is a train or val row; nothing to score (mark rows test or leave split empty)")
    extra_notes = _check_extra_sources(rows, model)
    has_source = any(r.paths["source"] is not None for r in scored)
    if fitted is not None:
        baselines, notes = fitted[0], list(fitted[1])
    elif has_source:
        baselines, notes = fit_csv_baselines(rows, scored, task, registration)
    else:
        baselines, notes = [], ["no input or baseline rows: the CSV has no source column"]
    row_names = ["model"]
    if has_source and task.same_unit:
        row_names.append("input")
    elif has_source:
        notes.append(f"no input row: the input ({data.source_modality}) and the target ({data.target_modality}) "
                     "are in different units")
    row_names += [b.name for b in baselines]
    if model is not None and any(r.paths["prediction"] is not None for r in scored):
        notes.append("the CSV's prediction column was not scored: --model translated the sources instead")
    registered = registration is not None and registration.enabled
    if registered:
        notes.insert(0, f"targets were registered to their sources before scoring (--register {registration.method}, "
                        f"{metric_of(data.source_modality, data.target_modality)}); per patient in metrics.json")
    result = VolumeEvaluation(protocol, task.name, "", row_names, baselines={b.name: b.describe() for b in baselines},
                              notes=notes + extra_notes, definition=task)
    for index, row in enumerate(scored, start=1):
        if progress is not None:
            progress(f"[{index}/{len(scored)}] {row.patient_id}")
        try:
            _score_case(result, row, model, baselines, batch_size, tile_overlap, registration if registered else None,
                        tta, translated)
        except UserError as error:
            log.error("%s", error)  # the terminal may see the files; reports name the CSV line and column
            result.failures.append({"patient_id": row.patient_id, "reason": report_reason(row, error)})
    if not result.per_patient:
        raise UserError(f"no patient could be scored ({len(result.failures)} failed: {result.failures[0]['reason']})")
    return result


def _check_extra_sources(rows: Sequence[Row], model) -> list[str]:
    """UserError when a `model` is given and the CSV's source_2, … columns are not its extra
    sources (`channels.check_extra_columns`); the notes say what the extra sources were used for."""
    from medgan_tf.serving.channels import check_extra_columns

    given = len(rows[0].extra_sources) if rows else 0
    if model is not None:
        check_extra_columns(f"--pairs {rows[0].csv or 'CSV'}", given, tuple(model.config.data.extra_source_modalities))
    if not given:
        return []
    if model is None:
        return ["the CSV's extra source columns were not used: without --model nothing is translated"]
    return ["the model read every source column; the input row and the baselines use the first source only"]


def _score_case(result: VolumeEvaluation, row: Row, model, baselines, batch_size: int, tile_overlap: float,
                registration: Any = None, tta: str = "none", translated: Mapping[int, Any] | None = None) -> None:
    task = result.definition or tasks.get(result.task)
    data = task.data
    extras = tuple(model.config.data.extra_source_modalities) if model is not None else ()
    case = load_case(row, data.target_modality, data.source_modality, need_source=model is not None,
                     extra_modalities=extras, registration=registration)
    result.unit = result.unit or case.target_volume.unit
    if case.source_volume is not None and task.same_unit:
        _check_units(row, "source", case.source_volume.unit, case.target_volume.unit)
    protocol = PROTOCOLS.get(result.protocol)
    mask, mask_note = _mask_for(case, protocol, data.target_modality)
    factor, suv_note = suv_factor(case.row, case.target_volume.unit)
    known, factor = factor is not None, factor if factor is not None else 1.0
    kwargs = _protocol_inputs(case, protocol, factor, task)
    candidates, uncertainty = _candidates(case, model, result.rows, baselines, batch_size, tile_overlap, tta,
                                          translated)
    try:
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant volume: named in a note, not a warning
            scores = {name: protocol.function(array, case.target, mask, **kwargs) for name, array in candidates.items()}
        if uncertainty is not None:
            scores["model"].update(uncertainty_scores(candidates["model"], case.target, uncertainty, mask))
    except ValueError as error:
        raise UserError(f"patient {row.patient_id}: {error}") from None
    undefined = sorted({metric for values in scores.values() for metric, value in values.items()
                        if isinstance(value, float) and math.isnan(value)})
    if undefined and float(np.ptp(case.target)) == 0:
        result.notes.append(f"patient {row.patient_id}: the target holds one value ({float(case.target.flat[0]):g}); "
                            f"{', '.join(undefined)} against its range or peak are undefined (nan)")
    result.per_patient.append({"patient_id": row.patient_id, "mask": mask_note, "suv": suv_note,
                               "suv_known": known, "scores": scores,
                               **({"registration": case.registration} if case.registration is not None else {})})
    _keep_for_figures(result, case, candidates, mask, factor, uncertainty)


def _check_units(row: Row, what: str, unit: str, target_unit: str) -> None:
    """Same-unit comparisons only: a source in Bq/ml against a target in SUV would score the unit."""
    if unit != target_unit and "a.u." not in (unit, target_unit):
        raise UserError(f"patient {row.patient_id}: the {what} is in {unit} but the target in {target_unit}; "
                        "give both in one unit (e.g. both DICOM with SUV headers, or both Bq/ml)")


def _keep_for_figures(result: VolumeEvaluation, case: Case, candidates, mask, factor: float,
                      uncertainty: np.ndarray | None = None) -> None:
    """The first patient's volumes for the three-plane figure; voxel samples for the histogram;
    per-region SUVmean of target and model for the Bland–Altman plot (`factor`: SUV per unit)."""
    inside = mask if mask is not None else np.ones(case.target.shape, dtype=bool)
    if not result.figure:
        source = candidates.get("input")
        if source is None and case.source_volume is not None:
            source = case.source_on_target()
        result.figure = {"patient_id": case.row.patient_id, "input": source, "output": candidates["model"],
                         "target": case.target, "mask": mask, "spacing": case.spacing_zyx,
                         "uncertainty": uncertainty}
    rng = np.random.default_rng(len(result.per_patient))
    index = np.flatnonzero(inside)
    index = rng.choice(index, min(index.size, HISTOGRAM_SAMPLES), replace=False) if index.size else index
    result.histogram["output"].append(candidates["model"].ravel()[index])
    result.histogram["target"].append(case.target.ravel()[index])
    if case.labels is not None:
        for label in np.unique(case.labels[case.labels > 0]):
            region = case.labels == label
            result.regions.append({"patient_id": case.row.patient_id, "label": int(label),
                                   "target_suvmean": float(case.target[region].mean() * factor),
                                   "model_suvmean": float(candidates["model"][region].mean() * factor)})
