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
                 kernel_sigma_mm: float = 30.0) -> np.ndarray:
    """Expected scatter (K, A, N) in photons: the scatter potential primary × line integral,
    blurred by a Gaussian kernel of `kernel_sigma_mm` across the detector (bins and slices, as on
    a flat panel), scaled so that scatter / primary = `spr_centre` on the central detector bin
    (the ray through the isocentre), averaged over slices and views."""
    from scipy import ndimage

    sigma = kernel_sigma_mm / pixel_mm
    blurred = ndimage.gaussian_filter(primary * integrals, sigma=(sigma, 0.0, sigma), mode="nearest")
    centre = slice(primary.shape[-1] // 2 - 1, primary.shape[-1] // 2 + 1)
    scale = spr_centre * primary[..., centre].mean() / max(float(blurred[..., centre].mean()), 1e-12)
    return blurred * scale


def detector_bins(size: int, pixel_mm: float) -> np.ndarray:
    """Signed distance (mm) of each detector bin (N,) from the rotation axis."""
    return (np.arange(size) - (size - 1) / 2.0) * pixel_mm


def truncate_and_extrapolate(integrals: np.ndarray, fov_radius_mm: float, pixel_mm: float) -> np.ndarray:
    """Line integrals (K, A, N) measured by a detector covering only |s| ≤ `fov_radius_mm`, the
    missing tails filled in by a water cylinder centred on each edge bin whose chord through the
    edge matches the edge value p_e: p(d) = p_e · √(1 − (d / L)²), L = p_e / (2 μ_water)."""
    s = detector_bins(integrals.shape[-1], pixel_mm)
    inside = np.abs(s) <= fov_radius_mm
    first, last = int(np.argmax(inside)), int(len(s) - 1 - np.argmax(inside[::-1]))
    out = np.where(inside, integrals, 0.0)
    for edge, beyond in ((first, s < s[first]), (last, s > s[last])):
        value = integrals[..., edge:edge + 1]  # (K, A, 1)
        reach = value / (2.0 * MU_WATER_PER_MM)  # mm
        distance = np.abs(s[beyond] - s[edge])  # (M,)
        ratio = np.clip(1.0 - (distance / np.maximum(reach, 1e-9)) ** 2, 0.0, None)
        out[..., beyond] = value * np.sqrt(ratio)
    return out


def outside_field_of_view(size: int, fov_radius_mm: float, pixel_mm: float) -> np.ndarray:
    """Pixels (N, N) of a slice outside the circle a detector of half-width `fov_radius_mm` sees."""
    s = detector_bins(size, pixel_mm)
    return (s[:, None] ** 2 + s[None, :] ** 2) > fov_radius_mm ** 2
