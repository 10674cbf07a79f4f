"""The paper-comparison report: Tables I/II (table.md), Figs. 4/5 (figure.png), Fig. 6
(ublocks.png) and results.json, from the runs `medgan_tf.workflows.reproduce` trained and scored.

Outputs in OUT:
  table.md      — Table I (loss ablations) and Table II (state of the art) layout: the paper's
                  metrics per method (mean over validation slices; LPIPS "n/a" when its weights
                  are unavailable), the untouched input as a reference row;
  figure.png    — Fig. 4/5 layout: rows input, each method, target; columns the same slices;
  results.json  — one row per method (every metric's mean, sd, n), the settings, the sweep;
  ublocks.png   — with an U-block sweep: Fig. 6, pix2pix metrics vs CasNet depth (and ublocks in
                  table.md / results.json).
Which recipe belongs to which table, and its display name, come from the recipes
(`medgan_tf.presets`); the columns from the metric table (`medgan_tf.metrics`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgan_tf import presets
from medgan_tf.errors import UserError
from medgan_tf.evaluation.figures import save_comparison_figure
from medgan_tf.evaluation.tables import markdown_table
from medgan_tf.evaluation.scoring import json_safe
from medgan_tf.metrics import METRICS, metric_names

log = logging.getLogger(__name__)

SWEEP_MODEL = "pix2pix"
TABLE_TITLES = {"I": "loss components (single U-block; MedGAN: CasNet-6)", "II": "state-of-the-art methods"}


def table_metrics() -> tuple[str, ...]:
    """The columns of the paper's Tables I/II."""
    return metric_names(paper=True)


def write_comparison(out_dir: Path, settings, entries, rows: dict[str, dict], outcomes: dict[str, dict],
                     sweep_runs: dict[int, str], data_dir: Path, wall_seconds: float) -> dict:
    """Write table.md, figure.png, ublocks.png (with a sweep) and results.json; return results.json."""
    from medgan_tf.training.checkpoints import write_json_atomic

    labels = {entry.name: entry.label for entry in entries}
    run_models = {entry.name: entry.model for entry in entries}
    results = {name: outcome["result"] for name, outcome in outcomes.items()}
    method_names = [entry.name for entry in entries if entry.num_ublocks is None]
    summaries = {name: results[name].summary()["output"] for name in results}
    reference = results[entries[0].name]
    input_summary = reference.summary()["input"]
    lpips_reason = None if reference.lpips_available else (reference.lpips_reason or "LPIPS weights unavailable")
    sweep = {depth: summaries[name] for depth, name in sweep_runs.items()}

    paths = {"results": out_dir / "results.json", "table": out_dir / "table.md"}
    (out_dir / "table.md").write_text(
        table_markdown(settings, labels, {name: summaries[name] for name in method_names}, input_summary,
                       lpips_reason, sweep or None, run_models), encoding="utf-8")
    if method_names:
        paths["figure"] = out_dir / "figure.png"
        save_figure(paths["figure"], labels, {name: results[name] for name in method_names},
                    title=f"{settings.task}: {settings.budget_steps} steps per method")
    if sweep:
        paths["ublocks_figure"] = out_dir / "ublocks.png"
        save_sweep_figure(paths["ublocks_figure"], sweep,
                          title=f"{presets.MODELS.get(SWEEP_MODEL).display_name} vs CasNet depth")
    payload = json_safe({
        "settings": dataclasses.asdict(settings),
        "data_dir": str(data_dir),
        "lpips": {"available": reference.lpips_available, "reason": reference.lpips_reason},
        "rows": [rows[name] for name in method_names],
        "input": {"method": "input (untouched)", "metrics": input_summary},
        "ublocks_sweep": [{**rows[name], "num_ublocks": depth} for depth, name in sweep_runs.items()],
        "files": {key: str(path) for key, path in paths.items()},
        "wall_seconds": wall_seconds,
    })
    write_json_atomic(paths["results"], payload)
    log.info("report: %s, %s%s", paths["table"], paths["results"], f", {paths['figure']}" if "figure" in paths else "")
    return payload


def _metric_means(summary: dict[str, dict]) -> dict[str, float | None]:
    out = {}
    for name in table_metrics():
        mean = summary.get(name, {}).get("mean")
        out[name] = None if mean is None or not math.isfinite(mean) else float(mean)
    return out


def table_markdown(settings, labels: dict[str, str], summaries: dict[str, dict], input_summary: dict,
                   lpips_reason: str | None, sweep: dict[int, dict] | None,
                   run_models: dict[str, str] | None = None) -> str:
    """table.md: Tables I and II (the groups present among the runs), then the U-block sweep.
    run_models maps a run name to its registered recipe when they differ."""
    run_models = run_models or {}
    def table(names: Sequence[str]) -> str:
        rows = {labels[name]: summaries[name] for name in names}
        rows["input (untouched)"] = input_summary
        return markdown_table(rows, show_sd=False, columns=table_metrics())

    vgg_note = vgg_weights_note(settings.vgg_weights)
    parts = [
        f"# Comparison on {settings.task}\n",
        f"Every method: {settings.budget_steps} training steps (batch {settings.batch_size}, N_G = 3 generator "
        f"updates per step), seed {settings.seed}, {settings.image_size}² slices, base width {settings.base_filters}; "
        f"scored on the `{settings.eval_split}` split. Means over slices; SSIM, PSNR (dB), MSE, VIF and UQI on the "
        f"0–255 scale. {vgg_note} "
        + (f"LPIPS: n/a — {lpips_reason}." if lpips_reason else "") + "\n",
    ]
    ordered = [name for name in presets.MODELS.names() if name in summaries] + [
        name for name in summaries if name not in presets.MODELS]
    groups = presets.tables([run_models.get(name, name) for name in summaries])
    group_one = [name for name in summaries if run_models.get(name, name) in groups.get("I", [])]
    group_two = [name for name in summaries if run_models.get(name, name) in groups.get("II", [])]
    if len(group_one) > 1 or (group_one and not group_two):
        parts += [f"## Table I — {TABLE_TITLES['I']}\n", table(group_one)]
    if len(group_two) > 1 or (group_two and not group_one):
        parts += [f"## Table II — {TABLE_TITLES['II']}\n", table(group_two)]
    others = [name for name in ordered if name not in group_one and name not in group_two]
    if others:
        parts += ["## Other variants\n", table(others)]
    parts += ["## All methods\n", table(ordered)]
    if sweep:
        rows = {f"CasNet-{depth}": summary for depth, summary in sorted(sweep.items())}
        parts += [f"## Fig. 6 — {presets.MODELS.get(SWEEP_MODEL).display_name} vs number of U-blocks\n",
                  markdown_table(rows, show_sd=False, columns=table_metrics())]
    return "\n".join(parts)



def vgg_weights_note(vgg_weights: str) -> str:
    """One sentence for the report on which VGG-19 weights the style/content terms used."""
    random_note = "RANDOM — the style/content terms (Style-content, MedGAN, ID-CGAN, Fila-sGAN) are not the paper's"
    if vgg_weights == "none":
        return f"VGG-19 weights: {random_note}."
    if vgg_weights == "auto":
        # `auto` used ImageNet exactly when Keras had (or could fetch) the file into its cache.
        from medgan_tf.models.feature_extractor import imagenet_weights_file

        if Path(imagenet_weights_file()).is_file():
            return "VGG-19 weights: ImageNet (Keras cache)."
        return f"VGG-19 weights: {random_note} (`auto`: ImageNet weights were not obtainable on this machine)."
    return f"VGG-19 weights: {vgg_weights}."


def save_sweep_figure(path: Path, sweep: dict[int, dict], title: str = "") -> None:
    """ublocks.png (Fig. 6): one panel per available metric, value vs number of U-blocks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    depths = sorted(sweep)
    names = [name for name in table_metrics() if any(_metric_means(sweep[d])[name] is not None for d in depths)]
    figure = Figure(figsize=(3.0 * len(names), 3.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for axis, name in zip(axes, names):
        values = [_metric_means(sweep[d])[name] for d in depths]
        axis.plot(depths, [np.nan if v is None else v for v in values], marker="o")
        axis.set_title(METRICS.get(name).title)
        axis.set_xlabel("number of U-blocks")
        axis.set_xticks(depths)
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.savefig(str(path), dpi=100)


def save_figure(path: Path, labels: dict[str, str], results: dict[str, Any], title: str) -> None:
    """figure.png (Fig. 4/5): rows input, each method, target; columns the same validation slices."""
    names = list(results)
    first = results[names[0]].examples
    keys = [(example.patient_key, example.slice_index) for example in first]
    for name in names[1:]:
        other = [(example.patient_key, example.slice_index) for example in results[name].examples]
        if other != keys:
            raise UserError(f"{name} was scored on other example slices ({other}) than {names[0]} ({keys}); "
                            "re-run its evaluation by deleting its evaluation/ folder")
    save_comparison_figure(
        path,
        inputs=[example.source for example in first],
        targets=[example.target for example in first],
        outputs={labels[name]: [example.output for example in results[name].examples] for name in names},
        column_titles=[f"{key[:8]} · slice {index}" for key, index in keys],
        title=title,
    )


