"""Simulation sanity of the built-in synthetic datasets and their determinism."""

from __future__ import annotations

import numpy as np
import pytest

from medgan_tf.data import synthetic
from medgan_tf.data.io import read_volume


def test_filtered_back_projection_recovers_a_uniform_disk():
    size = 48
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    disk = ((x**2 + y**2) < 15**2) * 1000.0
    angles = np.linspace(0, 180, 80, endpoint=False)
    image = synthetic.filtered_back_projection(synthetic.forward_project(disk[None], angles), angles)[0]
    centre = (x**2 + y**2) < 10**2
    assert abs(image[centre].mean() - 1000.0) < 20.0  # 2 %: projector and FBP share one scale
    # Outside the disk, within the reconstructed circle (radius 24): close to zero.
    outside = ((x**2 + y**2) > 17**2) & ((x**2 + y**2) < 23**2)
    assert np.abs(image[outside]).max() < 30.0


def test_quarter_count_pet_has_twice_the_noise_of_full_count_in_a_uniform_region():
    size = 64
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    activity = np.repeat((((x**2 + y**2) < 22**2) * 20000.0)[None], 6, axis=0)  # Bq/ml
    full, quarter = synthetic.simulate_pet_acquisitions(activity, np.random.default_rng(0), count_fractions=(1.0, 0.25))
    region = (x**2 + y**2) < 12**2
    # Both are activity estimates in the same unit (the 25 % image is corrected for time) ...
    assert abs(quarter[:, region].mean() / full[:, region].mean() - 1.0) < 0.03
    assert abs(full[:, region].mean() / 20000.0 - 1.0) < 0.05
    # ... and Poisson statistics: 1/4 of the counts → √4 = 2 × the standard deviation (±20 %).
    ratio = quarter[:, region].std() / full[:, region].std()
    assert 1.6 < ratio < 2.4, ratio


def _directional_ratio(difference: np.ndarray) -> float:
    """Energy of the difference image's variation along j (axis 1) over that along i (axis 0)."""
    return float(np.mean(np.diff(difference, axis=1) ** 2) / np.mean(np.diff(difference, axis=0) ** 2))


def test_motion_corrupted_mr_differs_most_along_the_phase_encoding_direction():
    source, target, _ = synthetic.synthesize_pair("mr_motion", synthetic.patient_rng("mr_motion", 0, 0), 96.0)
    assert _directional_ratio(source.array - target.array) > 1.2  # phase encoding along j

    # Control: the same motion with phase encoding along i turns the artefact around.
    rng = np.random.default_rng(5)
    world = synthetic.grid_world(source.shape, source.affine)
    head = synthetic.random_head(rng, 96.0)
    line_pose, poses = synthetic.motion_schedule(rng, source.shape[1])
    images = [synthetic.mr_from_labels(synthetic.head_labels(head, synthetic.rigid_motion(world, yaw, shift))[0]) for yaw, shift in poses]
    reference = int(line_pose[len(line_pose) // 2])
    assert poses[reference] == (0.0, (0.0, 0.0, 0.0))
    ratios = []
    for axis in (1, 0):
        corrupted = synthetic.kspace_motion(images, line_pose, rng, phase_encoding_axis=axis)
        clean = synthetic.kspace_motion([images[reference]], np.zeros_like(line_pose), rng, phase_encoding_axis=axis)
        ratios.append(_directional_ratio(corrupted - clean))
    assert ratios[0] > 1.2 and ratios[1] < 1 / 1.2, ratios


# HU ranges of each tissue (textbook CT numbers); bone 700–1500 HU per the issue.
HU_RANGES = {
    synthetic.AIR: (-1024, -950),
    synthetic.FAT: (-130, -70),
    synthetic.SOFT_TISSUE: (20, 60),
    synthetic.BONE: (690, 1510),
    synthetic.CSF: (-10, 25),
    synthetic.GREY_MATTER: (20, 55),
    synthetic.WHITE_MATTER: (15, 45),
    synthetic.LESION: (35, 75),
}


def test_synthetic_ct_values_fall_in_the_hu_ranges_of_their_tissues():
    _, ct, extras = synthetic.synthesize_pair("pet_ct", synthetic.patient_rng("pet_ct", 0, 1), 128.0)
    labels = extras["ct_labels"]
    assert ct.unit == "HU"
    for tissue, (low, high) in HU_RANGES.items():
        values = ct.array[labels == tissue]
        if tissue != synthetic.LESION:
            assert values.size > 0, synthetic.TISSUES[tissue]
        if values.size:
            assert low <= values.min() and values.max() <= high, (synthetic.TISSUES[tissue], values.min(), values.max())
    bone = ct.array[labels == synthetic.BONE]
    assert bone.max() - bone.min() > 300  # a density range, not one number


def test_pet_ct_pet_uptake_follows_the_shared_tissue_map():
    pet, _, extras = synthetic.synthesize_pair("pet_ct", synthetic.patient_rng("pet_ct", 0, 2), 128.0)
    labels = extras["pet_labels"]
    grey, white, csf = (pet.array[labels == t].mean() for t in (synthetic.GREY_MATTER, synthetic.WHITE_MATTER, synthetic.CSF))
    assert pet.unit == "Bq/ml" and grey > 1.5 * white > 1.5 * csf


@pytest.mark.parametrize("task", ["pet_ct", "mr_motion", "pet_denoise"])
def test_same_seed_gives_identical_volumes_and_another_seed_does_not(tmp_path, task):
    first = synthetic.write_synthetic_dataset(task, tmp_path / "a", patients=1, seed=3, field_of_view_mm=64)
    again = synthetic.write_synthetic_dataset(task, tmp_path / "b", patients=1, seed=3, field_of_view_mm=64)
    other = synthetic.write_synthetic_dataset(task, tmp_path / "c", patients=1, seed=4, field_of_view_mm=64)
    lines = first.read_text().splitlines()
    assert lines[0] == "patient_id,source,target" and len(lines) == 2
    for name in ("source.nii.gz", "target.nii.gz"):
        patient = f"synthetic-{task}-000"
        a, b, c = (read_volume(csv.parent / patient / name) for csv in (first, again, other))
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.affine, b.affine)
        assert not np.array_equal(a.array, c.array)
