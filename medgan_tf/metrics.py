"""The paper's image-quality metrics (§3.3, Tables I and II) as plain numpy functions.

All metrics except `mae_physical` work on the paper's 0–255 intensity scale: a normalized slice in
[-1, 1] is mapped with `to_255` first. Every function takes one 2-D slice pair, shape (H, W) or
(H, W, 1), computes in float64, and returns a Python float.

Argument order is always `(output, target)`: `output` is the translated (or untouched input) image,
`target` the ground truth. The order matters only for VIF, where `target` is the reference image.

Conventions, checked against independent implementations in tests/test_metrics.py:
  - `ssim` = skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255) (Wang et al. 2004).
  - `psnr` = 10·log10(255² / MSE); identical images give +inf (see `PSNR_OF_IDENTICAL_IMAGES`).
  - `uqi` = Wang & Bovik 2002 over a sliding 8×8 window placed as in sewar.uqi. sewar's own
    formula multiplies window *means* by N = 64 where the paper's formula uses window *sums*, which
    over-weights the luminance term; `convention="wang_bovik"` (default) is the paper's formula,
    `convention="sewar"` reproduces sewar.uqi exactly.
  - `vif` = pixel-domain VIF (VIFP, Sheikh & Bovik 2006) on 4 scales, noise variance 2, as in
    sewar.vifp and the authors' vifp_mscale.m.
  - LPIPS (Zhang et al. 2018) needs pretrained network weights that are not available offline here;
    `lpips_availability()` says why, and reports list it as unavailable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from medgan_tf.registry import Registry

DATA_RANGE = 255.0
# PSNR of two identical images is +inf; JSON has no infinity, so reports write it as null.
PSNR_OF_IDENTICAL_IMAGES = math.inf
# Environment variable naming a local LPIPS weights file (checked by `lpips_availability`).
LPIPS_WEIGHTS_ENV = "MEDGAN_LPIPS_WEIGHTS"


def to_255(image: np.ndarray, clip: bool = True) -> np.ndarray:
    """Map a normalized image in [-1, 1] to the paper's 0–255 scale, as float64.

    -1 → 0 and +1 → 255 (x ↦ (x + 1)·127.5). With `clip` (default) values outside [-1, 1], e.g. a
    generator output a hair past its tanh range or a noisy input, are clipped as an 8-bit image
    would be, so `DATA_RANGE` = 255 stays the true dynamic range.
    """
    scaled = (np.asarray(image, dtype=np.float64) + 1.0) * 127.5
    return np.clip(scaled, 0.0, DATA_RANGE) if clip else scaled


def _as_pair(output: np.ndarray, target: np.ndarray, minimum_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validate one slice pair and return both as float64 (H, W) arrays."""
    arrays = []
    for name, image in (("output", output), ("target", target)):
        array = np.asarray(image, dtype=np.float64)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(
                f"{name} must be one 2-D slice of shape (H, W) or (H, W, 1); received shape {np.shape(image)}"
            )
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"output and target must have the same shape; received {arrays[0].shape} and {arrays[1].shape}"
        )
    if min(arrays[0].shape) < minimum_size:
        raise ValueError(f"slices must be at least {minimum_size}×{minimum_size}; received {arrays[0].shape}")
    return arrays[0], arrays[1]


def mse(output: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error, mean((output - target)²), in (0–255 units)²."""
    output, target = _as_pair(output, target)
    return float(np.mean((output - target) ** 2))


def psnr(output: np.ndarray, target: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(data_range² / MSE); +inf when MSE is 0."""
    error = mse(output, target)
    if error == 0.0:
        return PSNR_OF_IDENTICAL_IMAGES
    return float(10.0 * np.log10(data_range**2 / error))


def mae_physical(output_phys: np.ndarray, target_phys: np.ndarray) -> float:
    """Mean absolute error in physical units (HU, SUV, MR a.u.) between de-normalized slices."""
    output_phys, target_phys = _as_pair(output_phys, target_phys)
    return float(np.mean(np.abs(output_phys - target_phys)))


def ssim(
    output: np.ndarray,
    target: np.ndarray,
    data_range: float = DATA_RANGE,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al. 2004, eq. 13) with an 11×11 Gaussian window, σ = 1.5.

    SSIM(x, y) = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)), C1 = (k1·L)²,
    C2 = (k2·L)², L = data_range; local statistics are Gaussian-weighted population moments
    (truncated at 3.5σ, reflect padding), and the map is averaged after cropping the window radius
    from each border, exactly as scikit-image does.
    """
    truncate = 3.5
    radius = int(truncate * sigma + 0.5)
    output, target = _as_pair(output, target, minimum_size=2 * radius + 1)

    def local_mean(image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image, sigma=sigma, truncate=truncate, mode="reflect")

    mean_output, mean_target = local_mean(output), local_mean(target)
    variance_output = local_mean(output * output) - mean_output * mean_output
    variance_target = local_mean(target * target) - mean_target * mean_target
    covariance = local_mean(output * target) - mean_output * mean_target
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mean_output * mean_target + c1) * (2 * covariance + c2)) / (
        (mean_output**2 + mean_target**2 + c1) * (variance_output + variance_target + c2)
    )
    return float(ssim_map[radius:-radius, radius:-radius].mean(dtype=np.float64))


def uqi(output: np.ndarray, target: np.ndarray, window_size: int = 8, convention: str = "wang_bovik") -> float:
    """Universal quality index (Wang & Bovik 2002, eq. 1) averaged over sliding windows.

    Q = 4·σxy·μx·μy / ((σx² + σy²)(μx² + μy²)) in each `window_size`² window (population moments);
    a window where both images are flat scores 2μxμy / (μx² + μy²), and 1 when both are also zero,
    as in Wang's reference code. Windows are box filters with reflect padding, and the map is
    averaged after cropping round(window_size / 2) pixels from each border (sewar.uqi's placement).

    convention: "wang_bovik" (default) — the paper's formula; "sewar" — sewar.uqi's arithmetic,
    which plugs window means where the paper has window sums (N·mean_xy − mean_x·mean_y instead of
    N·Σxy − ΣxΣy), i.e. weights the luminance term ~N times more. Kept to compare with tools that
    use sewar.
    """
    if convention not in ("wang_bovik", "sewar"):
        raise ValueError(f"convention must be 'wang_bovik' or 'sewar'; received {convention!r}")
    border = int(np.round(window_size / 2))
    output, target = _as_pair(output, target, minimum_size=2 * border + 1)
    # sewar.uqi(GT, P): GT is the target. The formula is symmetric, but keep the same operand order
    # so the "sewar" convention matches it bit for bit.
    reference, test = target, output
    window_count = window_size**2 if convention == "sewar" else 1

    box = np.full(window_size, 1.0 / window_size)

    def local_mean(image: np.ndarray) -> np.ndarray:
        if convention == "sewar":
            return ndimage.uniform_filter(image, window_size)
        # Same windows as uniform_filter (i − size//2 … i + size//2 − 1, reflect padding), but summed
        # directly: uniform_filter's running sum drifts, so an all-zero window after a bright region
        # gets a mean of ~1e-15 instead of 0, which turns the 0/0 case below into garbage.
        return ndimage.correlate1d(ndimage.correlate1d(image, box, axis=0), box, axis=1)

    mean_reference, mean_test = local_mean(reference), local_mean(test)
    mean_product = mean_reference * mean_test
    mean_squares = mean_reference * mean_reference + mean_test * mean_test
    covariance_term = window_count * local_mean(reference * test) - mean_product
    variance_term = window_count * (local_mean(reference * reference) + local_mean(test * test)) - mean_squares
    if convention == "wang_bovik":
        # E[x²] − E[x]² of a flat nonzero window comes out as ±1e-13 instead of 0; treat variances
        # that small relative to the intensity as exactly flat so they do not become a 0/0 lottery.
        flat = np.abs(variance_term) <= 1e-10 * mean_squares
        variance_term = np.where(flat, 0.0, variance_term)
        covariance_term = np.where(flat, 0.0, covariance_term)
    numerator = 4 * covariance_term * mean_product
    denominator = variance_term * mean_squares

    quality_map = np.ones(denominator.shape)
    flat_windows = (variance_term == 0) & (mean_squares != 0)
    quality_map[flat_windows] = 2 * mean_product[flat_windows] / mean_squares[flat_windows]
    defined = denominator != 0
    quality_map[defined] = numerator[defined] / denominator[defined]
    return float(np.mean(quality_map[border:-border, border:-border]))


def _vif_gaussian_kernel(size: int) -> np.ndarray:
    """1-D factor of MATLAB's fspecial('gaussian', size, size/5), normalized to sum 1.

    The 2-D window exp(-(x²+y²)/2σ²) is the outer product of this with itself (fspecial's
    eps-thresholding never triggers at σ = size/5), so filtering can be separable.
    """
    offsets = np.arange(size) - (size - 1) / 2.0
    kernel = np.exp(-(offsets**2) / (2.0 * (size / 5.0) ** 2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """2-D 'valid' filtering with the separable symmetric kernel outer(k, k) (MATLAB filter2 'valid')."""
    radius = len(kernel_1d) // 2
    filtered = ndimage.correlate1d(image, kernel_1d, axis=0, mode="constant")
    filtered = ndimage.correlate1d(filtered, kernel_1d, axis=1, mode="constant")
    return filtered[radius : image.shape[0] - radius, radius : image.shape[1] - radius]


def vif(output: np.ndarray, target: np.ndarray, sigma_nsq: float = 2.0) -> float:
    """Pixel-domain visual information fidelity, VIFP (Sheikh & Bovik 2006), `target` as reference.

    VIF = Σ_scales Σ_windows log10(1 + g²σC² / (σV² + σN²)) / Σ_scales Σ_windows log10(1 + σC² / σN²)
    with the gain g = σCD / σC², the distortion variance σV² = σD² − g·σCD, and the visual noise
    variance σN² = `sigma_nsq`. Four scales with Gaussian windows of size 17, 9, 5, 3 (σ = size/5),
    each coarser scale low-pass filtered and decimated by 2, as in sewar.vifp / vifp_mscale.m.
    Slices must be at least 41×41 so every scale has valid windows.
    """
    output, target = _as_pair(output, target, minimum_size=41)
    reference, distorted = target, output
    eps = 1e-10
    numerator = 0.0
    denominator = 0.0
    for scale in range(1, 5):
        kernel = _vif_gaussian_kernel(int(2 ** (4 - scale + 1) + 1))
        if scale > 1:
            reference = _filter_valid(reference, kernel)[::2, ::2]
            distorted = _filter_valid(distorted, kernel)[::2, ::2]
        mean_reference = _filter_valid(reference, kernel)
        mean_distorted = _filter_valid(distorted, kernel)
        variance_reference = _filter_valid(reference * reference, kernel) - mean_reference**2
        variance_distorted = _filter_valid(distorted * distorted, kernel) - mean_distorted**2
        covariance = _filter_valid(reference * distorted, kernel) - mean_reference * mean_distorted
        variance_reference[variance_reference < 0] = 0
        variance_distorted[variance_distorted < 0] = 0

        gain = covariance / (variance_reference + eps)
        distortion_variance = variance_distorted - gain * covariance
        # The guards below follow vifp_mscale.m in the same order (each may overwrite the last).
        flat_reference = variance_reference < eps
        gain[flat_reference] = 0
        distortion_variance[flat_reference] = variance_distorted[flat_reference]
        variance_reference[flat_reference] = 0
        flat_distorted = variance_distorted < eps
        gain[flat_distorted] = 0
        distortion_variance[flat_distorted] = 0
        negative_gain = gain < 0
        distortion_variance[negative_gain] = variance_distorted[negative_gain]
        gain[negative_gain] = 0
        distortion_variance[distortion_variance <= eps] = eps

        numerator += np.sum(np.log10(1.0 + gain**2 * variance_reference / (distortion_variance + sigma_nsq)))
        denominator += np.sum(np.log10(1.0 + variance_reference / sigma_nsq))
    if denominator == 0.0:
        # A perfectly flat reference carries no information; VIF is undefined. Identical flat
        # images still count as a perfect score.
        return 1.0 if np.array_equal(output, target) else 0.0
    return float(numerator / denominator)


def lpips_availability() -> tuple[bool, str]:
    """Whether LPIPS (Zhang et al. 2018), the paper's sixth metric, can be computed here, and why not.

    LPIPS needs an ImageNet-pretrained AlexNet/VGG trunk plus the learned per-channel linear
    calibration layers. Neither ships with this package, none can be downloaded on this offline
    machine, and there is no verified Keras port of the reference (PyTorch) weights to load, so the
    metric is always reported as unavailable with this reason.
    """
    weights_path = os.environ.get(LPIPS_WEIGHTS_ENV)
    if weights_path:
        return (
            False,
            f"{LPIPS_WEIGHTS_ENV}={weights_path} is set, but this build has no Keras LPIPS network to "
            "load it into (the reference LPIPS weights are PyTorch checkpoints)",
        )
    return (
        False,
        "LPIPS needs pretrained AlexNet/VGG ImageNet weights plus LPIPS linear-layer weights; they are "
        "not bundled, cannot be downloaded offline, and no Keras port of them is provided",
    )


# --------------------------------------------------------------------------- the metric table


@dataclass(frozen=True)
class Metric:
    """One row of the metric table: everything any report, log or table needs to know.

    function:          (output, target) → float, one slice pair; None when the metric has no
                       per-slice function: unavailable here (then `availability` says why), or a
                       volume metric (scale "volume") that an evaluation protocol computes on
                       whole volumes (the protocols list the metrics they report).
    scale:             "0-255" (the paper's scale: images mapped with `to_255`), "physical"
                       (de-normalized images in the target's unit) or "volume" (whole volumes in
                       physical units, only through a protocol).
    higher_is_better:  the direction a table's "best" follows (a signed % error: closer to 0).
    paper:             a column of the paper's Tables I/II.
    validation:        cheap enough to score every validation batch during training.
    minimum_size:      the smallest slice side the function accepts.
    unit:              the unit of the value ("dB", "%"); "" when unitless or the data's own
                       unit (MAE: HU, SUV, ...; reports add it).
    region:            a per-region value of a label map (`<name>_<label>` keys): a signed
                       % error, so a table's best is the one closest to 0.
    """

    name: str
    title: str
    format: str
    higher_is_better: bool
    function: Callable[[np.ndarray, np.ndarray], float] | None = None
    scale: str = "0-255"
    paper: bool = False
    validation: bool = False
    minimum_size: int = 1
    availability: Callable[[], tuple[bool, str]] | None = None
    unit: str = ""
    region: bool = False

    def available(self) -> tuple[bool, str]:
        if self.function is not None or self.scale == "volume":
            return True, ""
        return self.availability() if self.availability is not None else (False, "no implementation")


METRICS: Registry[Metric] = Registry("metric")
METRICS.add("ssim", Metric("ssim", "SSIM", ".4f", True, ssim, paper=True, validation=True, minimum_size=11))
METRICS.add("psnr", Metric("psnr", "PSNR(dB)", ".2f", True, psnr, paper=True, validation=True, unit="dB"))
METRICS.add("mse", Metric("mse", "MSE", ".2f", False, mse, paper=True, validation=True))
METRICS.add("vif", Metric("vif", "VIF", ".4f", True, vif, paper=True, minimum_size=41))
METRICS.add("uqi", Metric("uqi", "UQI", ".4f", True, uqi, paper=True, minimum_size=9))
METRICS.add("lpips", Metric("lpips", "LPIPS", ".4f", False, None, paper=True, availability=lpips_availability))
METRICS.add("mae", Metric("mae", "MAE", ".4g", False, mae_physical, scale="physical"))
METRICS.add("ms_ssim", Metric("ms_ssim", "MS-SSIM", ".4f", True, scale="volume"))
METRICS.add("nrmse", Metric("nrmse", "NRMSE", ".4f", False, scale="volume"))
METRICS.add("suvmean", Metric("suvmean", "SUVmean error", "+.2f", False, scale="volume", unit="%", region=True))
METRICS.add("suvmax", Metric("suvmax", "SUVmax error", "+.2f", False, scale="volume", unit="%", region=True))
METRICS.add("activity", Metric("activity", "Total activity error", "+.2f", False, scale="volume", unit="%",
                               region=True))
# How well a model's own uncertainty (TTA / ensemble standard deviation) predicts its error, over the
# mask's voxels (`medgan_tf.evaluation.uncertainty`); only a model row with an uncertainty has them.
METRICS.add("uncertainty_rho", Metric("uncertainty_rho", "Spearman ρ(|error|, SD)", ".3f", True, scale="volume"))
METRICS.add("error_uncertain", Metric("error_uncertain", "MAE in top 5% SD", ".4g", False, scale="volume"))
METRICS.add("error_certain", Metric("error_certain", "MAE in other 95%", ".4g", False, scale="volume"))
METRICS.add("uncertainty_mean", Metric("uncertainty_mean", "mean SD", ".4g", False, scale="volume"))


def metric_names(*, scale: str | None = None, paper: bool | None = None, validation: bool | None = None,
                 region: bool | None = False) -> tuple[str, ...]:
    """Names of the registered metrics with the given properties, in table order (per-region
    metrics only when `region` is True or None)."""
    return tuple(
        name for name, metric in METRICS.items()
        if (scale is None or metric.scale == scale)
        and (paper is None or metric.paper == paper)
        and (validation is None or metric.validation == validation)
        and (region is None or metric.region == region)
    )


def minimum_slice_size(names: tuple[str, ...] | None = None) -> int:
    """The smallest slice side every metric of `names` (default: all) can score."""
    return max(METRICS.get(name).minimum_size for name in (names or METRICS.names()))


def slice_metrics(output: np.ndarray, target: np.ndarray, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every computable 0–255-scale metric of the table (or of `names`) for one slice pair already
    on the 0–255 scale."""
    names = names if names is not None else metric_names(scale="0-255")
    out = {}
    for name in names:
        metric = METRICS.get(name)
        if metric.function is not None and metric.scale == "0-255":
            out[name] = float(metric.function(output, target))
    return out


def validation_means(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The validation metrics (`metric_names(validation=True)`, paper scale) of a batch, averaged
    over its slices, as float32 in that order. outputs, targets: (B, S, S, 1) in [-1, 1].

    The one validation computation of the project: training's validation (TensorBoard),
    `MedGAN.test_step` (`model.evaluate`) and `medgan-tf evaluate` all score slices with these
    functions on the 0–255 scale. A PSNR of +inf (a slice reproduced exactly) is left out of the
    mean unless every slice is exact."""
    names = metric_names(validation=True)
    outputs, targets = np.asarray(outputs), np.asarray(targets)
    per_slice = [slice_metrics(to_255(o), to_255(t), names) for o, t in zip(outputs, targets)]
    means = []
    for name in names:
        values = np.array([scores[name] for scores in per_slice], dtype=np.float64)
        finite = values[np.isfinite(values)]
        means.append(finite.mean() if finite.size else (values.mean() if values.size else np.nan))
    return np.asarray(means, dtype=np.float32)
