"""Evaluation reports: Markdown tables like the paper's Tables I/II, and the report folder.

`write_report` writes, atomically (a reader never sees half a file):

  metrics.json  — every slice, every patient, the summary, and LPIPS availability;
  metrics.md    — a table like the paper's Table II (rows model / input);
  figure.png    — K slices as rows: input | output | target | |error|.

The tables are `medgan_tf.evaluation.tables`' (titles and number formats from the metric table
`medgan_tf.metrics.METRICS`).
"""

from __future__ import annotations

import json
import os

from medgan_tf.files import write_text_atomic
from medgan_tf.evaluation.figures import save_slice_figure
from medgan_tf.evaluation.scoring import EvaluationResult
from medgan_tf.evaluation.tables import markdown_table


def report_markdown(result: EvaluationResult, *, title: str) -> str:
    """metrics.md: the Table II-style summary (model, untouched input and the classical baselines,
    each described) and a per-patient table."""
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
        markdown_table({"model": summary["output"], "input (untouched)": summary["input"],
                        **{name: summary[name] for name in result.baselines}}, unit=result.unit),
        *(f"- `{name}`: {text}\n" for name, text in result.baseline_descriptions.items()),
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
    write_text_atomic(paths["json"], json.dumps({"title": title, **result.to_dict()}, indent=2, allow_nan=False) + "\n")
    write_text_atomic(paths["markdown"], report_markdown(result, title=title))
    shown = result.examples[: max(0, figure_slices)]
    if shown:
        paths["figure"] = os.path.join(out_dir, "figure.png")
        save_slice_figure(shown, paths["figure"], title=title)
    return paths
