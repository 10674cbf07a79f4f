"""Built-in synthetic datasets: anatomical head phantoms and physically sensible simulation.

One analytic head phantom per patient (scalp, subcutaneous fat, skull, CSF, folded grey matter,
white matter, ventricles and 0–2 lesions), evaluated in world millimetres after a per-patient
random pose, scale and smooth deformation, gives a tissue-label map on any grid. From it
(paper §3.1):

- pet_ct:      one label map → CT in HU (air −1000, fat ≈ −100, soft tissue ≈ 40, brain ≈ 30,
               bone 700–1500) on a 0.85-like fine grid, and FDG uptake in Bq/ml on a coarser PET
               grid, blurred by the scanner PSF and reconstructed from Poisson projection data.
- pet_denoise: activity → projections → Poisson counts of the full acquisition; the 25 %-time
               acquisition keeps each count with probability 0.25 (binomial thinning, i.e. the
               first quarter of the same list-mode data) → both reconstructed by filtered back-
               projection; the 25 % image is divided by 0.25 so both are in Bq/ml. Noise in
               reconstructions is linear in the counts' noise: its standard deviation doubles.
- mr_motion:   T1 spin-echo contrast; the motion-free image is sampled in k-space once; the
               motion-corrupted one fills its phase-encoding lines (axis j) from the head at
               different rigid poses, as when the subject moves between lines → ghosting along
               the phase-encoding direction.

Everything is numpy/scipy (no scikit-image), deterministic per (seed, patient), and small
(≤ 112² × 16 voxels) so a patient takes about a second.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np

from medgan_tf.data.io import Volume, write_nifti

AIR, SOFT_TISSUE, FAT, BONE, CSF, GREY_MATTER, WHITE_MATTER, LESION = range(8)
TISSUES = ("air", "soft_tissue", "fat", "bone", "csf", "grey_matter", "white_matter", "lesion")

# CT numbers (HU) per tissue; bone gets a smooth 700–1500 HU field instead (diploe vs cortex).
CT_HU = {AIR: -1000.0, SOFT_TISSUE: 40.0, FAT: -100.0, BONE: 1100.0, CSF: 8.0, GREY_MATTER: 38.0, WHITE_MATTER: 28.0, LESION: 55.0}
# FDG uptake in SUV (g/ml); Bq/ml = SUV · injected dose / body weight.
PET_SUV = {AIR: 0.0, SOFT_TISSUE: 1.0, FAT: 0.4, BONE: 0.8, CSF: 0.3, GREY_MATTER: 8.0, WHITE_MATTER: 3.0, LESION: 12.0}
# T1-weighted spin-echo signal (a.u.): fat and white matter bright, CSF and cortical bone dark.
MR_T1 = {AIR: 0.0, SOFT_TISSUE: 600.0, FAT: 1000.0, BONE: 80.0, CSF: 200.0, GREY_MATTER: 550.0, WHITE_MATTER: 800.0, LESION: 350.0}

BQML_PER_SUV = 300e6 / 75e3  # 300 MBq injected into 75 kg: 4000 Bq/ml per SUV


@dataclasses.dataclass(frozen=True)
class HeadPhantom:
    """Per-patient shape parameters of the head phantom (all lengths in mm)."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]  # x (L-R), y (A-P), z (I-S)
    yaw_degrees: float
    deformation: tuple[tuple[float, ...], ...]  # rows: (amplitude mm, kx, ky, kz, phase, axis)
    gyri: tuple[int, int, float]  # (angular frequency, axial frequency, phase)
    lesions: tuple[tuple[float, float, float, float], ...]  # (x, y, z, radius)
    bone_phase: float


def random_head(rng: np.random.Generator, field_of_view_mm: float) -> HeadPhantom:
    """A head that fills ~75–90 % of a square field of view, with random pose and shape."""
    scale = field_of_view_mm * rng.uniform(0.94, 1.04)
    semi_axes = (0.36 * scale, 0.44 * scale, 0.5 * scale)
    deformation = []
    for axis in range(3):
        for _ in range(2):
            k = rng.uniform(0.5, 2.0, size=3) * 2 * math.pi / field_of_view_mm
            deformation.append((rng.uniform(0.5, 1.5) * 0.02 * field_of_view_mm, *k, rng.uniform(0, 2 * math.pi), axis))
    lesions = []
    for _ in range(int(rng.integers(0, 3))):
        radius = rng.uniform(0.03, 0.07) * field_of_view_mm
        angle = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.2, 0.5)
        lesions.append((distance * semi_axes[0] * math.cos(angle), distance * semi_axes[1] * math.sin(angle), rng.uniform(-4, 4), radius))
    return HeadPhantom(
        centre=tuple(rng.uniform(-0.02, 0.02, size=3) * field_of_view_mm),
        semi_axes=semi_axes,
        yaw_degrees=float(rng.uniform(-8, 8)),
        deformation=tuple(deformation),
        gyri=(int(rng.integers(9, 15)), int(rng.integers(2, 5)), float(rng.uniform(0, 2 * math.pi))),
        lesions=tuple(lesions),
        bone_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def grid_world(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel centre: (I, J, K, 3)."""
    indices = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    return indices @ affine[:3, :3].T + affine[:3, 3]


def rigid_motion(world: np.ndarray, yaw_degrees: float, shift_mm: tuple[float, float, float]) -> np.ndarray:
    """World points seen by a head that rotated by `yaw_degrees` about z and moved by `shift_mm`:
    the point x of the scanner shows the head's point R⁻¹(x − t)."""
    angle = math.radians(yaw_degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    return (world - np.asarray(shift_mm)) @ rotation  # row vectors: (R⁻¹ p)ᵀ = pᵀ R


def head_labels(phantom: HeadPhantom, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue labels (uint8, world.shape[:-1]) and a bone-density field in [0, 1] at `world` (mm)."""
    angle = math.radians(phantom.yaw_degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    local = (world - np.asarray(phantom.centre)) @ rotation
    displaced = local.copy()
    for amplitude, kx, ky, kz, phase, axis in phantom.deformation:
        displaced[..., int(axis)] += amplitude * np.sin(local[..., 0] * kx + local[..., 1] * ky + local[..., 2] * kz + phase)
    semi_axes = np.asarray(phantom.semi_axes)
    radius = np.linalg.norm(displaced / semi_axes, axis=-1)
    azimuth = np.arctan2(displaced[..., 1] / semi_axes[1], displaced[..., 0] / semi_axes[0])
    frequency, axial, gyri_phase = phantom.gyri
    folding = 0.045 * np.sin(frequency * azimuth + gyri_phase) * np.cos(axial * displaced[..., 2] / semi_axes[2] * math.pi)

    labels = np.full(radius.shape, AIR, dtype=np.uint8)
    labels[radius < 1.0] = SOFT_TISSUE
    labels[radius < 0.955] = FAT
    labels[radius < 0.93] = BONE
    labels[radius < 0.85] = CSF
    labels[radius < 0.825] = GREY_MATTER
    labels[radius < 0.71 + folding] = WHITE_MATTER
    # Lateral ventricles: two ellipsoids beside the midline.
    for side in (-1.0, 1.0):
        offset = (displaced - np.array([side * 0.1, 0.05, 0.0]) * semi_axes) / (np.array([0.07, 0.26, 0.4]) * semi_axes)
        labels[np.linalg.norm(offset, axis=-1) < 1.0] = CSF
    for x, y, z, lesion_radius in phantom.lesions:
        inside = np.linalg.norm(displaced - np.array([x, y, z]), axis=-1) < lesion_radius
        labels[inside & (labels >= GREY_MATTER)] = LESION
    bone_density = 0.5 + 0.5 * np.sin(3.0 * azimuth + phantom.bone_phase) * np.cos(2.0 * displaced[..., 2] / semi_axes[2])
    return labels, bone_density


def ct_from_labels(labels: np.ndarray, bone_density: np.ndarray, rng: np.random.Generator, noise_hu: float = 4.0) -> np.ndarray:
    """CT numbers (HU, float32): tissue values, bone 750–1450 HU from `bone_density`, quantum noise."""
    hu = np.vectorize(CT_HU.get, otypes=[np.float64])(labels)
    bone = labels == BONE
    hu[bone] = 750.0 + 700.0 * bone_density[bone]
    # Quantum noise, truncated at ±2.5 σ so every tissue keeps its textbook HU range.
    hu += np.clip(rng.normal(0.0, noise_hu, size=hu.shape), -2.5 * noise_hu, 2.5 * noise_hu)
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32)


def mr_from_labels(labels: np.ndarray) -> np.ndarray:
    """Noise-free T1 spin-echo magnitude (a.u.)."""
    return np.vectorize(MR_T1.get, otypes=[np.float64])(labels)


def suv_from_labels(labels: np.ndarray) -> np.ndarray:
    return np.vectorize(PET_SUV.get, otypes=[np.float64])(labels)


# --------------------------------------------------------------------------- PET physics


def _rotate(stack: np.ndarray, degrees: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.rotate(stack, degrees, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)


def forward_project(activity: np.ndarray, angles_degrees: np.ndarray) -> np.ndarray:
    """Parallel-beam line integrals of each slice: (K, N, N) → sinograms (K, A, N), in
    activity·pixel units (rotation-based projector: rotate the slice, sum along rows)."""
    return np.stack([_rotate(activity, angle).sum(axis=1) for angle in angles_degrees], axis=1)


def _ramp_filter(sinogram: np.ndarray) -> np.ndarray:
    """Ram-Lak ramp (spatial kernel h[0]=1/4, h[odd n]=−1/(πn)², Kak & Slaney eq. 3.61) with a
    Hann apodization, applied along the detector axis."""
    size = sinogram.shape[-1]
    padded = int(2 ** math.ceil(math.log2(2 * size)))
    n = np.concatenate([np.arange(0, padded // 2 + 1), np.arange(-padded // 2 + 1, 0)])
    kernel = np.zeros(padded)
    kernel[0] = 0.25
    odd = n % 2 == 1
    kernel[odd] = -1.0 / (math.pi * n[odd]) ** 2
    response = np.real(np.fft.fft(kernel))
    frequency = np.abs(np.fft.fftfreq(padded))
    response *= 0.5 + 0.5 * np.cos(math.pi * frequency / 0.5)
    spectrum = np.fft.fft(sinogram, n=padded, axis=-1) * response
    return np.real(np.fft.ifft(spectrum, axis=-1))[..., :size]


def filtered_back_projection(sinogram: np.ndarray, angles_degrees: np.ndarray) -> np.ndarray:
    """Inverse of `forward_project` over 0–180°: (K, A, N) → (K, N, N)."""
    filtered = _ramp_filter(sinogram)
    size = sinogram.shape[-1]
    image = np.zeros((sinogram.shape[0], size, size))
    for index, angle in enumerate(angles_degrees):
        smeared = np.repeat(filtered[:, index, None, :], size, axis=1)
        image += _rotate(smeared, -angle)
    return image * math.pi / len(angles_degrees)


def simulate_pet_acquisitions(
    activity: np.ndarray,
    rng: np.random.Generator,
    *,
    count_fractions: tuple[float, ...] = (1.0,),
    counts_per_slice: float = 4e5,
    psf_fwhm_pixels: float = 1.5,
    post_filter_fwhm_pixels: float = 1.2,
) -> list[np.ndarray]:
    """Reconstructed PET images (K, N, N), in the unit of `activity`, one per acquisition time
    fraction, from one Poisson list of counts thinned for the shorter acquisitions.

    activity → scanner PSF → forward projection → expected counts (≈ `counts_per_slice` per slice
    for the full acquisition) → Poisson → binomial thinning to each fraction → FBP → divided by
    (fraction · sensitivity) so every image estimates the same activity → post-filter.
    """
    from scipy import ndimage

    sigma = psf_fwhm_pixels / 2.3548
    blurred = ndimage.gaussian_filter(activity, sigma=(0, sigma, sigma))
    size = activity.shape[-1]
    angles = np.linspace(0.0, 180.0, int(math.ceil(math.pi / 2 * size)), endpoint=False)
    expected = forward_project(blurred, angles)
    sensitivity = counts_per_slice * activity.shape[0] / max(float(expected.sum()), 1e-12)
    counts = rng.poisson(expected * sensitivity)
    images = []
    for fraction in count_fractions:
        kept = counts if fraction >= 1.0 else rng.binomial(counts, fraction)
        image = filtered_back_projection(kept.astype(np.float64), angles) / (sensitivity * fraction)
        post_sigma = post_filter_fwhm_pixels / 2.3548
        image = ndimage.gaussian_filter(image, sigma=(0, post_sigma, post_sigma))
        images.append(np.clip(image, 0.0, None))  # scanners report non-negative activity
    return images


# --------------------------------------------------------------------------- MR physics


def kspace_motion(
    images_by_pose: list[np.ndarray],
    line_pose: np.ndarray,
    rng: np.random.Generator,
    *,
    noise_sd: float = 6.0,
    phase_encoding_axis: int = 1,
) -> np.ndarray:
    """Magnitude image whose phase-encoding line m comes from the head at pose `line_pose[m]`.

    images_by_pose: noise-free images (I, J, K) of the head at each pose; 2-D k-space per slice
    (axes 0, 1), lines indexed along `phase_encoding_axis`. Complex Gaussian noise of
    `noise_sd` per image-domain pixel (magnitude → Rician background).
    """
    kspace = None
    for pose, image in enumerate(images_by_pose):
        spectrum = np.fft.fftshift(np.fft.fft2(image, axes=(0, 1)), axes=(0, 1))
        if kspace is None:
            kspace = np.zeros_like(spectrum)
        lines = line_pose == pose
        index = [slice(None)] * 3
        index[phase_encoding_axis] = lines
        kspace[tuple(index)] = spectrum[tuple(index)]
    size = kspace.shape[0] * kspace.shape[1]
    noise = rng.normal(0, noise_sd, kspace.shape) + 1j * rng.normal(0, noise_sd, kspace.shape)
    kspace = kspace + noise * math.sqrt(size)
    return np.abs(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(0, 1)), axes=(0, 1)))


def motion_schedule(rng: np.random.Generator, num_lines: int) -> tuple[np.ndarray, list[tuple[float, tuple[float, float, float]]]]:
    """Pose index of each phase-encoding line (acquired in order) and the rigid poses
    (yaw degrees, shift mm). The pose covering the k-space centre is the reference (identity),
    so the corrupted image stays registered to the motion-free one, as after header alignment."""
    num_events = int(rng.integers(2, 4))
    # Movements happen outside the central 30 % of lines (the k-space centre sets the position).
    early = np.sort(rng.uniform(0.05, 0.35, size=num_events // 2 + 1))
    late = np.sort(rng.uniform(0.65, 0.95, size=num_events - num_events // 2))
    boundaries = (np.concatenate([early, late]) * num_lines).astype(int)
    line_pose = np.searchsorted(boundaries, np.arange(num_lines), side="right")
    reference = int(line_pose[num_lines // 2])
    poses = []
    for pose in range(len(boundaries) + 1):
        if pose == reference:
            poses.append((0.0, (0.0, 0.0, 0.0)))
        else:
            yaw = float(rng.uniform(2.0, 5.0) * rng.choice([-1, 1]))
            shift = tuple(float(v) for v in rng.uniform(-4.0, 4.0, size=2)) + (0.0,)
            poses.append((yaw, shift))
    return line_pose, poses


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative receive-coil inhomogeneity, 1 ± ~10 %."""
    axes = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    a, b, c = rng.uniform(-0.1, 0.1, size=3)
    return 1.0 + a * x + b * y + c * x * y + 0.03 * z


# --------------------------------------------------------------------------- per-task pairs


def _axial_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float], shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS+ affine of an axial grid centred on the world origin (plus `shift` mm)."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0 + np.asarray(shift)
    return affine


def synthesize_pair(task: str, rng: np.random.Generator, field_of_view_mm: float | None = None) -> tuple[Volume, Volume, dict]:
    """(source, target, extras) volumes for one synthetic patient of `task`; extras holds the
    label maps (for tests)."""
    if task == "pet_ct":
        fov = field_of_view_mm or 256.0
        phantom = random_head(rng, fov)
        ct_shape = (112, 112, 13)
        ct_affine = _axial_affine(ct_shape, (fov / 112, fov / 112, 2.5), shift=(0.3, -0.4, 0.5))
        ct_labels, density = head_labels(phantom, grid_world(ct_shape, ct_affine))
        ct = ct_from_labels(ct_labels, density, rng)
        pet_shape = (64, 64, 11)
        pet_affine = _axial_affine(pet_shape, (fov / 64, fov / 64, 3.0))
        pet_labels, _ = head_labels(phantom, grid_world(pet_shape, pet_affine))
        activity = suv_from_labels(pet_labels) * BQML_PER_SUV
        (pet,) = simulate_pet_acquisitions(np.moveaxis(activity, 2, 0), rng, psf_fwhm_pixels=2.0)
        source = Volume(np.moveaxis(pet, 0, 2).astype(np.float32), pet_affine, "PT", "Bq/ml", {"format": "synthetic"})
        target = Volume(ct, ct_affine, "CT", "HU", {"format": "synthetic"})
        return source, target, {"ct_labels": ct_labels, "pet_labels": pet_labels}
    if task == "pet_denoise":
        shape = (64, 64, 16)
        affine = _axial_affine(shape, (2.8, 2.8, 2.0))
        phantom = random_head(rng, shape[0] * 2.8)
        labels, _ = head_labels(phantom, grid_world(shape, affine))
        activity = np.moveaxis(suv_from_labels(labels) * BQML_PER_SUV, 2, 0)
        full, quarter = simulate_pet_acquisitions(activity, rng, count_fractions=(1.0, 0.25), counts_per_slice=1.5e5)
        source = Volume(np.moveaxis(quarter, 0, 2).astype(np.float32), affine, "PT", "Bq/ml", {"format": "synthetic"})
        target = Volume(np.moveaxis(full, 0, 2).astype(np.float32), affine, "PT", "Bq/ml", {"format": "synthetic"})
        return source, target, {"labels": labels}
    if task == "mr_motion":
        fov = field_of_view_mm or 256.0
        shape = (96, 96, 16)
        affine = _axial_affine(shape, (fov / 96, fov / 96, 2.0))
        phantom = random_head(rng, fov)
        world = grid_world(shape, affine)
        line_pose, poses = motion_schedule(rng, shape[1])
        bias = bias_field(shape, rng)
        images = [mr_from_labels(head_labels(phantom, rigid_motion(world, yaw, shift))[0]) * bias for yaw, shift in poses]
        reference = int(line_pose[shape[1] // 2])
        clean = kspace_motion([images[reference]], np.zeros(shape[1], dtype=int), rng)
        corrupted = kspace_motion(images, line_pose, rng)
        source = Volume(corrupted.astype(np.float32), affine, "MR", "a.u.", {"format": "synthetic"})
        target = Volume(clean.astype(np.float32), affine, "MR", "a.u.", {"format": "synthetic"})
        labels, _ = head_labels(phantom, world)
        return source, target, {"labels": labels, "line_pose": line_pose, "poses": poses}
    raise ValueError(f"unknown task {task!r}; expected pet_ct, mr_motion or pet_denoise")


def patient_rng(task: str, seed: int, patient_index: int) -> np.random.Generator:
    """Independent, reproducible random stream per (task, seed, patient)."""
    task_index = ("pet_ct", "mr_motion", "pet_denoise").index(task) if task in ("pet_ct", "mr_motion", "pet_denoise") else 99
    return np.random.default_rng([int(seed), int(patient_index), task_index])


def write_synthetic_dataset(
    task: str,
    out_dir: str | Path,
    patients: int = 8,
    seed: int = 0,
    *,
    field_of_view_mm: float | None = None,
) -> Path:
    """Write `patients` synthetic NIfTI pairs of `task` under `out_dir` and `out_dir/pairs.csv`
    (`patient_id,source,target`, paths relative to the CSV). Returns the CSV path.

    `field_of_view_mm` sizes the phantom head (pet_ct, mr_motion; default 256 mm = 256 px at the
    task's 1 mm); pet_denoise is always a 64 × 64 × 16 grid of 2.8 × 2.8 × 2 mm.
    """
    if patients < 1:
        raise ValueError(f"patients must be ≥ 1; got {patients}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(patients):
        source, target, _ = synthesize_pair(task, patient_rng(task, seed, index), field_of_view_mm)
        patient_id = f"synthetic-{task}-{index:03d}"
        source_path = write_nifti(source, out / patient_id / "source.nii.gz")
        target_path = write_nifti(target, out / patient_id / "target.nii.gz")
        rows.append((patient_id, source_path.relative_to(out).as_posix(), target_path.relative_to(out).as_posix()))
    csv_path = out / "pairs.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("patient_id", "source", "target"))
        writer.writerows(rows)
    return csv_path
