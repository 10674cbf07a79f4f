"""Scoring a model on a converted dataset split (the records `medgan-tf convert` wrote)."""

from __future__ import annotations

import collections
import itertools
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from medgan_tf import tasks
from medgan_tf.data import context, normalization
from medgan_tf.data.dataset import iterate_records
from medgan_tf.data.manifest import manifest_task, read_manifest
from medgan_tf.errors import UserError
from medgan_tf.evaluation.consistency import SliceCollector
from medgan_tf.evaluation.scoring import EvaluationResult, evaluate_slices, score_slice
from medgan_tf.serving.loading import TranslationModel

log = logging.getLogger(__name__)

BASELINE_FIT_PATIENTS = 4  # patients of a split read to fit or choose the baselines
MAX_SLICES_PER_PATIENT = 512


def evaluate_dataset(
    model: TranslationModel,
    data_dir: str | Path,
    split: str = "val",
    *,
    batch_size: int = 8,
    num_examples: int = 8,
    max_slices: int | None = None,
    baselines: bool = False,
) -> EvaluationResult:
    """Score `model` on every record of a converted dataset's `split` (medgan_tf.evaluation).

    Returns an `EvaluationResult`: the metric table's metrics on the 0–255 scale for the
    model output and the untouched input, per slice and per patient, and MAE in the target's
    physical unit from each record's normalization parameters; `result.slice_consistency` holds
    the output's adjacent-slice consistency against the target's (`evaluation.consistency`). With
    `baselines`, the task's classical baselines (`score_record_baselines`) are scored on the same
    slices too.
    """
    manifest = read_manifest(data_dir)
    records = iterate_records(data_dir, split)
    first = next(records, None)
    if first is None:
        raise UserError(f"{data_dir}: split {split!r} holds no records")
    size = int(np.shape(first["source"])[0])
    if size != model.image_size:
        raise UserError(
            f"{data_dir} holds {size}×{size} slices; the model was trained for "
            f"{model.image_size}×{model.image_size} (convert the data with --image-size {model.image_size})"
        )
    converted_for = manifest_task(manifest)
    if converted_for is not None and converted_for != model.config.task:
        log.warning("dataset task is %s but the model's task is %s", converted_for, model.config.task)
    all_records = itertools.chain([first], records)
    if max_slices is not None:
        all_records = itertools.islice(all_records, max_slices)

    def denormalize(image: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
        return normalization.denormalize(image, record["target_params"])

    collector = SliceCollector()
    all_records, predict = _model_inputs(all_records, model, collector)
    # Input MAE is meaningful only when the source was normalized with the target's parameters.
    shared = bool(model.normalization["target"].get("share_source"))
    result = evaluate_slices(
        all_records,
        predict,
        batch_size,
        denormalize,
        unit=str(first["target_params"]["unit"]),
        source_in_target_units=shared,
        num_examples=num_examples,
    )
    # Adjacent-slice consistency of the output vs the target (evaluation.consistency).
    result.slice_consistency = collector.result()
    if baselines:
        task = tasks.from_experiment(model.config.task, model.config.data)
        score_record_baselines(result, data_dir, split, task, denormalize if shared else None, max_slices)
    return result


def _model_inputs(records: Iterable[Mapping[str, Any]], model: TranslationModel, collector: SliceCollector):
    """(records, predict_fn) for `evaluate_slices`: predict_fn feeds the model each record's input
    window (the record's own source slice for the paper's model; the 2.5D / multi-source window of
    `medgan_tf.data.context` otherwise) and hands every output to `collector`. evaluate_slices calls
    predict_fn on the records it has just read, in order, so a queue pairs batches and records."""
    data = model.config.data
    pending: collections.deque = collections.deque()

    def tracked():
        for record in records:
            pending.append(record)
            yield record

    def predict(sources: np.ndarray) -> np.ndarray:
        batch = [pending.popleft() for _ in range(len(sources))]
        if context.uses_stack(data.context_slices, data.source_channels):
            sources = np.stack([context.record_window(record, data) for record in batch]).astype(np.float32)
        outputs = np.asarray(model(sources), dtype=np.float32)
        for record, output in zip(batch, outputs):
            collector.add(record, output)
        return outputs

    return tracked(), predict


def _patient_volumes(records) -> dict[str, dict[str, Any]]:
    """Records grouped per patient: {"source", "target": (K, S, S) normalized, "records": [...]}
    with slices in slice-index order."""
    groups: dict[str, list] = {}
    for record in records:
        groups.setdefault(str(record["patient_key"]), []).append(record)
    out = {}
    for key, group in groups.items():
        group.sort(key=lambda r: int(r["slice_index"]))
        out[key] = {"records": group,
                    **{side: np.stack([np.asarray(r[side], np.float32)[..., 0] for r in group]) for side in ("source", "target")}}
    return out


def _split_pairs(data_dir, split: str, patients: int = BASELINE_FIT_PATIENTS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(source, target) normalized volumes of up to `patients` patients of `split` (none if absent)."""
    try:
        volumes = _patient_volumes(itertools.islice(iterate_records(data_dir, split), patients * MAX_SLICES_PER_PATIENT))
    except UserError as error:  # no such split, or a damaged shard: fit on the other split
        log.warning("baselines: not using the %s split (%s)", split, error)
        return []
    return [(v["source"], v["target"]) for v in list(volumes.values())[:patients]]


def score_record_baselines(result: EvaluationResult, data_dir, split: str, task: "str | tasks.Task",
                           denormalize: Callable | None, max_slices: int | None = None) -> None:
    """Add the task's classical baselines (`medgan_tf.evaluation.baselines`) to `result`, scored
    per slice like the model: patients' slices stacked into volumes (normalized units), the
    baselines fitted on the train split (intensity map) and chosen on the val split (filters),
    applied per volume and scored on the same slices. `denormalize` gives MAE in physical units
    (same-unit tasks)."""
    from medgan_tf.evaluation.baselines import fit_baselines

    records = iterate_records(data_dir, split)
    if max_slices is not None:
        records = itertools.islice(records, max_slices)
    volumes = _patient_volumes(records)
    fitted = fit_baselines(task, _split_pairs(data_dir, "train"), _split_pairs(data_dir, "val"))
    order = {(s.patient_key, s.slice_index): i for i, s in enumerate(result.slices)}
    for baseline in fitted:
        rows: list[dict] = [{} for _ in result.slices]
        for key, volume in volumes.items():
            output = baseline.apply(volume["source"])
            for record, candidate, target in zip(volume["records"], output, volume["target"]):
                rows[order[(key, int(record["slice_index"]))]] = score_slice(candidate, target, record, denormalize)
        result.baselines[baseline.name] = rows
        result.baseline_descriptions[baseline.name] = baseline.describe()
