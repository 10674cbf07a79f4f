"""Every Markdown summary table of the evaluation, with one cell formatter.

A summary is {row: {metric key: Summary}} (`EvaluationResult.summary()` for records,
`VolumeEvaluation.summary()` for volumes; a Summary is `scoring.summarize`'s {"mean", "sd",
"median", "n", "n_infinite"}). A metric key is a name of the metric table
(`medgan_tf.metrics.METRICS`: title, number format, better direction) or, for a per-region metric,
`<name>_<label>`. The two kinds of table differ only by a `Style`:

  RECORDS — "| Method |", cells "mean ± sd (k×∞)": per-slice scores, where an exactly
            reproduced slice has PSNR +inf, is left out of the mean and counted;
  VOLUMES — "| Row |", cells "mean ± sd (median m)", the best mean of each column in bold: a few
            patients per table, so the median is worth reading beside the mean.

The slice-to-slice consistency section (`consistency_table`) uses the same value formatter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from medgan_tf import metrics
from medgan_tf.evaluation.scoring import Summary, report_columns


@dataclasses.dataclass(frozen=True)
class Style:
    """How a summary table reads: see the module docstring."""

    label: str = "Method"  # header of the first column
    median: bool = False  # "(median m)" after the mean
    infinite_count: bool = True  # "(k×∞)" after a finite mean: infinite values left out of it
    best: bool = False  # bold the strictly best mean of each column


RECORDS = Style()
VOLUMES = Style(label="Row", median=True, infinite_count=False, best=True)


def metric_of(key: str) -> tuple[metrics.Metric, str]:
    """The table entry of a result key and its region label ("" for a plain column):
    "psnr" → (psnr, ""), "suvmax_3" → (suvmax, "3")."""
    if key in metrics.METRICS:
        return metrics.METRICS.get(key), ""
    base, _, label = key.rpartition("_")
    return metrics.METRICS.get(base), label


def _known(key: str) -> bool:
    base = key.rpartition("_")[0]
    return key in metrics.METRICS or (base in metrics.METRICS and metrics.METRICS.get(base).region)


def column_title(key: str, unit: str | None) -> str:
    """The metric's title; a physical metric carries the data's `unit` ("MAE (HU)"), another its
    own unit when the title lacks it; a region key names its region."""
    metric, label = metric_of(key)
    title = metric.title
    if metric.scale == "physical" and unit:  # in the data's own unit (MAE: HU, SUV, ...)
        title = f"{title} ({unit})"
    elif metric.unit and metric.unit not in title:
        title = f"{title} ({metric.unit})"
    return f"{title}, region {label}" if label else title


def format_value(value: float | None, spec: str) -> str:
    """One number with a format spec; "n/a" for None, "∞" for ±inf, "nan" for NaN."""
    if value is None:
        return "n/a"
    return "∞" if math.isinf(value) else "nan" if math.isnan(value) else format(value, spec)


def format_cell(key: str, summary: Summary | None, *, show_sd: bool = True, median: bool = False,
                infinite_count: bool = False) -> str:
    """"mean ± sd (median m) (k×∞)" with the metric's format; "n/a" without a mean. The sd and the
    count of infinite values qualify a finite mean only (an all-infinite PSNR reads "∞"); the sd
    is never signed, even for a signed format."""
    if not summary or summary.get("mean") is None:
        return "n/a"
    spec = metric_of(key)[0].format
    mean = summary["mean"]
    text = format_value(mean, spec)
    if show_sd and math.isfinite(mean) and summary.get("sd") is not None:
        text += f" ± {format_value(summary['sd'], spec).lstrip('+')}"
    if median and summary.get("median") is not None:
        text += f" (median {format_value(summary['median'], spec)})"
    if infinite_count and math.isfinite(mean) and summary.get("n_infinite"):
        text += f" ({summary['n_infinite']}×∞)"
    return text


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "---:") -> str:
    """A Markdown table; every column after the first aligned by `align`."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + f"{align}|" * (len(header) - 1)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def _best_rows(rows: Mapping[str, Mapping[str, Summary]], columns: Sequence[str]) -> dict[str, str]:
    """{column: the row with the strictly best mean} (the table's better direction; a signed
    % error of a region: closest to 0); no entry on a tie or with fewer than two means."""
    best = {}
    for key in columns:
        metric = metric_of(key)[0]
        means = {row: s[key]["mean"] for row, s in rows.items() if s.get(key) and s[key]["mean"] is not None
                 and not math.isnan(s[key]["mean"])}
        if len(means) > 1:
            score = {r: -abs(v) if metric.region else v if metric.higher_is_better else -v for r, v in means.items()}
            ranked = sorted(score.values(), reverse=True)
            if ranked[0] > ranked[1]:
                best[key] = max(score, key=score.get)
    return best


def markdown_table(
    rows: Mapping[str, Mapping[str, Summary]],
    *,
    unit: str | None = None,
    show_sd: bool = True,
    columns: Sequence[str] | None = None,
    style: Style = RECORDS,
) -> str:
    """A summary table: one line per row (method, model, input, baseline, patient), one column
    per metric key (default: the per-slice report's columns, `scoring.report_columns()`).

    rows: {row name: {metric key: Summary}}, e.g. `result.summary()["output"]` per method.
    Cells by `format_cell` in the given `style`; the physical metric's header carries `unit`.
    """
    columns = tuple(columns) if columns is not None else report_columns()
    unknown = [key for key in columns if not _known(key)]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; valid ones are {metrics.METRICS.names()}")
    best = _best_rows(rows, columns) if style.best else {}
    lines = []
    for row, summaries in rows.items():
        cells = [format_cell(key, summaries.get(key), show_sd=show_sd, median=style.median,
                             infinite_count=style.infinite_count) for key in columns]
        lines.append([row, *(f"**{c}**" if best.get(k) == row else c for k, c in zip(columns, cells))])
    return _markdown([style.label, *(column_title(key, unit) for key in columns)], lines)


def consistency_table(measures: Mapping[str, Mapping[str, Any] | None]) -> str:
    """A Markdown section comparing methods' slice-to-slice consistency ({method label: overall
    measure of `consistency.slice_consistency`}); jumps on the 0–255 scale."""
    rows = []
    for label, measure in measures.items():
        values = measure if measure and measure.get("pairs") else {}
        rows.append([label, *(format_value(values.get(key), spec) for key, spec in
                              (("output_jump", ".3f"), ("target_jump", ".3f"), ("ratio", ".3f"),
                               ("difference", "+.3f")))])
    intro = ["", "## Slice-to-slice consistency (2D vs 2.5D)", "",
             "Mean |adjacent-slice difference| on the 0–255 scale; ratio = output / target (1 = as smooth as "
             "the target), difference = output − target.", "", ""]
    return "\n".join(intro) + _markdown(["method", "output", "target", "ratio", "difference"], rows, align="---")
