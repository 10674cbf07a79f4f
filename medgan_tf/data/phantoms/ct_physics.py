"""Transmission CT physics of the phantoms: CT numbers ↔ linear attenuation, line integrals by the
parallel-beam projector of `physics` (one 2-D fan-free geometry per axial slice), photon counting
(Poisson, binomial thinning to a lower dose), a convolution model of scatter, a detector narrower
than the patient (truncation, water-cylinder extrapolation) and filtered back-projection to HU.

Arrays of slices are (K, N, N) = (slice, row, column) as in `physics`; sinograms are (K, A, N) =
(slice, view angle, detector bin) with one bin per image pixel; line integrals are dimensionless
(μ in 1/mm × mm); counts are photons per detector bin and view.

- μ of water: 0.0193 /mm, water at ≈ 70 keV, the effective energy of a 120 kVp beam (NIST XCOM:
  μ/ρ of water 0.2059 cm²/g at 60 keV and 0.1837 cm²/g at 80 keV). HU = 1000 (μ/μ_water − 1).
- Scatter: the convolution ("scatter kernel") model, where the scatter reaching the detector is
  the scatter potential P·p (transmitted primary × line integral) blurred by a wide kernel
  (Ohnesorge B, Flohr T, Klingenbeck-Regn K. Efficient object scatter correction algorithm for
  third and fourth generation CT scanners. Eur Radiol 1999;9:563–569), scaled to a
  scatter-to-primary ratio (SPR) behind the patient's centre.
- Truncation: the missing tails of each projection are filled in by a water cylinder fitted to
  the edge value (after Hsieh J, Chao E, Thibault J et al. A novel reconstruction algorithm to
  extend the CT scan field-of-view. Med Phys 2004;31:2385–2391); outside the scan field of view
  the reconstruction is set to air, as scanners do.
"""

from __future__ import annotations

import math

import numpy as np

from medgan_tf.data.phantoms.physics import filtered_back_projection, forward_project

MU_WATER_PER_MM = 0.0193
HU_RANGE = (-1024.0, 3071.0)  # the 12-bit range scanners store
SCATTER_KERNEL_MM = 80.0  # σ of the scatter kernel at the detector: scatter is low-frequency


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """Linear attenuation (1/mm, ≥ 0) of CT numbers (HU), any shape."""
    return np.clip(MU_WATER_PER_MM * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0, None)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    """CT numbers (HU) of linear attenuation (1/mm), any shape."""
    return 1000.0 * (np.asarray(mu) / MU_WATER_PER_MM - 1.0)


def view_angles(size: int) -> np.ndarray:
    """View angles (degrees, 0–180°): ⌈π/2 · N⌉ views, enough for an N-pixel slice (as for PET)."""
    return np.linspace(0.0, 180.0, int(math.ceil(math.pi / 2 * size)), endpoint=False)


def line_integrals(hu_slices: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(line integrals (K, A, N) dimensionless, view angles (A,) degrees) of slices (K, N, N) in HU."""
    angles = view_angles(hu_slices.shape[-1])
    return forward_project(hu_to_mu(hu_slices), angles) * pixel_mm, angles


def reconstruct_hu(integrals: np.ndarray, angles: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Filtered back-projection of line integrals (K, A, N) → slices (K, N, N) in HU, clipped to
    the scanner's stored range."""
    mu = filtered_back_projection(integrals, angles) / pixel_mm
    return np.clip(mu_to_hu(mu), *HU_RANGE)


def count_photons(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson photon counts (float64) with mean `expected` (any shape)."""
    return rng.poisson(expected).astype(np.float64)


def thin_counts(counts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Counts of an acquisition at `fraction` of the dose from the same photons: each photon kept
    with probability `fraction` (binomial thinning of a Poisson variable is Poisson with the
    mean × `fraction`, the principle of projection-domain low-dose simulation)."""
    return rng.binomial(counts.astype(np.int64), fraction).astype(np.float64)


def log_transform(counts: np.ndarray, unattenuated: float | np.ndarray) -> np.ndarray:
    """Measured line integrals −ln(counts / I0); zero counts count as 0.5 photon (no infinite
    line integral), as photon-starved rays are floored before the log on scanners."""
    return -np.log(np.maximum(counts, 0.5) / unattenuated)


def scatter_term(primary: np.ndarray, integrals: np.ndarray, spr_centre: float, pixel_mm: float,
                 slice_mm: float | None = None, kernel_sigma_mm: float = SCATTER_KERNEL_MM) -> np.ndarray:
    """Expected scatter (K, A, N) in photons: the scatter potential primary × line integral,
    blurred by a Gaussian kernel of `kernel_sigma_mm` across the detector (bins `pixel_mm` and
    slices `slice_mm` apart, default `pixel_mm`: the rows of a flat panel), scaled so that
    scatter / primary = `spr_centre` on the central detector bin (the ray through the isocentre),
    averaged over slices and views."""
    from scipy import ndimage

    sigma = kernel_sigma_mm / pixel_mm
    sigma_slices = kernel_sigma_mm / (slice_mm or pixel_mm)
    blurred = ndimage.gaussian_filter(primary * integrals, sigma=(sigma_slices, 0.0, sigma), mode="nearest")
    centre = slice(primary.shape[-1] // 2 - 1, primary.shape[-1] // 2 + 1)
    scale = spr_centre * primary[..., centre].mean() / max(float(blurred[..., centre].mean()), 1e-12)
    return blurred * scale


def detector_bins(size: int, pixel_mm: float) -> np.ndarray:
    """Signed distance (mm) of each detector bin (N,) from the rotation axis."""
    return (np.arange(size) - (size - 1) / 2.0) * pixel_mm


def _water_cylinder_tail(value: np.ndarray, slope: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Projection beyond an edge bin of a water cylinder with the edge's value p_e and outward
    slope p'_e (both (K, A, 1)) at `distance` (M,) mm past the edge. With
    p(s) = 2 μ √(R² − (s − c)²): offset of the centre d = −p_e p'_e / (4 μ²) ≥ 0 and
    R² = (p_e / 2μ)² + d²."""
    mu = MU_WATER_PER_MM
    offset = np.clip(-value * slope / (4.0 * mu * mu), 0.0, None)
    radius_sq = (value / (2.0 * mu)) ** 2 + offset ** 2
    return 2.0 * mu * np.sqrt(np.clip(radius_sq - (offset + distance) ** 2, 0.0, None))


def truncate_and_extrapolate(integrals: np.ndarray, fov_radius_mm: float, pixel_mm: float,
                             slope_bins: int = 3) -> np.ndarray:
    """Line integrals (K, A, N) measured by a detector covering only |s| ≤ `fov_radius_mm`, the
    missing tails filled in by the water cylinder matching each edge's value and slope (slope
    over the last `slope_bins` bins inside)."""
    s = detector_bins(integrals.shape[-1], pixel_mm)
    inside = np.abs(s) <= fov_radius_mm
    first, last = int(np.argmax(inside)), int(len(s) - 1 - np.argmax(inside[::-1]))
    out = np.where(inside, integrals, 0.0)
    for edge, step, beyond in ((first, 1, s < s[first]), (last, -1, s > s[last])):
        value = np.clip(integrals[..., edge:edge + 1], 0.0, None)  # (K, A, 1)
        inner = integrals[..., edge + step * slope_bins:edge + step * slope_bins + 1]
        slope = (value - inner) / (slope_bins * pixel_mm)  # outward: negative when the body thins
        out[..., beyond] = _water_cylinder_tail(value, slope, np.abs(s[beyond] - s[edge]))
    return out


def outside_field_of_view(size: int, fov_radius_mm: float, pixel_mm: float) -> np.ndarray:
    """Pixels (N, N) of a slice outside the circle a detector of half-width `fov_radius_mm` sees."""
    s = detector_bins(size, pixel_mm)
    return (s[:, None] ** 2 + s[None, :] ** 2) > fov_radius_mm ** 2


def simulate_dose_levels(hu_slices: np.ndarray, pixel_mm: float, rng: np.random.Generator, *, photons: float,
                         dose_fractions: tuple[float, ...] = (1.0,)) -> list[np.ndarray]:
    """Reconstructions (K, N, N) in HU of slices `hu_slices` (K, N, N) HU scanned with `photons`
    per detector bin and view (unattenuated) and, from the same photons thinned, at each of
    `dose_fractions` (1.0 = all photons). Noise σ scales as 1/√fraction (quarter dose: × 2)."""
    integrals, angles = line_integrals(hu_slices, pixel_mm)
    counts = count_photons(photons * np.exp(-integrals), rng)
    images = []
    for fraction in dose_fractions:
        kept = counts if fraction >= 1.0 else thin_counts(counts, fraction, rng)
        images.append(reconstruct_hu(log_transform(kept, photons * fraction), angles, pixel_mm))
    return images


def simulate_cbct(hu_slices: np.ndarray, pixel_mm: float, rng: np.random.Generator, *, photons: float,
                  spr_centre: float, fov_radius_mm: float, slice_mm: float | None = None) -> np.ndarray:
    """A cone-beam CT (K, N, N) in HU of slices `hu_slices` (K, N, N) HU: line integrals →
    primary `photons`·e^−p plus scatter (`scatter_term`, SPR `spr_centre` behind the centre) →
    Poisson → −ln(counts / photons), the scatter left uncorrected (→ cupping and shading) →
    detector |s| ≤ `fov_radius_mm` (tails extrapolated) → FBP → HU; outside the field of view
    air (−1000 HU). `slice_mm`: slice spacing (default `pixel_mm`), for the scatter kernel."""
    integrals, angles = line_integrals(hu_slices, pixel_mm)
    primary = photons * np.exp(-integrals)
    scatter = scatter_term(primary, integrals, spr_centre, pixel_mm, slice_mm)
    measured = log_transform(count_photons(primary + scatter, rng), photons)
    measured = truncate_and_extrapolate(measured, fov_radius_mm, pixel_mm)
    image = reconstruct_hu(measured, angles, pixel_mm)
    image[:, outside_field_of_view(hu_slices.shape[-1], fov_radius_mm, pixel_mm)] = -1000.0
    return image
