"""Scoring translated slices with the paper's metrics and writing the evaluation report.

This module does not care where predictions come from: `evaluate_slices` takes an iterable of slice
records and any `predict_fn` (a Keras model, a SavedModel signature, an oracle in tests), scores the
model output *and* the untouched input against the target (the two rows of the report), and
aggregates per patient and overall. `write_report` turns the result into

  metrics.json  — every slice, every patient, the summary, and LPIPS availability;
  metrics.md    — a table like the paper's Table II (rows model / input);
  figure.png    — K slices as rows: input | output | target | |error|.

`markdown_table` and `save_comparison_figure` are the multi-method versions for Table I/II style
comparisons (one row per method).

Non-finite numbers: the PSNR of a slice reproduced exactly is +inf. JSON has no infinity, so it is
written as null (a per-slice `psnr` of null always means +inf; see `EvaluationResult.from_dict`).
Summaries average PSNR over the finite slices only and count the others in `n_infinite`; when every
slice is exact the mean is +inf (null in JSON, "∞" in Markdown).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medgan_tf import metrics
from medgan_tf.errors import UserError

# Rows of every report: the model's output and the untouched input, each scored against the target.
ROLES = ("output", "input")
# Columns of every report: the paper's six metrics, then MAE in physical units.
REPORT_COLUMNS = metrics.METRIC_NAMES + ("mae",)
_COLUMN_TITLES = {
    "ssim": "SSIM",
    "psnr": "PSNR(dB)",
    "mse": "MSE",
    "vif": "VIF",
    "uqi": "UQI",
    "lpips": "LPIPS",
    "mae": "MAE",
}
_COLUMN_FORMATS = {"ssim": ".4f", "psnr": ".2f", "mse": ".2f", "vif": ".4f", "uqi": ".4f", "lpips": ".4f", "mae": ".4g"}

Summary = dict[str, Any]  # {"mean": float | None, "sd": float | None, "n": int, "n_infinite": int}
PredictFn = Callable[[np.ndarray], Any]
DenormalizeFn = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


@dataclasses.dataclass
class SliceScores:
    """Metric values of one slice: `output` = model output vs target, `input` = source vs target.

    Each dict maps every name in REPORT_COLUMNS to a float, or None when the metric is unavailable
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

    def summary(self) -> dict[str, dict[str, Summary]]:
        """{"output" | "input": {metric: Summary}} over all slices (mean ± sample sd)."""
        return _summarize_slices(self.slices)

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
                "metric_names": list(REPORT_COLUMNS),
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
        return cls(
            slices=slices,
            unit=data.get("unit"),
            lpips_available=bool(lpips.get("available", False)),
            lpips_reason=lpips.get("reason", ""),
        )


def summarize(values: Iterable[float | None]) -> Summary:
    """Mean ± sample sd of the finite values; None entries (unavailable) are skipped, ±inf counted.

    Returns {"mean", "sd", "n", "n_infinite"}: n counts finite values; mean is None when there are
    no values at all and +inf when every value is +inf; sd is None below 2 finite values."""
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
    return {"mean": mean, "sd": sd, "n": int(finite.size), "n_infinite": len(infinite)}


def _summarize_slices(slices: Sequence[SliceScores]) -> dict[str, dict[str, Summary]]:
    return {
        role: {name: summarize(getattr(scores, role).get(name) for scores in slices) for name in REPORT_COLUMNS}
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


def _as_slice(image: Any, what: str) -> np.ndarray:
    """(S, S) or (S, S, 1) array → float32 (S, S)."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise UserError(f"{what} must be one slice of shape (S, S, 1); received shape {np.shape(image)}")
    return array


def _score(
    candidate: np.ndarray,
    target: np.ndarray,
    record: Mapping[str, Any],
    denormalize_fn: DenormalizeFn | None,
) -> dict[str, float | None]:
    """All report columns for one normalized (S, S) candidate against the normalized target."""
    scores: dict[str, float | None] = dict(metrics.slice_metrics(metrics.to_255(candidate), metrics.to_255(target)))
    scores["lpips"] = None
    scores["mae"] = None
    if denormalize_fn is not None:
        scores["mae"] = metrics.mae_physical(
            denormalize_fn(candidate[..., None], record), denormalize_fn(target[..., None], record)
        )
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
    available, reason = metrics.lpips_availability()
    random = np.random.default_rng(seed)
    slices: list[SliceScores] = []
    examples: list[ExampleSlice] = []
    seen = 0

    def score_batch(batch: list[Mapping[str, Any]]) -> None:
        nonlocal seen
        sources = [_as_slice(record["source"], "record['source']") for record in batch]
        if len({source.shape for source in sources}) != 1:
            raise UserError(f"slices in one batch must share a size; received {[s.shape for s in sources]}")
        outputs = _predict_batch(predict_fn, np.stack(sources)[..., None])[..., 0]
        for record, source, output in zip(batch, sources, outputs):
            target = _as_slice(record["target"], "record['target']")
            if target.shape != source.shape:
                raise UserError(f"target shape {target.shape} differs from source shape {source.shape}")
            input_denormalize = denormalize_fn if source_in_target_units else None
            scores = SliceScores(
                patient_key=str(record["patient_key"]),
                slice_index=int(record["slice_index"]),
                output=_score(output, target, record, denormalize_fn),
                input=_score(source, target, record, input_denormalize),
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


def _format_cell(summary: Summary | None, name: str, show_sd: bool) -> str:
    if summary is None or summary.get("mean") is None:
        return "n/a"
    mean = summary["mean"]
    if math.isinf(mean):
        return "∞"
    if math.isnan(mean):
        return "nan"
    spec = _COLUMN_FORMATS[name]
    text = format(mean, spec)
    if show_sd and summary.get("sd") is not None:
        text += f" ± {format(summary['sd'], spec)}"
    if summary.get("n_infinite"):
        text += f" ({summary['n_infinite']}×∞)"
    return text


def markdown_table(
    rows: Mapping[str, Mapping[str, Summary]],
    *,
    unit: str | None = None,
    show_sd: bool = True,
    columns: Sequence[str] = REPORT_COLUMNS,
) -> str:
    """A Markdown table like the paper's Tables I/II: one row per method, one column per metric.

    rows: {method name: {metric name: Summary}} (e.g. `result.summary()["output"]` per method).
    Cells read "mean ± sd"; "n/a" when the metric is unavailable, "∞" for an all-infinite PSNR.
    The MAE header carries `unit`, e.g. "MAE (HU)".
    """
    unknown = [name for name in columns if name not in _COLUMN_TITLES]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; valid ones are {list(_COLUMN_TITLES)}")
    titles = [
        f"MAE ({unit})" if name == "mae" and unit else _COLUMN_TITLES[name] for name in columns
    ]
    lines = [
        "| Method | " + " | ".join(titles) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for method, summaries in rows.items():
        cells = [_format_cell(summaries.get(name), name, show_sd) for name in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _new_figure(num_rows: int, num_columns: int, cell_inches: float = 2.4):
    # Figure + Agg canvas directly, without pyplot: no global backend switch or figure registry,
    # so this is safe inside any process (CLI, tests, Beam workers).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(cell_inches * num_columns, cell_inches * num_rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(num_rows, num_columns, squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    return figure, axes


def save_slice_figure(
    examples: Sequence[ExampleSlice],
    path: str | os.PathLike,
    *,
    title: str = "",
    dpi: int = 100,
) -> None:
    """figure.png: one row per slice, columns input | output | target | |output − target|.

    Images are shown on the 0–255 scale in gray; the error in 0–255 units with one shared color
    scale (up to the 99.5th percentile of all shown errors) and a color bar.
    """
    if not examples:
        raise ValueError("save_slice_figure needs at least one example slice")
    errors = [np.abs(metrics.to_255(example.output) - metrics.to_255(example.target)) for example in examples]
    error_limit = max(1.0, float(np.percentile(np.concatenate([error.ravel() for error in errors]), 99.5)))
    figure, axes = _new_figure(len(examples), 4)
    for row, (example, error) in enumerate(zip(examples, errors)):
        images = (example.source, example.output, example.target)
        for column, image in enumerate(images):
            axes[row, column].imshow(metrics.to_255(image), cmap="gray", vmin=0, vmax=255)
        error_image = axes[row, 3].imshow(error, cmap="inferno", vmin=0, vmax=error_limit)
        axes[row, 0].set_ylabel(f"{example.patient_key}\nslice {example.slice_index}", fontsize=8)
    for column, name in enumerate(("input", "output", "target", "|error| (0–255)")):
        axes[0, column].set_title(name, fontsize=10)
    figure.colorbar(error_image, ax=axes[:, 3].tolist(), shrink=0.8)
    if title:
        figure.suptitle(title)
    figure.savefig(os.fspath(path), dpi=dpi)


def save_comparison_figure(
    path: str | os.PathLike,
    *,
    inputs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    outputs: Mapping[str, Sequence[np.ndarray]],
    column_titles: Sequence[str] | None = None,
    title: str = "",
    dpi: int = 100,
) -> None:
    """Multi-method figure (paper Figs. 4/5): rows input, each method, target; columns = slices.

    inputs, targets: K normalized slices ((S, S) or (S, S, 1) in [-1, 1]); outputs: {method name:
    the same K slices as that method translated them}; column_titles: K labels (e.g. patient/slice).
    """
    num_slices = len(inputs)
    if num_slices == 0 or len(targets) != num_slices:
        raise ValueError(f"need the same K ≥ 1 inputs and targets; received {len(inputs)} and {len(targets)}")
    for method, images in outputs.items():
        if len(images) != num_slices:
            raise ValueError(f"method {method!r} has {len(images)} slices; expected {num_slices}")
    rows = [("input", inputs), *outputs.items(), ("target", targets)]
    figure, axes = _new_figure(len(rows), num_slices)
    for row, (name, images) in enumerate(rows):
        for column, image in enumerate(images):
            axes[row, column].imshow(metrics.to_255(_as_slice(image, name)), cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_ylabel(name, fontsize=10)
    if column_titles is not None:
        for column, label in enumerate(column_titles):
            axes[0, column].set_title(label, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.savefig(os.fspath(path), dpi=dpi)


def report_markdown(result: EvaluationResult, *, title: str) -> str:
    """metrics.md: the Table II-style summary (model vs untouched input) and a per-patient table."""
    summary = result.summary()
    per_patient = result.per_patient()
    lpips_line = (
        "LPIPS: available." if result.lpips_available else f"LPIPS: unavailable — {result.lpips_reason}."
    )
    mae_line = (
        f"MAE in physical units ({result.unit})." if result.unit else "MAE in physical units."
    ) + " n/a where no de-normalization applies (e.g. input and target in different modalities)."
    parts = [
        f"# {title}\n",
        f"{len(result.slices)} slices from {len(per_patient)} patients. SSIM, PSNR, MSE, VIF (pixel) and "
        "UQI on the 0–255 scale, mean ± sd over slices; PSNR averages the finite slices and \"(k×∞)\" "
        "counts slices reproduced exactly. " + mae_line + " " + lpips_line + "\n",
        markdown_table({"model": summary["output"], "input (untouched)": summary["input"]}, unit=result.unit),
        "## Per patient (model output)\n",
        markdown_table(
            {f"{key} ({entry['num_slices']} slices)": entry["output"] for key, entry in per_patient.items()},
            unit=result.unit,
        ),
        "## Per patient (untouched input)\n",
        markdown_table(
            {f"{key} ({entry['num_slices']} slices)": entry["input"] for key, entry in per_patient.items()},
            unit=result.unit,
        ),
    ]
    return "\n".join(parts)


def write_report(
    result: EvaluationResult,
    out_dir: str | os.PathLike,
    *,
    title: str,
    figure_slices: int = 4,
) -> dict[str, str]:
    """Write metrics.json, metrics.md and figure.png (first `figure_slices` examples) to out_dir.

    Returns {"json": path, "markdown": path, "figure": path}; "figure" is absent when the result
    holds no example slices (e.g. one rebuilt with `from_dict`).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "metrics.json"),
        "markdown": os.path.join(out_dir, "metrics.md"),
    }
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump({"title": title, **result.to_dict()}, handle, indent=2, allow_nan=False)
        handle.write("\n")
    with open(paths["markdown"], "w", encoding="utf-8") as handle:
        handle.write(report_markdown(result, title=title))
    shown = result.examples[: max(0, figure_slices)]
    if shown:
        paths["figure"] = os.path.join(out_dir, "figure.png")
        save_slice_figure(shown, paths["figure"], title=title)
    return paths
