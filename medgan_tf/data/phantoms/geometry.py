"""World geometry of the phantoms: voxel grids in millimetres, rigid poses and smooth warps."""

from __future__ import annotations

import math

import numpy as np


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



def rotation_z(yaw_degrees: float) -> np.ndarray:
    """3×3 rotation about the z (I-S) axis."""
    angle = math.radians(yaw_degrees)
    return np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])


def axial_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float], shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS+ affine of an axial grid centred on the world origin (plus `shift` mm)."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0 + np.asarray(shift)
    return affine


def random_warp(rng: np.random.Generator, length_mm: float, amplitude_mm: float, per_axis: int = 2) -> tuple[tuple[float, ...], ...]:
    """A smooth random displacement: rows (amplitude mm, kx, ky, kz, phase, axis), wavelengths of
    0.5–2 × `length_mm`, amplitudes of 0.5–1.5 × `amplitude_mm`."""
    rows = []
    for axis in range(3):
        for _ in range(per_axis):
            k = rng.uniform(0.5, 2.0, size=3) * 2 * math.pi / length_mm
            rows.append((float(rng.uniform(0.5, 1.5) * amplitude_mm), *map(float, k), float(rng.uniform(0, 2 * math.pi)), axis))
    return tuple(rows)


def apply_warp(points: np.ndarray, warp: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """`points` (..., 3) mm displaced by the sum of the warp's sinusoids."""
    displaced = points.copy()
    for amplitude, kx, ky, kz, phase, axis in warp:
        displaced[..., int(axis)] += amplitude * np.sin(points[..., 0] * kx + points[..., 1] * ky + points[..., 2] * kz + phase)
    return displaced


def smooth_noise(points: np.ndarray, terms: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """A smooth scalar field in about [-1, 1] at `points` (..., 3): the mean of a few sinusoids,
    rows (kx, ky, kz, phase) from `noise_terms`."""
    total = np.zeros(points.shape[:-1])
    for kx, ky, kz, phase in terms:
        total += np.sin(points[..., 0] * kx + points[..., 1] * ky + points[..., 2] * kz + phase)
    return total / max(1.0, math.sqrt(len(terms)))


def noise_terms(rng: np.random.Generator, count: int, wavenumber: float) -> tuple[tuple[float, ...], ...]:
    """`count` random sinusoid rows (kx, ky, kz, phase) of about `wavenumber` rad/unit."""
    rows = []
    for _ in range(count):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-12
        k = direction * wavenumber * rng.uniform(0.7, 1.3)
        rows.append((*map(float, k), float(rng.uniform(0, 2 * math.pi))))
    return tuple(rows)
