"""Classical baselines every evaluation table shows beside the model: what a GAN must beat.

    input          — the untouched input (identity), wherever source and target share a unit
                     (denoising, motion correction); `INPUT`
    gaussian       — denoising: a 3-D Gaussian filter, σ (voxels) chosen on validation volumes
    nlm            — denoising: non-local means (scikit-image `denoise_nl_means`, Buades et al.
                     2005, fast mode), h chosen on validation volumes
    intensity_map  — translation between modalities (PET→CT, MR→CT, CBCT→CT): a piecewise-linear
                     map source value → target value through the medians of paired voxels in
                     source-quantile bins, fitted on training volumes

Which ones a task gets follows from its modality pair (`medgan_tf.tasks.Task.denoising`): one
modality on both sides → the denoising filters; two modalities → the intensity map.
`fit_baselines(task, train=..., validation=...)` takes (source, target) array pairs in physical
units, each pair on one grid (any 3-D shape), and returns the task's fitted `Baseline`s; a
`Baseline` applies to any source volume (`apply`) and says what was fitted (`describe`).
Parameters are chosen by the mean NRMSE (RMSE / target range) over the validation pairs; without
validation pairs they are chosen on the training pairs and `describe()` says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from medgan_tf import tasks
from medgan_tf.errors import UserError

ArrayPair = tuple[np.ndarray, np.ndarray]

GAUSSIAN_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)  # voxels
NLM_H_FACTORS = (0.5, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0)  # h = factor × the volume's noise estimate
NLM_PATCH_SIZE, NLM_PATCH_DISTANCE = 3, 3
INTENSITY_BINS = 32
MAX_FIT_VOXELS = 2_000_000


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A fitted classical method: `apply(volume) -> volume` (same shape, physical units)."""

    name: str
    description: str
    function: Callable[[np.ndarray], np.ndarray]
    parameters: dict = dataclasses.field(default_factory=dict)

    def apply(self, volume: np.ndarray) -> np.ndarray:
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim != 3:
            raise ValueError(f"{self.name}: expected a 3-D volume, got shape {volume.shape}")
        return np.asarray(self.function(volume), dtype=np.float32)

    def describe(self) -> str:
        return self.description


INPUT = Baseline("input", "the untouched input (identity)", lambda volume: volume)


def noise_sigma(volume: np.ndarray) -> float:
    """Robust noise estimate: median |first difference along the last axis| / (0.6745·√2) (the
    MAD of white noise's neighbour differences, which have variance 2σ²)."""
    diffs = np.abs(np.diff(np.asarray(volume, dtype=np.float64), axis=-1))
    return float(np.median(diffs) / (0.6745 * np.sqrt(2.0)))


def gaussian(volume: np.ndarray, sigma: float) -> np.ndarray:
    """3-D Gaussian filter, σ in voxels on every axis (scipy `gaussian_filter`, mode "nearest")."""
    return ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma=sigma, mode="nearest")


def non_local_means(volume: np.ndarray, h_factor: float) -> np.ndarray:
    """3-D non-local means (scikit-image `denoise_nl_means`, fast mode, 3³ patches within ±3
    voxels), h = `h_factor` × `noise_sigma(volume)` with that σ passed for its bias correction."""
    from skimage.restoration import denoise_nl_means

    sigma = noise_sigma(volume)
    if sigma <= 0:
        return np.asarray(volume, dtype=np.float32)
    return denoise_nl_means(np.asarray(volume, dtype=np.float32), patch_size=NLM_PATCH_SIZE,
                            patch_distance=NLM_PATCH_DISTANCE, h=h_factor * sigma, sigma=sigma,
                            fast_mode=True, channel_axis=None)


def nrmse(prediction: np.ndarray, target: np.ndarray) -> float:
    """RMSE / (max − min of the target): the selection criterion (unit-free, so patients weigh alike)."""
    target = np.asarray(target, dtype=np.float64)
    span = float(target.max() - target.min()) or 1.0
    return float(np.sqrt(np.mean((np.asarray(prediction, dtype=np.float64) - target) ** 2)) / span)


def _choose(values: Sequence[float], pairs: Sequence[ArrayPair], method: Callable) -> tuple[float, dict]:
    """The value minimizing the mean NRMSE of `method(source, value)` over `pairs`; all scores."""
    scores = {float(v): float(np.mean([nrmse(method(s, v), t) for s, t in pairs])) for v in values}
    return min(scores, key=scores.get), scores


def _selection_set(train: Sequence[ArrayPair], validation: Sequence[ArrayPair], validation_name: str):
    if validation:
        return list(validation), f"{len(validation)} {validation_name} volume(s)"
    if train:
        return list(train), f"{len(train)} training volume(s) (no validation volumes were given)"
    raise UserError("cannot choose baseline parameters: no training or validation volumes were given")


def _denoising(train, validation, validation_name) -> list[Baseline]:
    pairs, chosen_on = _selection_set(train, validation, validation_name)
    sigma, sigma_scores = _choose(GAUSSIAN_SIGMAS, pairs, gaussian)
    factor, h_scores = _choose(NLM_H_FACTORS, pairs, non_local_means)
    return [
        Baseline("gaussian", f"3-D Gaussian filter, σ = {sigma:g} voxels (of {list(GAUSSIAN_SIGMAS)}, lowest "
                 f"mean NRMSE on {chosen_on})", lambda v: gaussian(v, sigma),
                 {"sigma_voxels": sigma, "chosen_on": chosen_on, "nrmse_by_sigma": sigma_scores}),
        Baseline("nlm", f"non-local means (scikit-image, 3³ patches, ±{NLM_PATCH_DISTANCE} voxels), h = {factor:g} × "
                 f"noise σ (of {list(NLM_H_FACTORS)}, lowest mean NRMSE on {chosen_on})",
                 lambda v: non_local_means(v, factor),
                 {"h_factor": factor, "chosen_on": chosen_on, "nrmse_by_h_factor": h_scores}),
    ]


def fit_intensity_map(pairs: Sequence[ArrayPair], bins: int = INTENSITY_BINS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Knots (source values, target values) of a piecewise-linear map: the source voxels of all
    pairs (sub-sampled to ≤ 2M) split into `bins` quantile bins; each knot is (median source,
    median target) of the paired voxels in one bin. Outside the knots the end values hold."""
    sources = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s, _ in pairs])
    targets = np.concatenate([np.asarray(t, dtype=np.float64).ravel() for _, t in pairs])
    if sources.shape != targets.shape:
        raise ValueError("every (source, target) pair must share one grid")
    if sources.size > MAX_FIT_VOXELS:
        keep = np.random.default_rng(seed).choice(sources.size, MAX_FIT_VOXELS, replace=False)
        sources, targets = sources[keep], targets[keep]
    order = np.argsort(sources, kind="stable")
    chunks = np.array_split(order, bins)
    knots_x = np.array([np.median(sources[c]) for c in chunks if c.size])
    knots_y = np.array([np.median(targets[c]) for c in chunks if c.size])
    knots_x, first = np.unique(knots_x, return_index=True)  # np.interp needs increasing x
    return knots_x, knots_y[first]


def _translation(train, validation) -> list[Baseline]:
    pairs = list(train) or list(validation)
    fitted_on = f"{len(train)} training volume(s)" if train else \
        f"{len(validation)} validation volume(s) (no training volumes were given)"
    if not pairs:
        raise UserError("cannot fit the intensity map: no training or validation volumes were given")
    knots_x, knots_y = fit_intensity_map(pairs)
    return [Baseline(
        "intensity_map", f"piecewise-linear source → target map through the medians of {INTENSITY_BINS} "
        f"source-quantile bins ({len(knots_x)} knots), fitted on {fitted_on}",
        lambda v: np.interp(v, knots_x, knots_y).astype(np.float32),
        {"knots_source": knots_x.tolist(), "knots_target": knots_y.tolist(), "fitted_on": fitted_on})]


def fit_baselines(task: "str | tasks.Task", train: Sequence[ArrayPair] = (), validation: Sequence[ArrayPair] = (),
                  *, validation_name: str = "validation") -> list[Baseline]:
    """The classical baselines of `task` (a `tasks.Task` or a registered name), fitted: one
    modality on both sides → gaussian, nlm (parameters chosen on `validation`, else `train`);
    two modalities → intensity_map (fitted on `train`, else `validation`).

    train, validation: (source, target) array pairs in physical units, each pair on one grid.
    `validation_name` names the validation set in `describe()` (e.g. "evaluated" when the
    caller had nothing else to choose on).
    """
    if tasks.get(task).denoising:
        return _denoising(list(train), list(validation), validation_name)
    return _translation(list(train), list(validation))

