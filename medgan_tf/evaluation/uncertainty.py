"""Is the uncertainty worth looking at? How well a model's voxel-wise standard deviation (TTA or
ensemble, `medgan_tf.serving.uncertainty`) predicts where its output is wrong.

Over the mask's voxels: Spearman's rank correlation ρ between |output − target| and the standard
deviation (`scipy.stats.spearmanr`; ties share their average rank, so a map that is zero over much
of the mask still ranks fairly), and the mean absolute error in the 5 % most uncertain voxels
against that in the other 95 %. An uncertainty that points at the errors has ρ > 0 and a larger
error in its top 5 %.
"""

from __future__ import annotations

import math

import numpy as np

TOP_FRACTION = 0.05


def uncertainty_scores(output: np.ndarray, target: np.ndarray, uncertainty: np.ndarray,
                       mask: np.ndarray | None = None) -> dict[str, float]:
    """{"uncertainty_rho", "error_uncertain", "error_certain", "uncertainty_mean"} for one volume:
    `output`, `target`, `uncertainty` (one shape, physical units), `mask` (bool, same shape; None =
    every voxel). ρ is nan when either map is constant over the mask (a rank correlation needs
    variation); error_certain is nan when the mask is too small to leave any voxel outside the top
    5 % (fewer than 2 voxels)."""
    from scipy.stats import spearmanr

    inside = np.ones(np.shape(target), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    error = np.abs(np.asarray(output, np.float64) - np.asarray(target, np.float64))[inside]
    spread = np.asarray(uncertainty, np.float64)[inside]
    if error.size == 0:
        raise ValueError("the mask holds no voxel; nothing to relate the uncertainty to")
    constant = float(np.ptp(error)) == 0.0 or float(np.ptp(spread)) == 0.0
    rho = math.nan if constant else float(spearmanr(error, spread).statistic)
    count = max(1, int(math.ceil(TOP_FRACTION * error.size)))
    order = np.argsort(-spread, kind="stable")
    top, rest = order[:count], order[count:]
    return {
        "uncertainty_rho": rho,
        "error_uncertain": float(error[top].mean()),
        "error_certain": float(error[rest].mean()) if rest.size else math.nan,
        "uncertainty_mean": float(spread.mean()),
    }
