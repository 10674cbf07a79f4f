"""Paired simulations of three further translation tasks, from the same phantoms (one label map
per patient drives both images of a pair, so they are aligned voxel for voxel):

- `simulate_mr_ct`:     the head imaged twice — T1-weighted MR (a.u.) and CT (HU). Cortical bone
                        and air are both dark on MR; on CT bone is bright and air black.
- `simulate_cbct_ct`:   a cone-beam CT made from the CT in projection space (scatter, few photons,
                        a detector narrower than the patient) → cupping, noise and truncation.
- `simulate_ct_denoise`: quarter-dose vs full-dose CT from one set of photons (binomial thinning).

Each takes a numpy Generator (deterministic per seed), draws a new patient (anatomy, contrast,
dose, scatter) and returns (source (I, J, K) float32, target (I, J, K) float32, affine 4×4
RAS+ mm, extras dict). Axis 2 is the slice (I-S) axis; the CT physics works per axial slice with a
parallel-beam geometry (a fan- or cone-beam scanner rebinned to parallel rays, cone angle
neglected) — see `ct_physics`.
"""

from __future__ import annotations

import numpy as np

from medgan_tf.data.phantoms import ct_physics
from medgan_tf.data.phantoms.body import body_maps, random_body
from medgan_tf.data.phantoms.geometry import axial_affine, grid_world
from medgan_tf.data.phantoms.head import head_maps, random_head
from medgan_tf.data.phantoms.physics import bias_field, kspace_motion
from medgan_tf.data.phantoms.tissues import LESION, MR_T1, WHITE_MATTER, ct_from_labels, lookup

Pair = tuple[np.ndarray, np.ndarray, np.ndarray, dict]

MR_CT_SHAPE = (96, 96, 64)  # fov/96 in plane × 3 mm: maxillary sinuses up to the upper brain (vertex cut)
CBCT_SHAPE = (96, 96, 16)
CT_DENOISE_SHAPE = (96, 96, 16)

# Full-dose photons per detector bin and view (unattenuated) on the default grid: about 7–10 HU of
# noise in the liver of an adult-sized trunk (routine abdominal CT, 120 kVp, 3 mm slices).
FULL_DOSE_PHOTONS = 3.0e5
QUARTER_DOSE = 0.25  # AAPM/Mayo Low Dose CT Grand Challenge: quarter dose by projection-noise insertion
# CBCT: an order of magnitude fewer photons per projection than diagnostic CT.
CBCT_PHOTONS = 3.0e4
# Scatter-to-primary ratio behind the patient's centre. Flat-panel CBCT measures from ≈ 0.1 (head,
# small field) to above 1 (pelvis, wide cone) without scatter rejection (Siewerdsen JH, Jaffray DA.
# Cone-beam computed tomography with a flat-panel imager: magnitude and effects of x-ray scatter.
# Med Phys 2001;28:220–231); drawn here from the lower part of that range, as with a bow-tie filter
# and an anti-scatter grid.
CBCT_SPR = {"pelvis": (0.3, 0.8), "head": (0.1, 0.3)}
# Radius of the scan field of view / the patient's half width: the pelvis of a large patient
# overhangs the detector (truncation); a head fits inside.
CBCT_FOV = {"pelvis": (0.78, 0.92), "head": (1.02, 1.1)}


def _slices(volume: np.ndarray) -> np.ndarray:
    return np.moveaxis(volume, 2, 0)


def _volume(slices: np.ndarray) -> np.ndarray:
    return np.moveaxis(slices, 0, 2).astype(np.float32)


def simulate_mr_ct(rng: np.random.Generator, field_of_view_mm: float = 256.0,
                   shape: tuple[int, int, int] = MR_CT_SHAPE, slice_mm: float = 3.0) -> Pair:
    """(T1-weighted MR a.u. ≥ 0, CT HU) of one head on one grid.

    MR: each tissue's T1 spin-echo value (`tissues.MR_T1`) × a per-patient factor 0.9–1.1 per
    tissue and a scanner gain 0.8–1.25, × the receive-coil bias field, sampled in k-space with
    complex Gaussian noise (σ 0.6–1.5 % of white matter) → magnitude (Rician). CT: the textbook
    HU of the same labels (cortical bone 1000–1900 HU, diploë 300–700 HU, air −1000 HU).
    """
    affine = axial_affine(shape, (field_of_view_mm / shape[0], field_of_view_mm / shape[1], slice_mm),
                          shift=(0.0, 0.0, -0.025 * field_of_view_mm))
    phantom = random_head(rng, field_of_view_mm)
    labels, density, lesion_index = head_maps(phantom, grid_world(shape, affine))
    contrast = {label: value * float(rng.uniform(0.9, 1.1)) for label, value in MR_T1.items()}
    gain = float(rng.uniform(0.8, 1.25))
    t1 = lookup(labels, contrast)
    for k, value in enumerate(phantom.lesion_t1):
        t1[lesion_index == k + 1] = value * contrast[LESION] / MR_T1[LESION]  # lesions follow the patient's contrast
    noise_sd = float(rng.uniform(0.006, 0.015)) * contrast[WHITE_MATTER] * gain
    image = t1 * gain * bias_field(shape, rng)
    mr = kspace_motion([image], np.zeros(shape[1], dtype=int), rng, noise_sd=noise_sd)
    ct = ct_from_labels(labels, density, rng)
    extras = {"labels": labels, "phantom": phantom, "mr_gain": gain, "mr_noise_sd": noise_sd}
    return mr.astype(np.float32), ct, affine, extras


def _anatomy(site: str, rng: np.random.Generator, fov: float, shape, slice_mm: float, trunk_level: float):
    """(labels, bone density, affine, largest in-plane half extent of the patient in mm, phantom)."""
    affine = axial_affine(shape, (fov / shape[0], fov / shape[1], slice_mm))
    world = grid_world(shape, affine)
    if site == "head":
        phantom = random_head(rng, fov)
        labels, density, _ = head_maps(phantom, world)
        return labels, density, affine, max(phantom.semi_axes[:2]), phantom
    phantom = random_body(rng, fov)
    span = 0.2 if site == "pelvis" else 0.3  # trunk levels covered by the slab
    trunk = (trunk_level + rng.uniform(-0.03, 0.03), shape[2] * slice_mm / span)
    labels, density, _ = body_maps(phantom, world, trunk)
    return labels, density, affine, phantom.half_width, phantom


def simulate_cbct_ct(rng: np.random.Generator, field_of_view_mm: float = 400.0,
                     shape: tuple[int, int, int] = CBCT_SHAPE, slice_mm: float = 3.0, site: str = "pelvis") -> Pair:
    """(CBCT HU, CT HU) of one patient: `site` "pelvis" (trunk levels ≈ 0.78–0.98: bladder, iliac
    bones, sacrum level) or "head".

    The CT (the target, `tissues.ct_from_labels`) → μ → line integrals p → expected primary
    I0·e^−p with I0 = `CBCT_PHOTONS` × 0.7–1.4 → plus scatter (SPR behind the centre drawn from
    `CBCT_SPR[site]`) → Poisson → −ln(counts / I0) (scatter uncorrected: cupping and shading) →
    detector of half-width `CBCT_FOV[site]` × the patient's half width (truncated tails extrapolated) →
    FBP → HU; outside the scan field of view: air (−1000 HU).
    """
    level = 0.88
    labels, density, affine, half_width, phantom = _anatomy(site, rng, field_of_view_mm, shape, slice_mm, level)
    ct = ct_from_labels(labels, density, rng)
    pixel = field_of_view_mm / shape[0]
    photons = CBCT_PHOTONS * float(rng.uniform(0.7, 1.4))
    spr = float(rng.uniform(*CBCT_SPR[site]))
    fov_radius = min(half_width * float(rng.uniform(*CBCT_FOV[site])), pixel * (shape[0] - 1) / 2.0)
    cbct = ct_physics.simulate_cbct(_slices(ct), pixel, rng, photons=photons, spr_centre=spr, fov_radius_mm=fov_radius,
                                    slice_mm=slice_mm)
    extras = {"labels": labels, "phantom": phantom, "photons": photons, "spr_centre": spr,
              "fov_radius_mm": fov_radius, "site": site}
    return _volume(cbct), ct, affine, extras


def simulate_ct_denoise(rng: np.random.Generator, field_of_view_mm: float = 400.0,
                        shape: tuple[int, int, int] = CT_DENOISE_SHAPE, slice_mm: float = 3.0,
                        full_dose_photons: float = FULL_DOSE_PHOTONS) -> Pair:
    """(quarter-dose CT HU, full-dose CT HU) of one abdomen (trunk levels ≈ 0.45–0.75: liver with
    low-contrast lesions, spleen, kidneys), as in the AAPM/Mayo Low Dose CT Grand Challenge
    (McCollough CH et al. Med Phys 2017;44:e339–e352): the target is the routine full-dose scan,
    itself noisy; the source is a quarter dose simulated from the same projections (Yu L et al.
    J Comput Assist Tomogr 2012;36:477–487).

    Noise-free CT of the labels → line integrals → Poisson counts at I0 = `full_dose_photons` ×
    0.8–1.25 (patient and tube current) → binomial thinning to `QUARTER_DOSE` → −ln(counts / I0)
    of each → FBP → HU. Quarter dose: 4× fewer photons → 2× the noise standard deviation.
    """
    labels, density, affine, _, phantom = _anatomy("abdomen", rng, field_of_view_mm, shape, slice_mm, 0.6)
    truth = ct_from_labels(labels, density, rng, noise_hu=0.0)
    pixel = field_of_view_mm / shape[0]
    photons = full_dose_photons * float(rng.uniform(0.8, 1.25))
    target, source = ct_physics.simulate_dose_levels(_slices(truth), pixel, rng, photons=photons,
                                                     dose_fractions=(1.0, QUARTER_DOSE))
    # truth: the noise-free CT (I, J, K) HU that both scans image
    extras = {"labels": labels, "phantom": phantom, "photons": photons, "truth": truth}
    return _volume(source), _volume(target), affine, extras
