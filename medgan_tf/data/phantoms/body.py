"""The trunk phantom (pet_ct, pet_denoise): an analytic body evaluated at any world points.

In body coordinates (u, v) — the local frame after the patient's pose and a smooth warp, divided by
the body's half width and half depth (u to the patient's left, v anterior) — and the trunk level
t (0 at the lung apices, 1 below the bladder; z superior → smaller t): a superellipse outline with
skin, subcutaneous fat of per-patient thickness and a muscle wall; inside, the organs of the table
`ORGANS`, each an ellipse in (u, v) whose size follows its extent in t, so slices differ: lungs with
vessels, heart (myocardium around blood), aorta, liver, spleen, kidneys, bladder, the vertebrae
(cortical rim, cancellous body, canal, spinous process) with paraspinal muscles, ribs on the
thorax and the iliac bones of the pelvis; and 1–4 hot lesions. The in-plane size fills the field
of view (a small field gives a small patient) and the trunk's length is mapped onto the slab, so
every task's grid shows the anatomy it needs. Sizes, positions, uptake and lesions vary per patient.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from medgan_tf.data.phantoms import geometry
from medgan_tf.data.phantoms.tissues import (
    AIR, BLOOD, BONE, CANCELLOUS_BONE, CSF, FAT, KIDNEY, LESION, LIVER, LUNG, MUSCLE, MYOCARDIUM, SOFT_TISSUE,
    SPLEEN, URINE,
)

# name, label, t from, t to, centre u, centre v, semi u, semi v, tapered (size follows t) or a tube.
ORGANS = (
    ("lung_right", LUNG, -0.02, 0.47, -0.42, 0.02, 0.31, 0.58, True),
    ("lung_left", LUNG, -0.02, 0.43, 0.42, 0.02, 0.30, 0.58, True),
    ("aorta", BLOOD, -0.05, 0.80, 0.10, -0.36, 0.075, 0.075, False),
    ("heart", MYOCARDIUM, 0.16, 0.44, 0.12, 0.26, 0.34, 0.34, True),
    ("liver", LIVER, 0.36, 0.72, -0.33, 0.06, 0.50, 0.62, True),
    ("spleen", SPLEEN, 0.38, 0.60, 0.55, -0.22, 0.17, 0.26, True),
    ("kidney_right", KIDNEY, 0.56, 0.78, -0.37, -0.42, 0.15, 0.22, True),
    ("kidney_left", KIDNEY, 0.53, 0.75, 0.37, -0.42, 0.15, 0.22, True),
    ("bladder", URINE, 0.83, 1.08, 0.0, 0.32, 0.24, 0.24, True),
    ("paraspinal_right", MUSCLE, -0.1, 1.1, -0.22, -0.72, 0.15, 0.13, False),
    ("paraspinal_left", MUSCLE, -0.1, 1.1, 0.22, -0.72, 0.15, 0.13, False),
)
Terms = tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class BodyPhantom:
    """Per-patient parameters of the trunk phantom (lengths in mm unless said otherwise)."""

    centre: tuple[float, float]
    half_width: float
    half_depth: float
    shape_exponent: float  # 2 = ellipse, larger = squarer outline
    yaw_degrees: float
    deformation: Terms
    fat_thickness: float  # body units
    fat_noise: Terms
    organs: tuple[tuple, ...]  # ORGANS rows with per-patient t range, centre and size
    vessels: tuple[tuple[float, float, float, float, float], ...]  # (u, v, du/dt, dv/dt, radius)
    rib_phase: float
    lesions: tuple[tuple[float, float, float, float], ...]  # (u, v, t, radius mm)
    lesion_suv: tuple[float, ...]
    bone_noise: Terms


def random_body(rng: np.random.Generator, field_of_view_mm: float) -> BodyPhantom:
    """A trunk about 75–90 % as wide as a square field of view, with random pose and anatomy."""
    half_width = 0.45 * field_of_view_mm * rng.uniform(0.84, 1.0)
    organs = []
    for name, label, t0, t1, cu, cv, su, sv, tapered in ORGANS:
        shift, grow = rng.uniform(-0.035, 0.035), rng.uniform(0.85, 1.15, size=2)
        jitter = rng.uniform(-0.04, 0.04, size=2) if tapered else rng.uniform(-0.015, 0.015, size=2)
        organs.append((name, label, t0 + shift, t1 + shift, cu + jitter[0], cv + jitter[1], su * grow[0], sv * grow[1], tapered))
    vessels = tuple((float(rng.choice([-1, 1]) * rng.uniform(0.25, 0.6)), float(rng.uniform(-0.4, 0.45)),
                     float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.5, 0.5)), float(rng.uniform(0.015, 0.035)))
                    for _ in range(int(rng.integers(8, 14))))
    lesions, lesion_suv = [], []
    for _ in range(int(rng.integers(1, 5))):
        host = organs[int(rng.choice([0, 1, 4, 4, 5, 9]))]  # lungs, liver (twice as likely), spleen, muscle
        t = rng.uniform(host[2] + 0.25 * (host[3] - host[2]), host[3] - 0.25 * (host[3] - host[2]))
        u, v = (host[4] + rng.uniform(-0.45, 0.45) * host[6], host[5] + rng.uniform(-0.45, 0.45) * host[7])
        lesions.append((float(u), float(v), float(t), float(rng.uniform(0.025, 0.06) * field_of_view_mm)))
        lesion_suv.append(float(rng.uniform(4.0, 15.0)))
    return BodyPhantom(
        centre=tuple(float(v) for v in rng.uniform(-0.025, 0.025, size=2) * field_of_view_mm),
        half_width=float(half_width),
        half_depth=float(half_width * rng.uniform(0.62, 0.78)),
        shape_exponent=float(rng.uniform(2.0, 2.7)),
        yaw_degrees=float(rng.uniform(-6, 6)),
        deformation=geometry.random_warp(rng, field_of_view_mm, 0.015 * field_of_view_mm),
        fat_thickness=float(rng.uniform(0.05, 0.15)),
        fat_noise=geometry.noise_terms(rng, 3, 2.0 * math.pi),
        organs=tuple(organs),
        vessels=vessels,
        rib_phase=float(rng.uniform(0, 2 * math.pi)),
        lesions=tuple(lesions),
        lesion_suv=tuple(lesion_suv),
        bone_noise=geometry.noise_terms(rng, 3, 3.0 * math.pi),
    )


def body_coordinates(phantom: BodyPhantom, world: np.ndarray, trunk: tuple[float, float]) -> np.ndarray:
    """(u, v, t) of world points (..., 3) mm; `trunk` = (t at z = 0, trunk length in mm)."""
    centre = np.array([*phantom.centre, 0.0])
    local = geometry.apply_warp((world - centre) @ geometry.rotation_z(phantom.yaw_degrees), phantom.deformation)
    t_centre, length = trunk
    t = t_centre - local[..., 2] / length
    widen = 1.0 + 0.08 * np.clip(t - 0.6, 0.0, None) / 0.4  # the pelvis is a little wider
    return np.stack([local[..., 0] / (phantom.half_width * widen), local[..., 1] / phantom.half_depth, t], axis=-1)


def _organ_mask(uvt: np.ndarray, organ: tuple, scale: float = 1.0) -> np.ndarray:
    _, _, t0, t1, cu, cv, su, sv, tapered = organ
    t = uvt[..., 2]
    within = (t > t0) & (t < t1)
    size = np.sqrt(np.clip(np.sin(math.pi * (t - t0) / (t1 - t0)), 0.0, 1.0)) if tapered else np.ones_like(t)
    size = np.where(within, size * scale, 0.0) + 1e-9
    return within & (((uvt[..., 0] - cu) / (su * size)) ** 2 + ((uvt[..., 1] - cv) / (sv * size)) ** 2 < 1.0)


def body_maps(phantom: BodyPhantom, world: np.ndarray, trunk: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels uint8, bone density in [0, 1], lesion index: 0 outside lesions, k+1 in lesion k)."""
    uvt = body_coordinates(phantom, world, trunk)
    u, v, t = uvt[..., 0], uvt[..., 1], uvt[..., 2]
    n = phantom.shape_exponent
    radius = (np.abs(u) ** n + np.abs(v) ** n) ** (1.0 / n)
    fat_inner = 0.97 - phantom.fat_thickness * (1.0 + 0.4 * geometry.smooth_noise(uvt, phantom.fat_noise))
    labels = np.full(radius.shape, AIR, dtype=np.uint8)
    labels[radius < 1.0] = SOFT_TISSUE
    labels[radius < 0.97] = FAT
    labels[radius < fat_inner] = MUSCLE
    labels[radius < fat_inner - 0.07] = SOFT_TISSUE  # mediastinum, bowel, pelvic soft tissue
    organs = {organ[0]: organ for organ in phantom.organs}
    for name in ("lung_right", "lung_left"):
        labels[_organ_mask(uvt, organs[name])] = LUNG
    lung = labels == LUNG
    for cu, cv, du, dv, vessel_radius in phantom.vessels:
        labels[lung & ((u - cu - du * (t - 0.2)) ** 2 + (v - cv - dv * (t - 0.2)) ** 2 < vessel_radius ** 2)] = BLOOD
    labels[_organ_mask(uvt, organs["aorta"])] = BLOOD
    labels[_organ_mask(uvt, organs["heart"])] = MYOCARDIUM
    labels[_organ_mask(uvt, organs["heart"], scale=0.72)] = BLOOD  # chambers
    for name in ("liver", "spleen", "kidney_right", "kidney_left", "bladder", "paraspinal_right", "paraspinal_left"):
        labels[_organ_mask(uvt, organs[name])] = organs[name][1]
    _skeleton(u, v, t, radius, fat_inner, labels, phantom)
    lesion_index = _lesions(uvt, labels, phantom, trunk[1])
    bone_density = 0.5 + 0.5 * np.clip(geometry.smooth_noise(uvt, phantom.bone_noise), -1.0, 1.0)
    return labels, bone_density, lesion_index


def _skeleton(u, v, t, radius, fat_inner, labels: np.ndarray, phantom: BodyPhantom) -> None:
    """Vertebrae, ribs and iliac bones, in place."""
    disc = np.cos(2 * math.pi * t * 14.0) > 0.8  # intervertebral discs: soft tissue between bodies
    body = (u / 0.14) ** 2 + ((v + 0.55) / 0.12) ** 2
    labels[body < 1.0] = BONE
    labels[body < 0.7] = CANCELLOUS_BONE
    labels[(body < 1.0) & disc] = SOFT_TISSUE
    arch = (u / 0.1) ** 2 + ((v + 0.76) / 0.09) ** 2
    labels[(arch < 1.0) & ~disc] = BONE
    labels[(u / 0.08) ** 2 + ((v + 0.86) / 0.1) ** 2 < 1.0] = BONE  # spinous process
    labels[arch < 0.3] = CSF  # spinal canal
    angle = np.arctan2(v, u)
    rib_ring = (np.abs(radius - (fat_inner - 0.035)) < 0.028) & (t > 0.02) & (t < 0.6)
    rib_ring &= np.abs(np.sin(angle)) < 0.93  # not over the sternum or the spine
    rib_ring &= np.cos(2 * math.pi * (t * 11.0 + 0.7 * np.sin(angle)) + phantom.rib_phase) > 0.55
    labels[rib_ring] = BONE
    for side in (-1.0, 1.0):
        ilium = ((u - side * 0.62) / 0.1) ** 2 + ((v + 0.22) / 0.3) ** 2
        pelvis = t > 0.8
        labels[pelvis & (ilium < 1.0)] = BONE
        labels[pelvis & (ilium < 0.55)] = CANCELLOUS_BONE


def _lesions(uvt: np.ndarray, labels: np.ndarray, phantom: BodyPhantom, length_mm: float) -> np.ndarray:
    lesion_index = np.zeros(labels.shape, dtype=np.uint8)
    mm = np.stack([uvt[..., 0] * phantom.half_width, uvt[..., 1] * phantom.half_depth, uvt[..., 2] * length_mm], axis=-1)
    for k, (u, v, t, lesion_radius) in enumerate(phantom.lesions):
        centre = np.array([u * phantom.half_width, v * phantom.half_depth, t * length_mm])
        inside = (np.sum((mm - centre) ** 2, axis=-1) < lesion_radius ** 2) & (labels != AIR) & (labels != FAT)
        labels[inside] = LESION
        lesion_index[inside] = k + 1
    return lesion_index
