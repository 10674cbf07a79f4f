"""Slice-to-slice consistency: does a translated volume jump between adjacent axial slices?

A model that translates each axial slice on its own (MedGAN's 2D generator) can give neighbouring
output slices that differ more than the anatomy does — streaks in coronal and sagittal views.
The measure compares the output's mean absolute difference between adjacent slices with the
target's, per patient, on the paper's 0–255 scale (normalized [-1, 1] images × 127.5):

    jump(V)    = mean over adjacent slice pairs (z, z+1) and pixels of |V[z+1] − V[z]|
    ratio      = jump(output) / jump(target)    1 = as smooth as the target; > 1 = jumpier
    difference = jump(output) − jump(target)    in 0–255 units; 0 is ideal

Only slice pairs whose indices are consecutive count (a gap in the records is not a neighbour).
`SliceCollector` gathers outputs and targets while a dataset is scored; `slice_consistency` is
the measure itself (numpy only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medgan_tf.evaluation.tables import consistency_table

SCALE = 127.5  # [-1, 1] → 0–255 differences


def adjacent_jump(slices: Mapping[int, np.ndarray]) -> tuple[float, int]:
    """(sum of the per-pair mean |V[z+1] − V[z]| on the 0–255 scale, number of pairs) over the
    consecutive slice indices of {slice_index: (S, S) normalized slice}."""
    total, pairs = 0.0, 0
    for z in sorted(slices):
        if z + 1 in slices:
            difference = np.asarray(slices[z + 1], np.float64) - np.asarray(slices[z], np.float64)
            total += float(np.mean(np.abs(difference))) * SCALE
            pairs += 1
    return total, pairs


def slice_consistency(
    outputs: Mapping[str, Mapping[int, np.ndarray]], targets: Mapping[str, Mapping[int, np.ndarray]]
) -> dict[str, Any]:
    """{patient: {slice_index: (S, S)}} outputs and targets (normalized) → the measure of the
    module docstring: {"output_jump", "target_jump", "ratio", "difference", "pairs",
    "per_patient": {patient: {...same...}}}; jumps are means over all adjacent pairs; None where a
    value cannot be computed (no adjacent pair, or a target without any change)."""
    per_patient = {}
    sums = {"output": 0.0, "target": 0.0, "pairs": 0}
    for patient in sorted(outputs):
        output_sum, pairs = adjacent_jump(outputs[patient])
        target_sum, _ = adjacent_jump({z: targets[patient][z] for z in outputs[patient]})
        sums["output"] += output_sum
        sums["target"] += target_sum
        sums["pairs"] += pairs
        per_patient[patient] = _values(output_sum, target_sum, pairs)
    return {**_values(sums["output"], sums["target"], sums["pairs"]), "per_patient": per_patient}


def _values(output_sum: float, target_sum: float, pairs: int) -> dict[str, Any]:
    if pairs == 0:
        return {"output_jump": None, "target_jump": None, "ratio": None, "difference": None, "pairs": 0}
    output_jump, target_jump = output_sum / pairs, target_sum / pairs
    return {
        "output_jump": output_jump,
        "target_jump": target_jump,
        "ratio": output_jump / target_jump if target_jump > 0 else None,
        "difference": output_jump - target_jump,
        "pairs": pairs,
    }


class SliceCollector:
    """Keeps each scored slice's output and target (float16, enough for a 0–255 measure) by
    patient and slice index, for `slice_consistency` after scoring."""

    def __init__(self) -> None:
        self.outputs: dict[str, dict[int, np.ndarray]] = {}
        self.targets: dict[str, dict[int, np.ndarray]] = {}

    def add(self, record: Mapping[str, Any], output: np.ndarray) -> None:
        patient, z = str(record["patient_key"]), int(record["slice_index"])
        self.outputs.setdefault(patient, {})[z] = np.asarray(output, np.float16).reshape(np.shape(output)[:2])
        self.targets.setdefault(patient, {})[z] = np.asarray(record["target"], np.float16).reshape(np.shape(output)[:2])

    def result(self) -> dict[str, Any]:
        return slice_consistency(self.outputs, self.targets)


CONSISTENCY_FILE = "slice_consistency.json"


def overall_consistency(measure: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The overall values of a `slice_consistency` result, without the per-patient detail."""
    return None if measure is None else {key: value for key, value in measure.items() if key != "per_patient"}


def append_consistency_table(path: str | Path, measures: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Append `tables.consistency_table(measures)` to the Markdown report at `path`."""
    with open(path, "a", encoding="utf-8") as report:
        report.write(consistency_table(measures))


def consistency_line(measure: Mapping[str, Any] | None) -> str:
    """One line for the terminal, e.g. 'slice consistency: output 3.1 vs target 2.9 (0–255 per
    adjacent pair): ratio 1.07, difference +0.2 over 40 pairs'."""
    if not measure or measure.get("pairs", 0) == 0:
        return "slice consistency: no adjacent slice pairs to compare"
    ratio = "n/a" if measure["ratio"] is None else f"{measure['ratio']:.3f}"
    return (f"slice consistency: mean |adjacent-slice difference| output {measure['output_jump']:.3f} vs target "
            f"{measure['target_jump']:.3f} (0–255): ratio {ratio}, difference {measure['difference']:+.3f} over "
            f"{measure['pairs']} pairs (1 and 0 = as smooth as the target)")


def write_consistency(measure: Mapping[str, Any] | None, out_dir: str | Path) -> dict[str, Path]:
    """REPORT_DIR/slice_consistency.json (through a temporary file and a rename) → {"consistency": path}."""
    from medgan_tf.files import write_text_atomic

    if measure is None:
        return {}
    path = Path(out_dir) / CONSISTENCY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(str(path), json.dumps(measure, indent=2, sort_keys=True) + "\n")
    return {"consistency": path}


def read_consistency(report_dir: str | Path) -> dict[str, Any] | None:
    """REPORT_DIR/slice_consistency.json as written by `write_consistency`, None when absent."""
    path = Path(report_dir) / CONSISTENCY_FILE
    return json.loads(path.read_text()) if path.is_file() else None
