"""The simulations of mr_ct, cbct_ct and ct_denoise: deterministic per seed, a new patient each
time, and physically plausible in numbers (HU of air and bone, MR contrast, CBCT noise, cupping
and truncation, quarter-dose noise). Tiny grids, so each test takes a few seconds at most."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from medgan_tf.data import synthetic
from medgan_tf.data.phantoms import ct_physics, simulations
from medgan_tf.data.phantoms.tissues import AIR, BONE, GREY_MATTER, URINE, WHITE_MATTER

TINY = {
    "mr_ct": functools.partial(simulations.simulate_mr_ct, field_of_view_mm=192.0, shape=(40, 40, 24), slice_mm=8.0),
    "cbct_ct": functools.partial(simulations.simulate_cbct_ct, field_of_view_mm=400.0, shape=(40, 40, 3)),
    "ct_denoise": functools.partial(simulations.simulate_ct_denoise, field_of_view_mm=400.0, shape=(40, 40, 3)),
}


def _rng(task: str, seed: int, patient: int) -> np.random.Generator:
    return synthetic.patient_rng(task, seed, patient)


def _disc(size: int, pixel_mm: float, radius_mm: float, inner_mm: float = 0.0) -> np.ndarray:
    y, x = (np.mgrid[:size, :size] - (size - 1) / 2.0) * pixel_mm
    r = np.hypot(x, y)
    return (r < radius_mm) & (r >= inner_mm)


def _cylinder(size: int, pixel_mm: float, radius_mm: float, slices: int = 3, noise_hu: float = 0.0) -> np.ndarray:
    """A water cylinder (0 HU) in air (−1000 HU): slices (K, N, N), optional CT-like noise."""
    water = np.where(_disc(size, pixel_mm, radius_mm), 0.0, -1000.0)
    stack = np.repeat(water[None], slices, axis=0)
    return stack + np.random.default_rng(9).normal(0.0, noise_hu, stack.shape) * (stack > -500)


@pytest.mark.parametrize("task", list(TINY))
def test_a_new_task_is_deterministic_per_seed_and_differs_between_patients(task):
    first, again, other = (TINY[task](_rng(task, 5, patient)) for patient in (0, 0, 1))
    for a, b in zip(first[:3], again[:3]):
        assert a.tobytes() == b.tobytes()
    assert first[0].dtype == first[1].dtype == np.float32 and first[0].shape == first[1].shape
    assert first[3]["labels"].tobytes() == again[3]["labels"].tobytes()
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])
    assert np.mean(first[3]["labels"] == other[3]["labels"]) < 0.95  # another anatomy
    assert first[1].min() >= -1024.0  # HU clipped to the stored range (mr_ct: CT is the target)


def test_new_tasks_are_in_the_generator_table_with_their_own_random_streams(monkeypatch):
    assert list(synthetic.GENERATORS)[:3] == ["pet_ct", "mr_motion", "pet_denoise"]  # their streams unchanged
    draws = {task: synthetic.patient_rng(task, 0, 0).integers(1 << 30) for task in synthetic.GENERATORS}
    assert len(set(draws.values())) == len(draws)
    units = {"mr_ct": (("MR", "a.u."), ("CT", "HU")), "cbct_ct": (("CT", "HU"),) * 2, "ct_denoise": (("CT", "HU"),) * 2}
    for task, expected in units.items():
        name = f"simulate_{task}"
        monkeypatch.setattr(simulations, name, functools.partial(getattr(simulations, name), shape=(24, 24, 2)))
        source, target, extras = synthetic.synthesize_pair(task, _rng(task, 0, 0))
        assert ((source.modality, source.unit), (target.modality, target.unit)) == expected
        assert source.shape == target.shape == (24, 24, 2) and np.array_equal(source.affine, target.affine)
        assert "labels" in extras
    with pytest.raises(ValueError, match="ct_denoise"):
        synthetic.synthesize_pair("nope", _rng("pet_ct", 0, 0))


@pytest.mark.parametrize("patient", [0, 1])
def test_mr_ct_bone_is_dark_on_mr_and_bright_on_ct_and_air_dark_in_both(patient):
    mr, ct, _, extras = TINY["mr_ct"](_rng("mr_ct", 0, patient))
    labels = extras["labels"]
    assert mr.min() >= 0.0  # magnitude image (Rician), a.u.
    assert abs(ct[labels == AIR].mean() + 1000.0) < 10.0
    assert ct[labels == BONE].mean() > 1000.0 and ct[labels == BONE].min() > 700.0
    grey, white, bone, air = (mr[labels == t].mean() for t in (GREY_MATTER, WHITE_MATTER, BONE, AIR))
    assert bone < 0.3 * grey and air < 0.1 * grey and white > 1.15 * grey, (bone, grey, white, air)


def test_cbct_is_noisier_than_ct_in_a_uniform_region():
    pixel, size = 400.0 / 48, 48
    ct = _cylinder(size, pixel, 120.0, noise_hu=4.0)
    cbct = ct_physics.simulate_cbct(ct, pixel, np.random.default_rng(0), photons=simulations.CBCT_PHOTONS,
                                    spr_centre=0.5, fov_radius_mm=180.0)
    centre = _disc(size, pixel, 50.0)
    ratio = cbct[:, centre].std() / ct[:, centre].std()
    assert ratio > 2.0, ratio
    # On a patient too: the bladder (urine, uniform in the CT) is noisier in the CBCT.
    cbct_volume, ct_volume, _, extras = TINY["cbct_ct"](_rng("cbct_ct", 0, 1))
    from scipy import ndimage

    bladder = ndimage.binary_erosion(extras["labels"] == URINE, iterations=1)
    assert bladder.sum() > 10
    assert cbct_volume[bladder].std() > 2.0 * ct_volume[bladder].std()


def test_cbct_scatter_makes_measurable_cupping_in_a_water_cylinder():
    pixel, size = 400.0 / 48, 48
    water = _cylinder(size, pixel, 120.0)
    centre, ring = _disc(size, pixel, 40.0), _disc(size, pixel, 100.0, inner_mm=75.0)
    cupping = {}
    for spr in (0.0, 0.5):
        image = ct_physics.simulate_cbct(water, pixel, np.random.default_rng(1), photons=1e6, spr_centre=spr,
                                         fov_radius_mm=180.0)
        cupping[spr] = image[:, ring].mean() - image[:, centre].mean()
    assert abs(cupping[0.0]) < 15.0, cupping  # no scatter: flat
    assert cupping[0.5] > 30.0, cupping  # edge brighter than centre by tens of HU


def test_cbct_truncates_the_body_outside_the_detector_and_stays_accurate_inside():
    pixel, size, fov = 400.0 / 48, 48, 130.0
    water = _cylinder(size, pixel, 160.0)
    image = ct_physics.simulate_cbct(water, pixel, np.random.default_rng(2), photons=1e6, spr_centre=0.0,
                                     fov_radius_mm=fov)
    outside = ~_disc(size, pixel, fov) & _disc(size, pixel, 150.0)
    assert np.all(image[:, outside] == -1000.0)  # water in the CT, air in the CBCT
    inside = _disc(size, pixel, 100.0)
    assert abs(image[:, inside].mean()) < 30.0  # the water-cylinder extrapolation keeps the HU
    # The simulated patient: body the CT shows beyond the scan field of view is missing.
    cbct, ct, affine, extras = TINY["cbct_ct"](_rng("cbct_ct", 0, 0))
    beyond = ~_disc(ct.shape[0], affine[0, 0], extras["fov_radius_mm"])
    body_beyond = (ct > -500.0) & beyond[:, :, None]
    assert body_beyond.sum() > 10 and np.all(cbct[body_beyond] == -1000.0)


def test_quarter_dose_doubles_the_noise_of_full_dose_in_a_uniform_region():
    pixel, size = 400.0 / 48, 48
    water = _cylinder(size, pixel, 150.0)
    full, quarter = ct_physics.simulate_dose_levels(water, pixel, np.random.default_rng(3),
                                                    photons=simulations.FULL_DOSE_PHOTONS, dose_fractions=(1.0, 0.25))
    region = _disc(size, pixel, 100.0)
    assert abs(full[:, region].mean()) < 10.0 and abs(quarter[:, region].mean()) < 10.0  # unbiased HU
    ratio = quarter[:, region].std() / full[:, region].std()
    assert 1.6 < ratio < 2.5, ratio


def test_ct_denoise_pair_is_full_dose_target_and_quarter_dose_source():
    source, target, affine, extras = TINY["ct_denoise"](_rng("ct_denoise", 0, 0))
    pixel = affine[0, 0]
    truth = np.moveaxis(extras["truth"], 2, 0)
    noiseless = ct_physics.reconstruct_hu(*ct_physics.line_integrals(truth, pixel), pixel)
    body = np.moveaxis(extras["labels"] != AIR, 2, 0) & _disc(source.shape[0], pixel, 120.0)
    noise_quarter = (np.moveaxis(source, 2, 0) - noiseless)[body].std()
    noise_full = (np.moveaxis(target, 2, 0) - noiseless)[body].std()
    assert 1.6 < noise_quarter / noise_full < 2.5, (noise_quarter, noise_full)
    from scipy import ndimage

    air = ndimage.binary_erosion(extras["labels"] == AIR, np.ones((3, 3, 1)), iterations=2, border_value=1)
    assert abs(target[air].mean() + 1000.0) < 20.0 and abs(source[air].mean() + 1000.0) < 20.0
    assert source.min() >= -1024.0 and target.min() >= -1024.0


def test_ct_denoise_phantom_can_be_imaged_on_a_given_in_plane_grid():
    """`pixels` (a phantom option, as the low-dose demo uses it) images the same field of view on
    a coarser grid: the pixel grows, the slices stay, and the pair still shares one grid."""
    default, default_target, _ = synthetic.synthesize_pair("ct_denoise", _rng("ct_denoise", 0, 0), 384.0)
    source, target, _ = synthetic.synthesize_pair("ct_denoise", _rng("ct_denoise", 0, 0), 384.0, {"pixels": 32})

    assert default.array.shape[:2] == simulations.CT_DENOISE_SHAPE[:2]
    assert source.array.shape == (32, 32, simulations.CT_DENOISE_SHAPE[2]) == target.array.shape
    assert np.isclose(source.affine[0, 0], 384.0 / 32) and np.allclose(source.affine, target.affine)
