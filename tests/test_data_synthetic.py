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


# Unenhanced CT numbers of each tissue (textbook ranges); cortical bone 1000–1900 HU and cancellous
# bone 300–700 HU.
HU_RANGES = {
    synthetic.AIR: (-1024, -985),
    synthetic.LUNG: (-900, -800),
    synthetic.FAT: (-120, -80),
    synthetic.SOFT_TISSUE: (20, 60),
    synthetic.MUSCLE: (35, 65),
    synthetic.LIVER: (45, 70),
    synthetic.BLOOD: (30, 55),
    synthetic.KIDNEY: (20, 45),
    synthetic.SPLEEN: (35, 60),
    synthetic.URINE: (-5, 20),
    synthetic.CSF: (-5, 20),
    synthetic.LESION: (35, 65),
    synthetic.BONE: (1000, 1900),
    synthetic.CANCELLOUS_BONE: (300, 700),
}
ALWAYS_IN_THE_PET_CT_SECTION = ("air", "lung", "fat", "soft_tissue", "muscle", "liver", "bone", "cancellous_bone")


@pytest.mark.parametrize("patient", [0, 1])
def test_synthetic_ct_values_fall_in_the_hu_ranges_of_their_tissues(patient):
    _, ct, extras = synthetic.synthesize_pair("pet_ct", synthetic.patient_rng("pet_ct", 0, patient), 128.0)
    labels = extras["ct_labels"]
    assert ct.unit == "HU"
    for tissue, (low, high) in HU_RANGES.items():
        values = ct.array[labels == tissue]
        if synthetic.TISSUES[tissue] in ALWAYS_IN_THE_PET_CT_SECTION:
            assert values.size > 0, synthetic.TISSUES[tissue]
        if values.size:
            assert low <= values.min() and values.max() <= high, (synthetic.TISSUES[tissue], values.min(), values.max())
    for bone in (synthetic.BONE, synthetic.CANCELLOUS_BONE):
        values = ct.array[labels == bone]
        assert values.max() - values.min() > 150  # a density range, not one number


def test_the_head_has_scalp_skull_tables_and_diploe_brain_csf_sinuses_and_eyes():
    from medgan_tf.data.phantoms import head

    phantom = synthetic.random_head(np.random.default_rng(3), 128.0)
    world = synthetic.grid_world((64, 64, 64), synthetic.axial_affine((64, 64, 64), (2.0, 2.0, 2.0)))
    labels, _, _ = head.head_maps(phantom, world)
    present = {synthetic.TISSUES[t] for t in np.unique(labels)}
    assert {"soft_tissue", "fat", "bone", "cancellous_bone", "csf", "grey_matter", "white_matter", "eye"} <= present
    radius = np.linalg.norm(head.head_coordinates(phantom, world), axis=-1)
    assert np.count_nonzero((labels == synthetic.AIR) & (radius < 0.85)) > 50  # sinuses and nasal cavity
    # On a ray from the centre outwards: white matter, grey matter, CSF, inner table, diploë, outer table, scalp.
    centre = np.array(phantom.centre)
    ray = np.stack([np.zeros(400), np.zeros(400), np.linspace(0, 1.05, 400) * phantom.semi_axes[2]], 1)
    along = head.head_maps(phantom, centre + ray)[0]
    order = [synthetic.TISSUES[t] for i, t in enumerate(along) if i == 0 or t != along[i - 1]]
    skull = order.index("bone")
    assert order[skull:skull + 3] == ["bone", "cancellous_bone", "bone"], order
    assert order.index("white_matter") < order.index("grey_matter") < skull < order.index("soft_tissue"), order


def _organ_mean(image: np.ndarray, labels: np.ndarray, tissue: int) -> float:
    """Mean of `image` inside `tissue`, one voxel in from its border (away from partial volume)."""
    from scipy import ndimage

    inside = ndimage.binary_erosion(labels == tissue, iterations=1)
    assert inside.any(), synthetic.TISSUES[tissue]
    return float(image[inside].mean())


@pytest.mark.parametrize("patient", [0, 1, 2])
def test_reconstructed_fdg_uptake_has_the_ratios_of_a_real_scan(patient):
    """Full-count pet_denoise PET in SUV: liver 2–2.5, fat and lungs 0.3–0.5, muscle 0.7–1,
    kidneys 3–5, bladder 10–30 and hot lesions, within the blur of the reconstruction."""
    _, full, extras = synthetic.synthesize_pair("pet_denoise", synthetic.patient_rng("pet_denoise", 0, patient))
    suv, labels = full.array / synthetic.BQML_PER_SUV, extras["labels"]
    mean = {name: _organ_mean(suv, labels, getattr(synthetic, name.upper()))
            for name in ("fat", "muscle", "liver", "kidney", "urine", "lung")}
    assert 1.9 <= mean["liver"] <= 2.7, mean
    assert 0.6 <= mean["muscle"] <= 1.1 and 0.25 <= mean["fat"] <= 0.65 and 0.25 <= mean["lung"] <= 0.8, mean
    assert 2.6 <= mean["kidney"] <= 5.5 and 9.0 <= mean["urine"] <= 32.0, mean
    assert mean["urine"] > mean["kidney"] > mean["liver"] > mean["muscle"] > mean["fat"]
    assert 3.0 < mean["liver"] / mean["fat"] < 10.0  # liver over background
    lesions = extras["lesions"]
    assert lesions.max() >= 1
    for k, lesion_suv in enumerate(extras["phantom"].lesion_suv):
        if np.count_nonzero(lesions == k + 1) >= 20:  # big enough to survive the scanner blur
            assert suv[lesions == k + 1].mean() > 0.45 * lesion_suv and suv[lesions == k + 1].mean() > 2 * mean["liver"]


def test_pet_ct_pet_uptake_follows_the_shared_tissue_map():
    pet, _, extras = synthetic.synthesize_pair("pet_ct", synthetic.patient_rng("pet_ct", 0, 2), 128.0)
    labels = extras["pet_labels"]
    liver, muscle, fat = (_organ_mean(pet.array, labels, t) for t in (synthetic.LIVER, synthetic.MUSCLE, synthetic.FAT))
    assert pet.unit == "Bq/ml" and liver > 1.5 * muscle > 1.2 * fat


@pytest.mark.parametrize("task", ["pet_ct", "mr_motion", "pet_denoise"])
def test_a_phantom_is_byte_identical_for_the_same_seed(task):
    first = synthetic.synthesize_pair(task, synthetic.patient_rng(task, 7, 2), 64.0)
    again = synthetic.synthesize_pair(task, synthetic.patient_rng(task, 7, 2), 64.0)
    for a, b in zip(first[:2], again[:2]):
        assert a.array.tobytes() == b.array.tobytes() and a.affine.tobytes() == b.affine.tobytes()
    key = "ct_labels" if task == "pet_ct" else "labels"
    assert first[2][key].tobytes() == again[2][key].tobytes()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("task, key, organ", [("pet_denoise", "labels", "liver"), ("pet_ct", "ct_labels", "liver"),
                                              ("mr_motion", "labels", "white_matter")])
def test_two_patients_have_different_anatomy(task, key, organ):
    """Dice overlap of two patients' masks (the body and one organ) on the same grid stays < 95 %."""
    first, second = (synthetic.synthesize_pair(task, synthetic.patient_rng(task, 0, i), 128.0)[2][key] for i in (0, 1))
    assert _dice(first != synthetic.AIR, second != synthetic.AIR) < 0.95
    tissue = getattr(synthetic, organ.upper())
    assert _dice(first == tissue, second == tissue) < 0.95
    assert np.mean(first == second) < 0.95  # voxel-wise label agreement


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
