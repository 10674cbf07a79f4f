"""The head phantom (mr_motion): an analytic head evaluated at any world points.

In head coordinates p (the head's local frame after its pose and a smooth warp, divided by its
semi-axes so the head is the unit ball; x left, y anterior, z superior) the layers are, from the
outside: scalp (r < 1), subcutaneous fat, the skull as outer table (cortical), diploë (cancellous)
and inner table (cortical), CSF, the grey-matter ribbon whose inner border is folded by gyri whose
phase wanders with low-frequency noise, white matter, two lateral ventricles and 0–3 lesions. Below
the skull base (a plane higher in front than behind) the face: soft tissue, the nasal cavity and two
maxillary sinuses (air with bony walls); in front, two orbits (fat around the eye globe) and the
frontal sinus. Every size, position and the pose vary per patient.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from medgan_tf.data.phantoms import geometry
from medgan_tf.data.phantoms.tissues import (
    AIR, BONE, CANCELLOUS_BONE, CSF, EYE, FAT, GREY_MATTER, LESION, SOFT_TISSUE, WHITE_MATTER,
)

Terms = tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class HeadPhantom:
    """Per-patient parameters of the head phantom (lengths in mm unless said otherwise)."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]  # x (L-R), y (A-P), z (I-S)
    yaw_degrees: float
    deformation: Terms  # geometry.random_warp rows
    gyri: tuple[int, int, float]  # (angular frequency, axial frequency, phase)
    folding_noise: Terms  # geometry.noise_terms rows, in head units
    lesions: tuple[tuple[float, float, float, float], ...]  # (x, y, z, radius) in head units
    lesion_t1: tuple[float, ...]  # T1 signal of each lesion (a.u.)
    bone_noise: Terms
    skull_thickness: float  # head units
    ventricle_scale: float
    sinus_scale: float
    skull_base_z: float  # head units, at y = 0


def random_head(rng: np.random.Generator, field_of_view_mm: float) -> HeadPhantom:
    """A head that fills ~75–95 % of a square field of view, with random pose, shape and anatomy."""
    scale = field_of_view_mm * rng.uniform(0.94, 1.04)
    semi_axes = tuple(float(v) for v in np.array([0.36, 0.44, 0.5]) * scale * rng.uniform(0.95, 1.05, size=3))
    lesions, lesion_t1 = [], []
    for _ in range(int(rng.integers(0, 4))):
        angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.6)
        lesions.append((distance * math.cos(angle), distance * math.sin(angle), float(rng.uniform(-0.25, 0.35)),
                        float(rng.uniform(0.04, 0.12))))
        lesion_t1.append(float(rng.uniform(250.0, 450.0)))
    return HeadPhantom(
        centre=tuple(float(v) for v in rng.uniform(-0.02, 0.02, size=3) * field_of_view_mm),
        semi_axes=semi_axes,
        yaw_degrees=float(rng.uniform(-8, 8)),
        deformation=geometry.random_warp(rng, field_of_view_mm, 0.02 * field_of_view_mm),
        gyri=(int(rng.integers(9, 15)), int(rng.integers(2, 5)), float(rng.uniform(0, 2 * math.pi))),
        folding_noise=geometry.noise_terms(rng, 4, 2.5 * math.pi),
        lesions=tuple(lesions),
        lesion_t1=tuple(lesion_t1),
        bone_noise=geometry.noise_terms(rng, 3, 1.5 * math.pi),
        skull_thickness=float(rng.uniform(0.07, 0.1)),
        ventricle_scale=float(rng.uniform(0.75, 1.3)),
        sinus_scale=float(rng.uniform(0.7, 1.2)),
        skull_base_z=float(rng.uniform(-0.5, -0.4)),
    )


def head_coordinates(phantom: HeadPhantom, world: np.ndarray) -> np.ndarray:
    """Head coordinates p (..., 3) of world points (mm): pose undone, warped, per semi-axis."""
    local = (world - np.asarray(phantom.centre)) @ geometry.rotation_z(phantom.yaw_degrees)
    return geometry.apply_warp(local, phantom.deformation) / np.asarray(phantom.semi_axes)


def _ellipsoid(p: np.ndarray, centre, semi) -> np.ndarray:
    return np.sum(((p - np.asarray(centre)) / np.asarray(semi)) ** 2, axis=-1) < 1.0


def head_maps(phantom: HeadPhantom, world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels uint8, bone density in [0, 1], lesion index: 0 outside lesions, k+1 in lesion k)."""
    p = head_coordinates(phantom, world)
    radius = np.linalg.norm(p, axis=-1)
    labels = np.full(radius.shape, AIR, dtype=np.uint8)
    skull_inner = 0.95 - 0.025 - phantom.skull_thickness
    for border, label in ((1.0, SOFT_TISSUE), (0.955, FAT), (0.93, BONE), (0.93 - 0.02, CANCELLOUS_BONE),
                          (skull_inner + 0.02, BONE), (skull_inner, CSF), (skull_inner - 0.025, GREY_MATTER)):
        labels[radius < border] = label
    azimuth = np.arctan2(p[..., 1], p[..., 0])
    frequency, axial, phase = phantom.gyri
    wander = 1.8 * geometry.smooth_noise(p, phantom.folding_noise)
    folding = 0.05 * np.sin(frequency * azimuth + phase + wander) * np.cos(axial * p[..., 2] * math.pi + wander)
    labels[radius < skull_inner - 0.13 + folding] = WHITE_MATTER
    for side in (-1.0, 1.0):
        semi = np.array([0.07, 0.26, 0.4]) * phantom.ventricle_scale ** np.array([1.0, 0.5, 0.5])
        labels[_ellipsoid(p, (side * 0.1, 0.05, 0.05), semi)] = CSF
    lesion_index = np.zeros(radius.shape, dtype=np.uint8)
    for k, (x, y, z, lesion_radius) in enumerate(phantom.lesions):
        inside = (np.linalg.norm(p - np.array([x, y, z]), axis=-1) < lesion_radius) & (labels >= GREY_MATTER)
        labels[inside] = LESION
        lesion_index[inside] = k + 1
    _face(p, radius, labels, phantom)
    lesion_index[labels != LESION] = 0
    bone_density = 0.5 + 0.5 * np.clip(geometry.smooth_noise(p, phantom.bone_noise), -1.0, 1.0)
    return labels, bone_density, lesion_index


def _face(p: np.ndarray, radius: np.ndarray, labels: np.ndarray, phantom: HeadPhantom) -> None:
    """Skull base, face, sinuses and orbits, in place."""
    base = phantom.skull_base_z + 0.25 * p[..., 1]  # the anterior cranial fossa sits higher
    inside = radius < 0.93
    below = p[..., 2] < base
    labels[inside & below & (radius < 0.88)] = SOFT_TISSUE
    plate = inside & (np.abs(p[..., 2] - base) < 0.045)
    labels[plate] = CANCELLOUS_BONE
    labels[plate & (np.abs(np.abs(p[..., 2] - base) - 0.035) < 0.012)] = BONE
    s = phantom.sinus_scale
    for side in (-1.0, 1.0):
        centre = (side * 0.27, 0.5, base_level(phantom) - 0.22)
        wall = _ellipsoid(p, centre, np.array([0.17, 0.2, 0.18]) * s) & inside
        labels[wall] = BONE
        labels[_ellipsoid(p, centre, np.array([0.14, 0.17, 0.15]) * s) & inside] = AIR
    labels[_ellipsoid(p, (0.0, 0.62, base_level(phantom) - 0.2), (0.05, 0.3, 0.22)) & inside] = AIR
    labels[_ellipsoid(p, (0.0, 0.8, base_level(phantom) + 0.33), np.array([0.16, 0.06, 0.09]) * s) & (radius > 0.82)] = AIR
    for side in (-1.0, 1.0):
        centre = (side * 0.32, 0.68, base_level(phantom) + 0.13)
        orbit = np.linalg.norm(p - np.array(centre), axis=-1)
        labels[(orbit < 0.21) & (radius < 0.97)] = BONE
        labels[(orbit < 0.19) & (radius < 0.99)] = FAT
        labels[(orbit < 0.13) & (radius < 0.99)] = EYE


def base_level(phantom: HeadPhantom) -> float:
    """Height of the skull base (head units) beneath the orbits (y ≈ 0.6)."""
    return phantom.skull_base_z + 0.25 * 0.6


def head_labels(phantom: HeadPhantom, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue labels (uint8, world.shape[:-1]) and a bone-density field in [0, 1] at `world` (mm)."""
    labels, bone_density, _ = head_maps(phantom, world)
    return labels, bone_density


def head_t1(phantom: HeadPhantom, world: np.ndarray) -> np.ndarray:
    """Noise-free T1 spin-echo image of the head at `world` (each lesion its own signal)."""
    from medgan_tf.data.phantoms.tissues import mr_from_labels

    labels, _, lesion_index = head_maps(phantom, world)
    image = mr_from_labels(labels)
    for k, value in enumerate(phantom.lesion_t1):
        image[lesion_index == k + 1] = value
    return image
