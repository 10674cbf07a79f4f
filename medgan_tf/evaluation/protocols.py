"""Evaluation protocols of published challenges: metric functions on whole 3-D volumes in physical
units (HU for CT, Bq/ml or SUV for PET), plain numpy/scipy.

Each protocol is implemented once, from its published code:

    synthrad2023 — SynthRAD2023 `functions/image_metrics.py` (github.com/SynthRAD2023/metrics,
                   commit fe7e3853): masked MAE, PSNR on [−1024, 3000] HU, masked 3-D SSIM
    synthrad2025 — SynthRAD2025 `image_metrics.py` (github.com/SynthRAD2025/evaluation,
                   commit 17cac47b): masked MAE, PSNR on [−1024, 3071] HU, masked 3-D MS-SSIM
    pet          — the UDPET challenge's evaluation script (linked from
                   udpet-challenge.github.io): NRMSE, PSNR, SSIM; plus per-region % errors of
                   SUVmean, SUVmax and total activity, as the low-dose PET literature reports them

SSIM follows Wang et al. 2004 (IEEE TIP 13(4)) as scikit-image's `structural_similarity`
computes it with the defaults the challenge code relies on (it passes only `data_range`): a
7-voxel uniform window (scipy `uniform_filter`, mode "reflect"), K1 = 0.01, K2 = 0.03, sample
covariance (N/(N−1)). `paper` scores volumes slice by slice with the paper's metrics.

`PROTOCOLS` is the one place a protocol is declared: one `Protocol` entry holds its function
`(prediction, target, mask, **inputs) -> dict[str, float]`, its columns (entries of the metric
table `medgan_tf.metrics.METRICS`, which gives their titles, formats and better directions),
whether it is masked, the inputs it needs, and its description and source. Scoring, reports and
the command line's `--protocol` choices read them from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy import ndimage

from medgan_tf import modalities
from medgan_tf.errors import UserError
from medgan_tf.metrics import METRICS, metric_names, to_255
from medgan_tf.registry import Registry

WIN_SIZE = 7  # skimage's default uniform window, used by both SynthRAD scripts
CROP = (WIN_SIZE - 1) // 2  # border skimage (and the challenges) drop from the SSIM map
K1, K2 = 0.01, 0.03
HU_RANGE_2023 = (-1024.0, 3000.0)
HU_RANGE_2025 = (-1024.0, 3071.0)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, Eq. 7 / §3.2
MS_SSIM_MIN_SIZE = 97  # SynthRAD2025 edge-pads every axis to this before the 5 levels


def _binary(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The mask as bool (any value > 0 is inside, as the challenge scripts binarize); all-true if
    None."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match the volumes' {tuple(shape)}")
    return mask > 0


def _pair(prediction, target) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(prediction, dtype=np.float64)
    ref = np.asarray(target, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(f"expected two 3-D volumes of one shape, got {pred.shape} and {ref.shape}")
    return pred, ref


def masked_mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """MAE = Σ|ref − pred|·m / Σm, in the volumes' unit (HU), no clipping (SynthRAD `mae`)."""
    return float(np.sum(np.abs(ref - pred) * mask) / mask.sum())


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """PSNR = 10·log10(data_range² / MSE) in dB over the given voxels (skimage
    `peak_signal_noise_ratio`); +inf when they are identical."""
    mse = float(np.mean((ref - pred) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def _local_stats(x: np.ndarray, y: np.ndarray):
    """Windowed means, sample variances and covariance (skimage `structural_similarity`, uniform
    window, `use_sample_covariance=True`)."""
    n = WIN_SIZE**x.ndim
    cov_norm = n / (n - 1)

    def f(a):
        return ndimage.uniform_filter(a, size=WIN_SIZE)

    ux, uy = f(x), f(y)
    vx = cov_norm * (f(x * x) - ux * ux)
    vy = cov_norm * (f(y * y) - uy * uy)
    vxy = cov_norm * (f(x * y) - ux * uy)
    return ux, uy, vx, vy, vxy


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Per-voxel SSIM (Wang et al. 2004, Eq. 13), same shape as the inputs (border not cropped):
    (2µxµy + C1)(2σxy + C2) / ((µx² + µy² + C1)(σx² + σy² + C2)), C1 = (K1·R)², C2 = (K2·R)²,
    R = `data_range` in the inputs' unit."""
    ux, uy, vx, vy, vxy = _local_stats(x, y)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def _weighted_ssim_map(x: np.ndarray, y: np.ndarray, data_range: float, weight: float):
    """L^w·C^w·S^w per voxel, each component clipped at 0 and C3 = C2/2, as SynthRAD2025's
    `structural_similarity_at_scale` computes one MS-SSIM level (Wang et al. 2003, Eq. 7)."""
    ux, uy, vx, vy, vxy = _local_stats(x, y)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    c3 = c2 / 2
    sx, sy = np.sqrt(np.clip(vx, 0, None)), np.sqrt(np.clip(vy, 0, None))
    lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
    con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
    struct = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
    return (lum * con * struct) ** weight


def _crop(a: np.ndarray) -> np.ndarray:
    return a[(slice(CROP, -CROP),) * a.ndim]


def masked_mean(ssim: np.ndarray, mask: np.ndarray) -> float:
    """Mean of an SSIM map over the mask after dropping `CROP` voxels at every border (SynthRAD:
    `crop(ssim_map, 3)[crop(mask, 3)].mean()`)."""
    return float(_crop(ssim)[_crop(mask)].mean(dtype=np.float64))


def _prepare_ct(pred, ref, mask, hu_range):
    """Clip to the HU range, set voxels outside the mask to its minimum, shift it to 0 (SynthRAD
    `ssim`/`ms_ssim` preprocessing); returns shifted volumes in HU + 1024."""
    lo, hi = hu_range
    out = [np.where(mask, np.clip(v, lo, hi), lo) - lo for v in (pred, ref)]
    return out[0], out[1]


def _ct_common(pred, ref, m, hu_range) -> dict[str, float]:
    lo, hi = hu_range
    return {
        "mae": masked_mae(pred, ref, m),
        "psnr": psnr(np.clip(pred, lo, hi)[m], np.clip(ref, lo, hi)[m], hi - lo),
    }


def synthrad2023(prediction, target, mask=None, **_) -> dict[str, float]:
    """SynthRAD2023 image metrics of a synthetic CT against the CT, both (Z, Y, X) in HU, inside
    the body mask m (SynthRAD2023/metrics `functions/image_metrics.py`, `ImageMetrics`):

    mae  — Σ|ct − sct|·m / Σm in HU, unclipped;
    psnr — dB on the masked voxels after clipping both to [−1024, 3000], data range 4024;
    ssim — both clipped to [−1024, 3000], −1024 outside m, shifted by +1024, 3-D SSIM (7-voxel
           uniform window, data range 4024, skimage defaults), mean inside m after a 3-voxel crop.
    """
    pred, ref = _pair(prediction, target)
    m = _binary(mask, ref.shape)
    x, y = _prepare_ct(pred, ref, m, HU_RANGE_2023)
    r = HU_RANGE_2023[1] - HU_RANGE_2023[0]
    return {**_ct_common(pred, ref, m, HU_RANGE_2023), "ssim": masked_mean(ssim_map(y, x, r), m)}


def _challenge_downsample(a: np.ndarray) -> np.ndarray:
    """One MS-SSIM down-sampling step as SynthRAD2025 does it: `fftconvolve(a, ones(2,2,2)/8,
    "same")[::2, ::2, ::2]`, i.e. per axis the mean of voxels i−1 and i (zero before the first)
    at even i; written as shifted sums so it is exact."""
    for axis in range(a.ndim):
        pad = [(1, 0) if k == axis else (0, 0) for k in range(a.ndim)]
        p = np.pad(a, pad)
        n = a.shape[axis]
        a = (np.take(p, range(n), axis=axis) + np.take(p, range(1, n + 1), axis=axis)) / 2
        a = np.take(a, range(0, n, 2), axis=axis)
    return a


def masked_ms_ssim(x: np.ndarray, y: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    """Masked 3-D MS-SSIM of SynthRAD2025 (`ImageMetrics.ms_ssim`, Wang et al. 2003): volumes and
    mask edge-padded to ≥ 97 voxels per axis; at level j the masked mean (3-voxel crop) of
    (L·C·S)^w_j — the challenge passes the scale weight w_j as luminance, contrast *and*
    structure exponent at every level, which is what we follow — then down-sampling (images
    2×2×2-averaged, mask sub-sampled); result Π_j clip(value_j, 0, 1)."""
    short = [max(MS_SSIM_MIN_SIZE - n, 0) for n in x.shape]
    pads = [(k // 2, k - k // 2) for k in short]
    x, y, m = (np.pad(a, pads, mode="edge") for a in (x, y, mask))
    values = []
    for weight in MS_SSIM_WEIGHTS:
        values.append(masked_mean(_weighted_ssim_map(y, x, data_range, weight), m))
        x, y, m = _challenge_downsample(x), _challenge_downsample(y), m[::2, ::2, ::2]
    return float(np.prod(np.clip(values, 0, 1)))


def synthrad2025(prediction, target, mask=None, **_) -> dict[str, float]:
    """SynthRAD2025 image metrics (SynthRAD2025/evaluation `image_metrics.py`), volumes (Z, Y, X)
    in HU: mae as 2023; psnr on the masked voxels clipped to [−1024, 3071] (data range 4095);
    ms_ssim — clipped, −1024 outside m, shifted by +1024, `masked_ms_ssim` with range 4095."""
    pred, ref = _pair(prediction, target)
    m = _binary(mask, ref.shape)
    x, y = _prepare_ct(pred, ref, m, HU_RANGE_2025)
    r = HU_RANGE_2025[1] - HU_RANGE_2025[0]
    return {**_ct_common(pred, ref, m, HU_RANGE_2025), "ms_ssim": masked_ms_ssim(x, y, m, r)}


def _pct(pred_value: float, ref_value: float) -> float:
    return float(100.0 * (pred_value - ref_value) / ref_value) if ref_value else float("nan")


def pet(prediction, target, mask=None, *, labels=None, suv_factor: float = 1.0,
        voxel_volume_ml: float = 1.0, **_) -> dict[str, float]:
    """Low-dose PET metrics as the UDPET challenge's evaluation script reports them, on volumes
    (Z, Y, X) in Bq/ml over the whole volume (`mask` is accepted for a uniform signature and not
    used — UDPET scores the whole field of view):

    nrmse — √mean((ref − pred)²) / (max(ref) − min(ref))          (UDPET `compute_nrmse`)
    psnr  — 20·log10(max(ref) / RMSE) dB                           (UDPET `compute_psnr`)
    (identical volumes: nrmse 0, psnr +inf; a constant reference has no range, nor a zero one a
    peak, to measure against: nrmse, psnr NaN — undefined rather than a division by zero)
    ssim  — mean 3-D SSIM (7-voxel uniform window, 3-voxel crop), data range max(ref) − min(ref)

    With `labels` (integer map, same shape, 0 = background), for every region k > 0, signed %
    errors 100·(pred − ref)/ref of `suvmean_k` and `suvmax_k` (SUV = value × `suv_factor`; 1.0
    keeps Bq/ml) and `activity_k` (Σ value × `voxel_volume_ml`, in Bq).
    """
    pred, ref = _pair(prediction, target)
    span = float(ref.max() - ref.min())
    rmse = float(np.sqrt(np.mean((ref - pred) ** 2)))
    out = {
        "nrmse": rmse / span if span else 0.0 if rmse == 0 else float("nan"),
        "psnr": float("inf") if rmse == 0 else float(20 * np.log10(ref.max() / rmse)) if ref.max() > 0 else float("nan"),
        "ssim": float(_crop(ssim_map(ref, pred, span or 1.0)).mean(dtype=np.float64)),
    }
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != ref.shape:
            raise ValueError(f"labels shape {labels.shape} does not match the volumes' {ref.shape}")
        for k in np.unique(labels[labels > 0]):
            r, p = ref[labels == k], pred[labels == k]
            out[f"suvmean_{k}"] = _pct(p.mean() * suv_factor, r.mean() * suv_factor)
            out[f"suvmax_{k}"] = _pct(p.max() * suv_factor, r.max() * suv_factor)
            out[f"activity_{k}"] = _pct(p.sum() * voxel_volume_ml, r.sum() * voxel_volume_ml)
    return out


def body_mask(volume, threshold: float | None = None, *, modality: str = "CT") -> tuple[np.ndarray, str]:
    """Body mask of a volume (Z, Y, X) of `modality`: voxels > `threshold` (default: the
    modality's rule in `medgan_tf.modalities`, for CT −300 HU), the largest 3-D connected
    component (face connectivity, `scipy.ndimage.label`), holes filled slice by slice along axis 0
    (2-D `binary_fill_holes` per axial slice, so airways and bowel gas that reach the top or bottom
    of the volume are still filled). Returns the bool mask and that description."""
    ct = np.asarray(volume)
    rule = modalities.get(modality)
    if threshold is None:
        threshold = float(rule.mask_threshold(ct))
        said = rule.mask_rule if f"{threshold:g}" in rule.mask_rule else f"{rule.mask_rule} (= {threshold:.6g})"
    else:
        said = f"value > {threshold:g}"
    components, n = ndimage.label(ct > threshold)
    if n == 0:
        mask = np.zeros(ct.shape, dtype=bool)
    else:
        sizes = np.bincount(components.ravel())[1:]
        mask = components == (int(np.argmax(sizes)) + 1)
        mask = np.stack([ndimage.binary_fill_holes(s) for s in mask])
    description = (f"{said}, largest 3-D connected component, holes filled per axial "
                   "slice (scipy.ndimage.label, binary_fill_holes)")
    return mask, description


def paper(prediction, target, mask=None, *, target_params: Mapping | None = None, **_) -> dict[str, float]:
    """The paper's per-slice metrics (§3.3, Tables I/II; `medgan_tf.metrics`) on a volume pair
    (Z, Y, X) in physical units: each axial slice z of both volumes is normalized with the
    target's normalization parameters `target_params` (`medgan_tf.data.normalization`; without
    them, the target's min–max range → [−1, 1]), mapped to 0–255, and scored; MAE is in physical
    units. The value of each metric is its mean over the slices (finite values; +inf only when
    every slice is exact). `mask` is not used (the paper scores whole slices); a metric whose
    smallest slice side exceeds the volume's is left out."""
    from medgan_tf.data import normalization

    pred, ref = _pair(prediction, target)
    if target_params is None:
        low = float(ref.min())  # a constant target: a window of one unit above it, as normalization.fit keeps
        target_params = {"kind": "window", "low": low, "high": float(ref.max()) if ref.max() > low else low + 1.0}
    names = [n for n in per_slice_metrics() if METRICS.get(n).function is not None
             and METRICS.get(n).minimum_size <= min(ref.shape[1:])]
    per_slice: dict[str, list[float]] = {n: [] for n in names}
    for p_slice, r_slice in zip(pred, ref):
        p255, r255 = (to_255(normalization.normalize(a, target_params)) for a in (p_slice, r_slice))
        for name in names:
            metric = METRICS.get(name)
            args = (p_slice, r_slice) if metric.scale == "physical" else (p255, r255)
            per_slice[name].append(float(metric.function(*args)))
    out = {}
    for name, values in per_slice.items():
        finite = [v for v in values if math.isfinite(v)]
        out[name] = float(np.mean(finite)) if finite else float(values[0]) if values else float("nan")
    return out


CASE_INPUTS = ("labels", "suv_factor", "voxel_volume_ml", "target_params")
"""What a protocol may ask of each scored case besides the volumes and the mask (`Protocol.inputs`):
labels — integer label map (Z, Y, X), 0 = background; suv_factor — SUV per unit of the target
(1.0 when unknown); voxel_volume_ml — one voxel in ml; target_params — the task's normalization
parameters fitted on the target (`medgan_tf.data.normalization`)."""


def per_slice_metrics() -> tuple[str, ...]:
    """Every per-slice metric of the table (0–255 scale and physical), in table order. Read at call
    time, so a metric registered later (a plug-in, a test) is a column of the paper protocol too."""
    return tuple(name for name in metric_names() if METRICS.get(name).scale != "volume")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named evaluation protocol: everything the scoring, the reports and the command line
    need to know about it.

    function:    (prediction, target, mask, **inputs) -> {metric: value}, volumes (Z, Y, X) in
                 physical units on one grid.
    columns:     the metric-table entries (`medgan_tf.metrics.METRICS`) it reports, in table
                 order; or a function returning them (read when a table is made).
    regions:     per-region metrics: the function returns `<metric>_<label>` for each label > 0
                 of the label map; reported in their own table, with a Bland–Altman plot.
    masked:      scored inside a mask (the CSV's, or a computed body mask); else the whole volume.
    inputs:      the keyword inputs the function takes from each case (`CASE_INPUTS`).
    records:     also scores converted records slice by slice (`evaluate --data`, the paper's
                 comparison tables of `reproduce`).
    """

    name: str
    function: Callable[..., dict[str, float]]
    description: str
    source: str
    columns: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    regions: tuple[str, ...] = ()
    masked: bool = False
    inputs: tuple[str, ...] = ()
    records: bool = False

    def __post_init__(self) -> None:
        named = (() if callable(self.columns) else self.columns) + self.regions
        unknown = [name for name in named if name not in METRICS]
        if unknown:
            raise ValueError(f"protocol {self.name!r}: no metric {unknown} in the metric table; "
                             f"registered: {', '.join(METRICS.names())}")
        unknown = [name for name in self.inputs if name not in CASE_INPUTS]
        if unknown:
            raise ValueError(f"protocol {self.name!r}: unknown inputs {unknown}; expected some of {CASE_INPUTS}")

    @property
    def metrics(self) -> tuple[str, ...]:
        """The protocol's columns (without its per-region metrics), in table order."""
        return tuple(self.columns()) if callable(self.columns) else self.columns


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.add("paper", Protocol(
    "paper", paper, "the MedGAN paper's metrics (Tables I/II) per axial slice on the 0–255 scale",
    "Armanious et al., arXiv 1806.06397, §3.3", columns=per_slice_metrics, inputs=("target_params",),
    records=True))
PROTOCOLS.add("synthrad2023", Protocol(
    "synthrad2023", synthrad2023, "SynthRAD2023 synthetic-CT image metrics inside the body mask",
    "github.com/SynthRAD2023/metrics functions/image_metrics.py", columns=("ssim", "psnr", "mae"), masked=True))
PROTOCOLS.add("synthrad2025", Protocol(
    "synthrad2025", synthrad2025, "SynthRAD2025 synthetic-CT image metrics inside the body mask",
    "github.com/SynthRAD2025/evaluation image_metrics.py", columns=("psnr", "mae", "ms_ssim"), masked=True))
PROTOCOLS.add("pet", Protocol(
    "pet", pet, "UDPET low-dose PET metrics, with per-region SUV and activity % errors",
    "UDPET challenge evaluation script (udpet-challenge.github.io)", columns=("ssim", "psnr", "nrmse"),
    regions=("suvmean", "suvmax", "activity"), inputs=("labels", "suv_factor", "voxel_volume_ml")))


def protocol(name: str) -> Protocol:
    """The registered protocol `name`; a UserError listing the registered ones otherwise."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS.names())}")
    return PROTOCOLS.get(name)


def records_protocol() -> Protocol:
    """The protocol that scores converted records slice by slice (`evaluate --data`)."""
    return next(p for _, p in PROTOCOLS.items() if p.records)


def volume_protocols() -> tuple[str, ...]:
    """Names of the protocols that score whole volumes only (`reproduce --protocol` tables)."""
    return tuple(name for name, p in PROTOCOLS.items() if not p.records)
