"""Scoring translated slices with every metric of the metric table (`medgan_tf.metrics.METRICS`).

This module does not care where predictions come from: `evaluate_slices` takes an iterable of slice
records and any `predict_fn` (a Keras model, a SavedModel signature, an oracle in tests), scores the
model output *and* the untouched input against the target (the two rows of the report), and
aggregates per patient and overall. `medgan_tf.evaluation.reports` turns the result into files.

Non-finite numbers: the PSNR of a slice reproduced exactly is +inf. JSON has no infinity, so it is
written as null (a per-slice `psnr` of null always means +inf; see `EvaluationResult.from_dict`).
Summaries average PSNR over the finite slices only and count the others in `n_infinite`; when every
slice is exact the mean is +inf (null in JSON, "∞" in Markdown).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medgan_tf import metrics
from medgan_tf.errors import UserError
from medgan_tf.evaluation.protocols import records_protocol

# Rows of every report: the model's output and the untouched input, each scored against the target.
ROLES = ("output", "input")


def report_columns() -> tuple[str, ...]:
    """Columns of every per-slice report: the columns of the protocol that scores records (the
    paper's), in table order (read at call time, so a metric registered by a plug-in appears in
    the reports)."""
    return records_protocol().metrics

Summary = dict[str, Any]  # {"mean", "sd", "median": float | None, "n": int, "n_infinite": int}
PredictFn = Callable[[np.ndarray], Any]
DenormalizeFn = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


@dataclasses.dataclass
class SliceScores:
    """Metric values of one slice: `output` = model output vs target, `input` = source vs target.

    Each dict maps every name of `report_columns()` to a float, or None when the metric is unavailable
    (LPIPS; MAE without a de-normalization function)."""

    patient_key: str
    slice_index: int
    output: dict[str, float | None]
    input: dict[str, float | None]


@dataclasses.dataclass
class ExampleSlice:
    """One slice kept for the figure; images are (S, S) float32 in the normalized range [-1, 1]."""

    patient_key: str
    slice_index: int
    source: np.ndarray
    output: np.ndarray
    target: np.ndarray


@dataclasses.dataclass
class EvaluationResult:
    """Per-slice scores plus a few example slices; summaries are derived on demand."""

    slices: list[SliceScores]
    examples: list[ExampleSlice] = dataclasses.field(default_factory=list)
    unit: str | None = None
    lpips_available: bool = False
    lpips_reason: str = ""
    # Classical baselines scored on the same slices: {name: [per-slice scores, in `slices` order]}
    # and {name: what was fitted} (`medgan_tf.evaluation.baselines`).
    baselines: dict[str, list[dict[str, float | None]]] = dataclasses.field(default_factory=dict)
    baseline_descriptions: dict[str, str] = dataclasses.field(default_factory=dict)
    # Adjacent-slice consistency of output vs target (`evaluation.consistency.slice_consistency`),
    # set by `evaluate_dataset`; kept beside metrics.json as slice_consistency.json.
    slice_consistency: dict[str, Any] | None = None

    @property
    def rows(self) -> list[str]:
        """The summary's rows: "output", "input", then the baselines (as `VolumeEvaluation.rows`)."""
        return [*ROLES, *self.baselines]

    def metric_keys(self) -> list[str]:
        """The summary's columns (as `VolumeEvaluation.metric_keys`): `report_columns()`."""
        return list(report_columns())

    def summary(self) -> dict[str, dict[str, Summary]]:
        """{row: {metric: Summary}} over all slices (mean ± sample sd), rows `self.rows` — the
        shape of `VolumeEvaluation.summary`, so `tables.markdown_table` formats either."""
        summary = _summarize_slices(self.slices)
        for name, rows in self.baselines.items():
            summary[name] = {metric: summarize(row.get(metric) for row in rows) for metric in report_columns()}
        return summary

    def per_patient(self) -> dict[str, dict[str, Any]]:
        """{patient_key: {"num_slices": n, "output": {...}, "input": {...}}}, patients sorted."""
        groups: dict[str, list[SliceScores]] = {}
        for scores in self.slices:
            groups.setdefault(scores.patient_key, []).append(scores)
        return {
            key: {"num_slices": len(groups[key]), **_summarize_slices(groups[key])} for key in sorted(groups)
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (non-finite numbers become None); the content of metrics.json."""
        return json_safe(
            {
                "unit": self.unit,
                "data_range": metrics.DATA_RANGE,
                "metric_names": list(report_columns()),
                "num_slices": len(self.slices),
                "num_patients": len({scores.patient_key for scores in self.slices}),
                "lpips": {"available": self.lpips_available, "reason": self.lpips_reason},
                "notes": {
                    "scale": "ssim, psnr, mse, vif, uqi on the 0-255 scale; mae in physical units (`unit`)",
                    "rows": "output = model output vs target; input = untouched source vs target",
                    "psnr_null": "a per-slice psnr of null is +inf (slice reproduced exactly); summaries "
                    "average finite values and count the others in n_infinite",
                    "sd": "sample standard deviation (ddof=1); null when fewer than 2 finite values",
                },
                "summary": self.summary(),
                "per_patient": self.per_patient(),
                "slices": [dataclasses.asdict(scores) for scores in self.slices],
                "baselines": {name: {"description": self.baseline_descriptions.get(name, ""), "slices": rows}
                              for name, rows in self.baselines.items()},
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild from `to_dict` / metrics.json output (example images are not stored there)."""
        slices = []
        for entry in data["slices"]:
            rows = {}
            for role in ROLES:
                row = dict(entry[role])
                if row.get("psnr", 0.0) is None:
                    row["psnr"] = math.inf
                rows[role] = row
            slices.append(SliceScores(entry["patient_key"], int(entry["slice_index"]), rows["output"], rows["input"]))
        lpips = data.get("lpips", {})
        baselines = {name: [{k: (math.inf if k == "psnr" and v is None else v) for k, v in row.items()}
                            for row in entry["slices"]] for name, entry in data.get("baselines", {}).items()}
        return cls(
            slices=slices,
            unit=data.get("unit"),
            lpips_available=bool(lpips.get("available", False)),
            lpips_reason=lpips.get("reason", ""),
            baselines=baselines,
            baseline_descriptions={name: entry.get("description", "") for name, entry in data.get("baselines", {}).items()},
        )


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean ± sample sd of the finite values; None entries (unavailable) are skipped, ±inf counted.

    Returns {"mean", "sd", "median", "n", "n_infinite"}: n counts finite values; mean (and median)
    is None when there are no values at all and +inf when every value is +inf; sd is None below 2
    finite values; the median is over all present values (an infinite one counts as the largest)."""
    present = [float(value) for value in values if value is not None]
    finite = np.array([value for value in present if math.isfinite(value)], dtype=np.float64)
    infinite = [value for value in present if not math.isfinite(value)]
    if finite.size:
        mean: float | None = float(finite.mean())
    elif infinite:
        mean = math.inf if all(value > 0 for value in infinite) else math.nan
    else:
        mean = None
    sd = float(finite.std(ddof=1)) if finite.size >= 2 else None
    ordered = sorted(value for value in present if not math.isnan(value))
    median = None if not ordered else (mean if not finite.size else float(np.median(ordered)))
    return {"mean": mean, "sd": sd, "median": median, "n": int(finite.size), "n_infinite": len(infinite)}


def _summarize_slices(slices: Sequence[SliceScores]) -> dict[str, dict[str, Summary]]:
    return {
        role: {name: summarize(getattr(scores, role).get(name) for scores in slices) for name in report_columns()}
        for role in ROLES
    }


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers and non-finite floats as None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def as_slice(image: Any, what: str) -> np.ndarray:
    """(S, S) or (S, S, 1) array → float32 (S, S)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise UserError(f"{what} must be one slice of shape (S, S, 1); received shape {np.shape(image)}")
    return array


def score_slice(
    candidate: np.ndarray,
    target: np.ndarray,
    record: Mapping[str, Any],
    denormalize_fn: DenormalizeFn | None,
) -> dict[str, float | None]:
    """Every metric of the table for one normalized (S, S) candidate against the normalized
    target: 0–255-scale metrics on `to_255` images, physical ones on de-normalized images (None
    without `denormalize_fn`), None for metrics that cannot be computed here (LPIPS, or VIF on
    slices smaller than its 41×41 minimum)."""
    scores: dict[str, float | None] = {}
    physical = None
    for name in report_columns():
        metric = metrics.METRICS.get(name)
        if metric.function is None or metric.minimum_size > min(np.shape(target)[:2]):
            scores[name] = None
        elif metric.scale == "physical":
            if denormalize_fn is not None and physical is None:
                physical = (denormalize_fn(candidate[..., None], record)[..., 0], denormalize_fn(target[..., None], record)[..., 0])
            scores[name] = None if physical is None else float(metric.function(*physical))
        else:
            scores[name] = float(metric.function(metrics.to_255(candidate), metrics.to_255(target)))
    return scores


def _predict_batch(predict_fn: PredictFn, sources: np.ndarray) -> np.ndarray:
    """Run predict_fn on a (B, S, S, 1) batch and check it returns (B, S, S, 1) (or (B, S, S))."""
    predictions = predict_fn(sources)
    if isinstance(predictions, Mapping):
        if len(predictions) != 1:
            raise UserError(
                f"predict_fn returned a dict with keys {sorted(predictions)}; expected one output tensor"
            )
        (predictions,) = predictions.values()
    predictions = np.asarray(predictions, dtype=np.float32)
    if predictions.shape == sources.shape[:3]:
        predictions = predictions[..., None]
    if predictions.shape != sources.shape:
        raise UserError(
            f"predict_fn returned shape {predictions.shape} for an input batch of shape {sources.shape}; "
            "expected the same shape"
        )
    return predictions


def evaluate_slices(
    records: Iterable[Mapping[str, Any]],
    predict_fn: PredictFn,
    batch_size: int,
    denormalize_fn: DenormalizeFn | None = None,
    *,
    unit: str | None = None,
    source_in_target_units: bool = False,
    num_examples: int = 8,
    seed: int = 0,
) -> EvaluationResult:
    """Score every slice of `records` for the model output and for the untouched input.

    records: dicts with "source" and "target" ((S, S, 1) float32 in [-1, 1]), "patient_key" and
      "slice_index"; any other keys (e.g. normalization parameters) are passed to `denormalize_fn`.
    predict_fn: (B, S, S, 1) float32 batch → outputs of the same shape (a dict with a single entry,
      as a SavedModel signature returns, is accepted too).
    batch_size: slices per predict_fn call (the last batch may be smaller).
    denormalize_fn: (image (S, S, 1) in [-1, 1], record) → image in physical units of the *target*
      modality; when given, MAE in `unit` is reported for the output, and for the input as well if
      `source_in_target_units` (denoising, motion correction: source and target share units).
    num_examples: slices kept for the figure, a uniform random sample (reservoir, `seed`) so the
      same records give the same slices for every method.

    Returns an EvaluationResult with per-slice scores in record order; metrics on the 0–255 scale.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1; received {batch_size}")
    available, reason = metrics.METRICS.get("lpips").available()
    random = np.random.default_rng(seed)
    slices: list[SliceScores] = []
    examples: list[ExampleSlice] = []
    seen = 0

    def score_batch(batch: list[Mapping[str, Any]]) -> None:
        nonlocal seen
        sources = [as_slice(record["source"], "record['source']") for record in batch]
        if len({source.shape for source in sources}) != 1:
            raise UserError(f"slices in one batch must share a size; received {[s.shape for s in sources]}")
        outputs = _predict_batch(predict_fn, np.stack(sources)[..., None])[..., 0]
        for record, source, output in zip(batch, sources, outputs):
            target = as_slice(record["target"], "record['target']")
            if target.shape != source.shape:
                raise UserError(f"target shape {target.shape} differs from source shape {source.shape}")
            input_denormalize = denormalize_fn if source_in_target_units else None
            scores = SliceScores(
                patient_key=str(record["patient_key"]),
                slice_index=int(record["slice_index"]),
                output=score_slice(output, target, record, denormalize_fn),
                input=score_slice(source, target, record, input_denormalize),
            )
            slices.append(scores)
            example = ExampleSlice(scores.patient_key, scores.slice_index, source, output, target)
            # Reservoir sampling (algorithm R): every slice is kept with equal probability.
            if len(examples) < num_examples:
                examples.append(example)
            elif num_examples > 0:
                slot = int(random.integers(0, seen + 1))
                if slot < num_examples:
                    examples[slot] = example
            seen += 1

    batch: list[Mapping[str, Any]] = []
    for record in records:
        missing = [key for key in ("source", "target", "patient_key", "slice_index") if key not in record]
        if missing:
            raise UserError(f"slice record is missing {missing}; received keys {sorted(record)}")
        batch.append(record)
        if len(batch) == batch_size:
            score_batch(batch)
            batch = []
    if batch:
        score_batch(batch)
    if not slices:
        raise UserError("no slices to evaluate: the record iterable was empty")
    examples.sort(key=lambda example: (example.patient_key, example.slice_index))
    return EvaluationResult(slices, examples, unit, available, reason)
