"""Reports of a whole-volume evaluation (`medgan_tf.evaluation.volumes.VolumeEvaluation`).

`write_volume_report` writes, each file atomically (temporary file + rename):

  metrics.json     — protocol, rows, baselines (what was fitted), mask and SUV notes, the summary
                     (mean, sd, median over patients), every patient's scores, failures;
  per_patient.csv  — one line per patient and row (model, input, baselines), one column a metric;
  metrics.md       — the table people read: rows model / input / baselines, mean ± sd and median;
                     for a protocol with per-region metrics (pet), a per-region table of
                     SUVmean/SUVmax/activity % errors;
  slices.png       — input | output | target | |error| in the axial, coronal and sagittal planes;
  histogram.png    — intensity histogram (HU / SUV / Bq/ml) of output vs target voxels;
  bland_altman.png — per-region SUVmean of output vs target (a protocol with per-region metrics,
                     pet, and a label map).

Tables are `medgan_tf.evaluation.tables`' (style VOLUMES); titles, formats and better directions
come from the metric table `medgan_tf.metrics.METRICS`, the columns from the protocol
(`medgan_tf.evaluation.protocols`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import numpy as np

from medgan_tf.evaluation import figures
from medgan_tf.evaluation.protocols import PROTOCOLS
from medgan_tf.files import write_text_atomic
from medgan_tf.evaluation.scoring import json_safe
from medgan_tf.evaluation.tables import VOLUMES, markdown_table, metric_of
from medgan_tf.evaluation.volumes import VolumeEvaluation


def report_markdown(result: VolumeEvaluation, title: str) -> str:
    """metrics.md: the protocol's table (rows model / input / baselines), its per-region table,
    the baselines' descriptions and the notes."""
    protocol = PROTOCOLS.get(result.protocol)
    summary = result.summary()
    keys = result.metric_keys()
    columns = [k for k in keys if not metric_of(k)[0].region]
    regions = [k for k in keys if metric_of(k)[0].region]
    masks = sorted({entry["mask"] for entry in result.per_patient})
    parts = [
        f"# {title}\n",
        f"Protocol **{result.protocol}**: {protocol.description} ({protocol.source}). "
        f"{len(result.per_patient)} patient(s), scored on the target's grid in {result.unit or 'its unit'}; "
        "mean ± sd over patients, median in brackets; best row of each column in bold.\n",
        f"Mask: {'; '.join(masks)}.\n",
        markdown_table(summary, columns=columns, unit=result.unit, style=VOLUMES),
    ]
    if regions:
        parts += ["## Regions of the label map (signed % error of output vs target)\n",
                  markdown_table(summary, columns=regions, unit="%", style=VOLUMES)]
        parts.append(f"SUV: {'; '.join(sorted({e['suv'] for e in result.per_patient}))}.\n")
    if result.baselines:
        parts.append("## Baselines\n")
        parts += [f"- `{name}`: {text}" for name, text in result.baselines.items()]
        parts.append("")
    if result.notes or result.failures:
        parts.append("## Notes\n")
        parts += [f"- {note}" for note in result.notes]
        parts += [f"- not scored: {f['reason']}" for f in result.failures]
        parts.append("")
    return "\n".join(parts)


def per_patient_csv(result: VolumeEvaluation) -> str:
    keys = result.metric_keys()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["patient_id", "row", *keys, "mask"])
    for entry in result.per_patient:
        for row, scores in entry["scores"].items():
            values = [scores.get(k) for k in keys]
            writer.writerow([entry["patient_id"], row, *("" if v is None else repr(float(v)) for v in values),
                             entry["mask"]])
    return buffer.getvalue()


def report_dict(result: VolumeEvaluation, title: str) -> dict[str, Any]:
    protocol = PROTOCOLS.get(result.protocol)
    return json_safe({
        "title": title, "protocol": result.protocol, "task": result.task, "unit": result.unit,
        "definition": {"description": protocol.description, "source": protocol.source},
        "rows": result.rows, "metric_names": result.metric_keys(), "baselines": result.baselines,
        "notes": result.notes, "failures": result.failures, "num_patients": len(result.per_patient),
        "summary": result.summary(), "per_patient": result.per_patient, "regions": result.regions,
    })


def _figures(result: VolumeEvaluation, out_dir: str, title: str) -> dict[str, str]:
    paths = {}
    shown = result.figure
    if shown:
        paths["slices"] = os.path.join(out_dir, "slices.png")
        mask = shown["mask"]
        centre = None
        if mask is not None and mask.any():
            centre = tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
        volumes = {"input": shown["input"], "output": shown["output"], "target": shown["target"]}
        figures.save_three_plane_figure(paths["slices"], volumes, spacing=shown["spacing"], centre=centre,
                                        unit=result.unit, title=f"{title} — {shown['patient_id']}",
                                        uncertainty=shown.get("uncertainty"))
    if result.histogram["output"]:
        paths["histogram"] = os.path.join(out_dir, "histogram.png")
        figures.save_histogram(paths["histogram"], np.concatenate(result.histogram["output"]),
                               np.concatenate(result.histogram["target"]), unit=result.unit, title=title)
    if PROTOCOLS.get(result.protocol).regions and result.regions:
        paths["bland_altman"] = os.path.join(out_dir, "bland_altman.png")
        suv = all(e["suv_known"] for e in result.per_patient)
        figures.save_bland_altman(paths["bland_altman"], [r["target_suvmean"] for r in result.regions],
                                  [r["model_suvmean"] for r in result.regions],
                                  unit="SUV" if suv else result.unit, title=title)
    return paths


def write_volume_report(result: VolumeEvaluation, out_dir: str | os.PathLike, *, title: str) -> dict[str, str]:
    """Write the report files (module docstring) into `out_dir`; returns {kind: path}."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "metrics.json"), "csv": os.path.join(out_dir, "per_patient.csv"),
             "markdown": os.path.join(out_dir, "metrics.md")}
    write_text_atomic(paths["json"], json.dumps(report_dict(result, title), indent=2, allow_nan=False) + "\n")
    write_text_atomic(paths["csv"], per_patient_csv(result))
    write_text_atomic(paths["markdown"], report_markdown(result, title))
    paths.update(_figures(result, out_dir, title))
    return paths
