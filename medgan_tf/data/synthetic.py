"""Built-in synthetic datasets: anatomical phantoms and physically sensible simulation (paper §3.1).

The phantoms live in `medgan_tf.data.phantoms` (a head for mr_motion, a trunk for pet_ct and
pet_denoise; one tissue-label map per patient drives every modality). This module turns one
patient into a (source, target) volume pair per task and writes datasets:

- pet_ct:      a body section (heart and lung bases → liver, spleen → kidneys) as CT in HU on a
               fine grid, and FDG uptake in Bq/ml on a coarser PET grid from the same label map,
               blurred by the scanner PSF and reconstructed from Poisson projection data.
- pet_denoise: the whole trunk (lung apices → bladder, z compressed onto 32 slices of 2 mm)
               at 25 % vs 100 % acquisition time: one Poisson list of counts, binomially thinned,
               both reconstructed by FBP and in Bq/ml.
- mr_motion:   T1 spin-echo head (scalp, skull, grey/white matter, CSF, sinuses, orbits,
               lesions) with a receive-coil bias field; the corrupted image fills its phase-encoding
               lines from the head at different rigid poses.

Three more tasks, simulated in `medgan_tf.data.phantoms.simulations`:

- mr_ct:       the head as T1-weighted MR (a.u.) and as CT (HU) from one label map (bone dark on
               MR, bright on CT); 96 × 96 × 64 voxels of fov/96 × fov/96 × 3 mm.
- cbct_ct:     pelvis CBCT (HU) from the CT in projection space: scatter (cupping), fewer photons
               (noise) and a detector narrower than the patient (truncation) → FBP; target the CT.
- ct_denoise:  abdominal CT at quarter vs full dose (AAPM/Mayo Low Dose CT Grand Challenge): one
               Poisson set of transmitted photons, binomially thinned, both reconstructed by FBP.

Everything is numpy/scipy, deterministic per (task, seed, patient), and small enough that a
patient takes about a second.
"""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import numpy as np

from medgan_tf import tasks
from medgan_tf.data.io import Volume, write_nifti
from medgan_tf.errors import UserError
from medgan_tf.data.phantoms.body import BodyPhantom, body_maps, random_body
from medgan_tf.data.phantoms.geometry import axial_affine, grid_world, rigid_motion
from medgan_tf.data.phantoms.head import HeadPhantom, head_labels, head_maps, head_t1, random_head
from medgan_tf.data.phantoms import simulations
from medgan_tf.data.phantoms.physics import (
    bias_field, filtered_back_projection, forward_project, kspace_motion, motion_schedule, simulate_pet_acquisitions,
)
from medgan_tf.data.phantoms.tissues import (  # noqa: F401  (re-exported: the tissue labels and tables)
    AIR, BLOOD, BONE, BQML_PER_SUV, CANCELLOUS_BONE, CORTICAL_BONE, CSF, CT_HU, EYE, FAT, GREY_MATTER, KIDNEY,
    LESION, LIVER, LUNG, MR_T1, MUSCLE, MYOCARDIUM, SOFT_TISSUE, SPLEEN, SUV_RANGES, TISSUES, URINE, WHITE_MATTER,
    ct_from_labels, draw_uptake, mr_from_labels, suv_from_labels,
)

__all__ = [
    "GENERATORS", "BodyPhantom", "HeadPhantom", "axial_affine", "phantom_of", "bias_field", "body_maps", "filtered_back_projection",
    "forward_project", "grid_world", "head_labels", "head_maps", "kspace_motion", "motion_schedule", "patient_rng",
    "random_body", "random_head", "rigid_motion", "simulate_pet_acquisitions", "synthesize_pair",
    "write_synthetic_dataset", "write_task_pairs",
]

PET_DENOISE_SHAPE = (64, 64, 32)  # 2.8 × 2.8 × 2 mm: the scanner's native voxels (paper §3.1)
PET_CT_TRUNK = (0.5, 32.5 / 0.4)  # t = 0.5 at the slab centre; the 32.5 mm CT slab spans t 0.3–0.7


def synthesize_pair(task: str, rng: np.random.Generator, field_of_view_mm: float | None = None,
                    options: dict | None = None) -> tuple[Volume, Volume, dict]:
    """(source, target, extras) volumes for one synthetic patient of `task`; extras holds the
    label maps and the phantom (for tests and previews). `options`: the phantom's own keyword
    settings (e.g. `full_dose_photons` of the low-dose CT phantom)."""
    generator = GENERATORS.get(task)
    if generator is None:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(GENERATORS)}")
    parameters = inspect.signature(generator).parameters
    unknown = sorted(set(options or {}) - set(list(parameters)[2:]))
    if unknown:
        raise ValueError(f"phantom {task!r} has no setting {', '.join(unknown)}")
    return generator(rng, field_of_view_mm, **(options or {}))


def _pet_activity(phantom: BodyPhantom, labels: np.ndarray, lesion_index: np.ndarray, uptake: dict) -> np.ndarray:
    """Bq/ml of the label map with the patient's uptake and each lesion's own SUV."""
    return suv_from_labels(labels, uptake, lesion_index, phantom.lesion_suv) * BQML_PER_SUV


def _pet_ct(rng: np.random.Generator, fov: float | None) -> tuple[Volume, Volume, dict]:
    fov = fov or 256.0
    phantom, uptake = random_body(rng, fov), draw_uptake(rng)
    trunk = (PET_CT_TRUNK[0] + rng.uniform(-0.04, 0.04), PET_CT_TRUNK[1])
    ct_shape = (112, 112, 13)
    ct_affine = axial_affine(ct_shape, (fov / 112, fov / 112, 2.5), shift=(0.3, -0.4, 0.5))
    ct_labels, density, _ = body_maps(phantom, grid_world(ct_shape, ct_affine), trunk)
    ct = ct_from_labels(ct_labels, density, rng)
    pet_shape = (64, 64, 11)
    pet_affine = axial_affine(pet_shape, (fov / 64, fov / 64, 3.0))
    pet_labels, _, lesion_index = body_maps(phantom, grid_world(pet_shape, pet_affine), trunk)
    activity = _pet_activity(phantom, pet_labels, lesion_index, uptake)
    (pet,) = simulate_pet_acquisitions(np.moveaxis(activity, 2, 0), rng, psf_fwhm_pixels=2.0)
    source = Volume(np.moveaxis(pet, 0, 2).astype(np.float32), pet_affine, "PT", "Bq/ml", {"format": "synthetic"})
    target = Volume(ct, ct_affine, "CT", "HU", {"format": "synthetic"})
    return source, target, {"ct_labels": ct_labels, "pet_labels": pet_labels, "pet_lesions": lesion_index,
                            "uptake": uptake, "phantom": phantom}


def _pet_denoise(rng: np.random.Generator, _fov: float | None = None) -> tuple[Volume, Volume, dict]:
    """The grid is fixed (the scanner's voxels): `_fov` is ignored."""
    shape = PET_DENOISE_SHAPE
    affine = axial_affine(shape, (2.8, 2.8, 2.0))
    phantom, uptake = random_body(rng, shape[0] * 2.8), draw_uptake(rng)
    trunk = (0.53 + rng.uniform(-0.03, 0.03), shape[2] * 2.0 / 1.06)  # t ≈ 0 (apices) to 1.06 (below the bladder)
    labels, _, lesion_index = body_maps(phantom, grid_world(shape, affine), trunk)
    activity = np.moveaxis(_pet_activity(phantom, labels, lesion_index, uptake), 2, 0)
    full, quarter = simulate_pet_acquisitions(activity, rng, count_fractions=(1.0, 0.25), counts_per_slice=1.5e5)
    source = Volume(np.moveaxis(quarter, 0, 2).astype(np.float32), affine, "PT", "Bq/ml", {"format": "synthetic"})
    target = Volume(np.moveaxis(full, 0, 2).astype(np.float32), affine, "PT", "Bq/ml", {"format": "synthetic"})
    return source, target, {"labels": labels, "lesions": lesion_index, "uptake": uptake, "phantom": phantom}


def _mr_motion(rng: np.random.Generator, fov: float | None) -> tuple[Volume, Volume, dict]:
    fov = fov or 256.0
    shape = (96, 96, 16)
    affine = axial_affine(shape, (fov / 96, fov / 96, 2.0))
    phantom = random_head(rng, fov)
    world = grid_world(shape, affine)
    line_pose, poses = motion_schedule(rng, shape[1])
    bias = bias_field(shape, rng)
    images = [head_t1(phantom, rigid_motion(world, yaw, shift)) * bias for yaw, shift in poses]
    reference = int(line_pose[shape[1] // 2])
    clean = kspace_motion([images[reference]], np.zeros(shape[1], dtype=int), rng)
    corrupted = kspace_motion(images, line_pose, rng)
    source = Volume(corrupted.astype(np.float32), affine, "MR", "a.u.", {"format": "synthetic"})
    target = Volume(clean.astype(np.float32), affine, "MR", "a.u.", {"format": "synthetic"})
    labels, _ = head_labels(phantom, world)
    return source, target, {"labels": labels, "line_pose": line_pose, "poses": poses, "phantom": phantom}


def _volumes(pair: tuple, source: tuple[str, str], target: tuple[str, str]) -> tuple[Volume, Volume, dict]:
    """Volumes of a `phantoms.simulations` pair; `source`/`target` = (modality, unit)."""
    source_array, target_array, affine, extras = pair
    return (Volume(source_array, affine, *source, {"format": "synthetic"}),
            Volume(target_array, affine, *target, {"format": "synthetic"}), extras)


def _mr_ct(rng: np.random.Generator, fov: float | None) -> tuple[Volume, Volume, dict]:
    return _volumes(simulations.simulate_mr_ct(rng, fov or 256.0), ("MR", "a.u."), ("CT", "HU"))


def _cbct_ct(rng: np.random.Generator, fov: float | None) -> tuple[Volume, Volume, dict]:
    return _volumes(simulations.simulate_cbct_ct(rng, fov or 400.0), ("CT", "HU"), ("CT", "HU"))


def _ct_denoise(rng: np.random.Generator, fov: float | None, full_dose_photons: float = simulations.FULL_DOSE_PHOTONS,
                pixels: int | None = None) -> tuple[Volume, Volume, dict]:
    grid = {} if pixels is None else {"shape": (int(pixels), int(pixels), simulations.CT_DENOISE_SHAPE[2])}
    pair = simulations.simulate_ct_denoise(rng, fov or 400.0, full_dose_photons=full_dose_photons, **grid)
    return _volumes(pair, ("CT", "HU"), ("CT", "HU"))


# phantom → generator(rng, field of view mm or None → its default): the three tasks of the paper,
# then three more. A task names its phantom (`medgan_tf.tasks.Task.phantom`).
GENERATORS = {
    "pet_ct": _pet_ct,
    "mr_motion": _mr_motion,
    "pet_denoise": _pet_denoise,
    "mr_ct": _mr_ct,
    "cbct_ct": _cbct_ct,
    "ct_denoise": _ct_denoise,
}


def patient_rng(task: str, seed: int, patient_index: int) -> np.random.Generator:
    """Independent, reproducible random stream per (task, seed, patient)."""
    task_index = list(GENERATORS).index(task) if task in GENERATORS else 99
    return np.random.default_rng([int(seed), int(patient_index), task_index])


def write_synthetic_dataset(
    task: str,
    out_dir: str | Path,
    patients: int = 8,
    seed: int = 0,
    *,
    field_of_view_mm: float | None = None,
    options: dict | None = None,
    misalign: tuple[float, float] | None = None,
) -> Path:
    """Write `patients` synthetic NIfTI pairs of `task` under `out_dir` and `out_dir/pairs.csv`
    (`patient_id,source,target`, paths relative to the CSV). Returns the CSV path.

    `misalign` = (mm, degrees): each target is moved by a random rigid transform (`misalignment`)
    and the CSV records it in the columns of `MISALIGN_COLUMNS`, the ground truth a registration
    (`convert --register`) should recover.

    `field_of_view_mm` sizes the phantom (the trunk of pet_ct, the head of mr_motion and mr_ct;
    default 256 mm; the trunk of cbct_ct and ct_denoise, default 400 mm); pet_denoise is always a
    64 × 64 × 32 grid of 2.8 × 2.8 × 2 mm. `options`: the phantom's own settings (`synthesize_pair`).
    """
    if patients < 1:
        raise ValueError(f"patients must be ≥ 1; got {patients}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(patients):
        source, target, _ = synthesize_pair(task, patient_rng(task, seed, index), field_of_view_mm, options)
        truth: tuple = ()
        if misalign is not None:
            # Its own stream: the volumes stay those of the aligned dataset of the same seed.
            target, truth = misalignment(target, np.random.default_rng([int(seed), index, 7919]), *misalign)
        patient_id = f"synthetic-{task}-{index:03d}"
        source_path = write_nifti(source, out / patient_id / "source.nii.gz")
        target_path = write_nifti(target, out / patient_id / "target.nii.gz")
        rows.append((patient_id, source_path.relative_to(out).as_posix(), target_path.relative_to(out).as_posix(), *truth))
    csv_path = out / "pairs.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("patient_id", "source", "target") + (MISALIGN_COLUMNS if misalign is not None else ()))
        writer.writerows(rows)
    return csv_path


MISALIGN_COLUMNS = ("misalign_rx_deg", "misalign_ry_deg", "misalign_rz_deg", "misalign_tx_mm", "misalign_ty_mm",
                    "misalign_tz_mm", "misalign_rotation_deg", "misalign_translation_mm")


def misalignment(target: Volume, rng: np.random.Generator, max_mm: float, max_deg: float) -> tuple[Volume, tuple]:
    """`target` moved by a random rigid transform G: a rotation by an angle uniform in [0, max_deg]
    about a random axis through the target's centre, then a translation of length uniform in
    [0, max_mm] in a random direction. Its grid moves (the header places it by G, as a second
    scanner's would; no voxel is interpolated), so the anatomy at world x now lies at G(x): G maps
    a source point to the target's, which is what `convert --register` reports. Returns (moved
    target, the `MISALIGN_COLUMNS` values: Euler angles about x, then y, then z (degrees, as
    `registration.rigid_matrix`), translation (mm), total angle, translation length)."""
    from medgan_tf.data.registration import rigid_matrix

    axis, direction = rng.normal(size=3), rng.normal(size=3)
    axis, direction = axis / np.linalg.norm(axis), direction / np.linalg.norm(direction)
    angle, length = np.radians(rng.uniform(0.0, max_deg)), rng.uniform(0.0, max_mm)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross  # Rodrigues
    euler = np.degrees([np.arctan2(rotation[2, 1], rotation[2, 2]), -np.arcsin(np.clip(rotation[2, 0], -1, 1)),
                        np.arctan2(rotation[1, 0], rotation[0, 0])])
    centre = target.affine[:3, :3] @ ((np.asarray(target.array.shape, np.float64) - 1) / 2) + target.affine[:3, 3]
    matrix = rigid_matrix(tuple(euler), tuple(direction * length), centre)
    moved = Volume(target.array, matrix @ target.affine, target.modality, target.unit, dict(target.metadata))
    truth = (*np.round(euler, 4), *np.round(direction * length, 4), round(float(np.degrees(angle)), 4), round(float(length), 4))
    return moved, tuple(float(v) for v in truth)


def write_task_pairs(task: "str | tasks.Task", out_dir: str | Path, image_size: int, patients: int = 8,
                     seed: int = 0, options: dict | None = None, misalign: tuple[float, float] | None = None) -> Path:
    """The built-in synthetic pairs of `task` (its phantom sized to fill an `image_size`² slice at
    the task's spacing; `options`: the phantom's own settings) under `out_dir`; returns the pairs CSV. A UserError for a task without a
    phantom (a task of your own: convert your own pairs)."""
    task = tasks.get(task)
    field_of_view = image_size * task.data.spacing_mm[0]
    return write_synthetic_dataset(phantom_of(task), out_dir, patients=patients, seed=seed, field_of_view_mm=field_of_view,
                                   options=options, misalign=misalign)


def write_pet_cohort(out_dir: str | Path, volumes: int, seed: int = 0) -> Path:
    """`volumes` whole-trunk PET scans on a scanner's native grid (the pet_denoise phantom's
    sources: 64 × 64 × 32 voxels of 2.8 × 2.8 × 2 mm, 64 slices on a 1 mm model grid) under
    `out_dir`, as pairs whose sources are the PETs; returns the pairs CSV. The cohort a PET-source
    model translates in the benchmark's whole-archive figures."""
    return write_task_pairs("pet_denoise", out_dir, PET_DENOISE_SHAPE[0], patients=volumes, seed=seed)


def phantom_of(task: "str | tasks.Task") -> str:
    """The phantom (a key of `GENERATORS`) of `task`; a UserError for a task without one (a task
    of your own: convert your own pairs)."""
    task = tasks.get(task)
    if task.phantom is None or task.phantom not in GENERATORS:
        raise UserError(f"task {task.name!r} has no built-in synthetic data (tasks with a phantom: "
                        f"{', '.join(tasks.with_builtin_data())}); convert your own pairs with "
                        "`medgan-tf convert --pairs CSV --task ...`")
    return task.phantom
