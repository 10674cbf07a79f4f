"""Imaging physics of the phantoms: PET acquisition (scanner blur, parallel-beam projection,
Poisson counts, binomial thinning to a shorter acquisition, filtered back-projection) and MR
acquisition (k-space filled line by line from a moving head; receive-coil bias field).

- PET: activity → projections → Poisson counts of the full acquisition; the 25 %-time
  acquisition keeps each count with probability 0.25 (binomial thinning, i.e. the first quarter of
  the same list-mode data) → both reconstructed by filtered back-projection; the 25 % image is
  divided by 0.25 so both are in Bq/ml. Noise in reconstructions is linear in the counts' noise:
  its standard deviation doubles.
- MR: the motion-free image is sampled in k-space once; the motion-corrupted one fills its
  phase-encoding lines from the head at different rigid poses, as when the subject moves between
  lines → ghosting along the phase-encoding direction.
"""

from __future__ import annotations

import math

import numpy as np


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

