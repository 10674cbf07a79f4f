"""Geometry (model grid and its inverse), normalization and the record schema."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medgan_tf import presets, tasks
from medgan_tf.config import NormalizationConfig
from medgan_tf.data import geometry, normalization, schema
from medgan_tf.data.io import Volume
from medgan_tf.data.preparation import prepare
from medgan_tf.data.rejections import PairRejected


def _linear_volume(shape, affine):
    """Values = a linear function of world position: trilinear resampling reproduces it exactly."""
    indices = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    world = indices @ affine[:3, :3].T + affine[:3, 3]
    return (world @ np.array([2.0, -1.0, 0.5]) + 100.0).astype(np.float32), world


def test_model_grid_samples_by_world_coordinates_and_crops_or_pads_centrally():
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (-20.0, -30.0, -6.0)
    values, _ = _linear_volume((20, 30, 5), affine)
    volume = Volume(values, affine, "CT", "HU")
    array, grid = geometry.to_model_grid(volume, (1.0, 1.0, 1.0), 24)
    # 1 mm grid centred on the volume centre (world (−1, −1, 0)); 5 slices × 3 mm → 15 slices.
    assert array.shape == (24, 24, 15)
    np.testing.assert_allclose(grid[:3, :3], np.eye(3))
    np.testing.assert_allclose(grid[:3, 3] + grid[:3, :3] @ ((np.array(array.shape) - 1) / 2), (-1.0, -1.0, 0.0))
    # Interior voxels equal the linear function at their world position.
    _, world = _linear_volume(array.shape, grid)
    expected = world @ np.array([2.0, -1.0, 0.5]) + 100.0
    interior = (slice(2, -2), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(array[interior], expected[interior], atol=1e-3)


def test_model_grid_follows_closest_ras_axes_of_an_lps_series():
    # A DICOM-like axial series: i → patient left (−x in RAS), j → posterior (−y).
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    volume = Volume(np.random.default_rng(0).random((16, 16, 4)).astype(np.float32), affine)
    shape, grid = geometry.model_grid(volume, (1.0, 1.0, 1.0), 16)
    np.testing.assert_allclose(grid[:3, :3], np.eye(3))  # RAS-ordered and positive
    array, _ = geometry.to_model_grid(volume, (1.0, 1.0, 1.0), 16)
    np.testing.assert_allclose(array, volume.array[::-1, ::-1, :], atol=1e-6)


def test_a_volume_covers_half_a_voxel_beyond_its_outer_centres():
    volume = np.arange(1.0, 4.0, dtype=np.float32).reshape(1, 1, 3)  # centres at z = 0, 3, 6 mm
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    out_affine = np.eye(4)
    out_affine[2, 3] = -2.0  # z = −2 … 8 mm in 1 mm steps
    out = geometry.resample(volume, affine, (1, 1, 11), out_affine, fill=-5.0)[0, 0]
    # z = −2 is 2/3 voxel out (fill); −1 is within half a voxel (nearest = 1); 0…6 interpolate;
    # 7 (1/3 voxel beyond) keeps the last value; 8 (2/3 beyond) is outside.
    np.testing.assert_allclose(out, [-5, 1, 1, 1 + 1 / 3, 1 + 2 / 3, 2, 2 + 1 / 3, 2 + 2 / 3, 3, 3, -5], atol=1e-6)


def test_from_model_grid_inverts_to_model_grid():
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-12.0, -12.0, -8.0)
    values, _ = _linear_volume((30, 30, 9), affine)
    volume = Volume(values, affine)
    array, grid = geometry.to_model_grid(volume, (1.0, 1.0, 1.0), 32)
    back = geometry.from_model_grid(array, grid, volume)
    assert back.shape == volume.shape
    inner = (slice(3, -3), slice(3, -3), slice(1, -1))
    np.testing.assert_allclose(back[inner], values[inner], atol=1e-2)


def test_pair_that_does_not_overlap_is_refused():
    volume = Volume(np.zeros((8, 8, 8), np.float32), np.eye(4))
    far = np.eye(4)
    far[:3, 3] = 500.0
    config = dataclasses.replace(tasks.TASKS.get("pet_denoise").data, spacing_mm=(1.0, 1.0, 1.0), image_size=8)
    with pytest.raises(PairRejected, match="do not overlap"):
        prepare(volume, config, target=Volume(np.zeros((8, 8, 8), np.float32), far))


@pytest.mark.parametrize(
    "config, array, expected_low, expected_high",
    [
        (NormalizationConfig(kind="window", low=-1000, high=2000), np.array([-2000.0, 0, 5000]), -1000.0, 2000.0),
        (NormalizationConfig(kind="scale", percentile=50.0, unit="SUV"), np.array([0.0, 1, 2, 3, 4]), 0.0, 2.0),
        (NormalizationConfig(kind="percentile", percentile_low=25.0, percentile=75.0, unit="a.u."), np.arange(5.0), 1.0, 3.0),
    ],
)
def test_normalization_kinds_golden_values(config, array, expected_low, expected_high):
    params = normalization.fit(array, config)
    assert (params["low"], params["high"], params["kind"]) == (expected_low, expected_high, config.kind)
    normalized = normalization.normalize(array, params)
    assert normalized.dtype == np.float32 and normalized.min() >= -1 and normalized.max() <= 1
    # The window's ends map to −1 and +1; inside it the map is invertible.
    np.testing.assert_allclose(normalization.normalize(np.array([expected_low, expected_high]), params), [-1.0, 1.0])
    inside = np.clip(array, expected_low, expected_high)
    np.testing.assert_allclose(normalization.denormalize(normalized, params), inside, atol=1e-4)


def test_ct_window_golden_numbers_and_tensor_denormalize():
    import tensorflow as tf

    params = normalization.fit(np.zeros(3), NormalizationConfig(kind="window", low=-1000, high=2000))
    np.testing.assert_allclose(normalization.normalize(np.array([-1000.0, 500.0, 2000.0]), params), [-1.0, 0.0, 1.0])
    tensor = normalization.denormalize(tf.constant([[-1.0, 0.0, 1.0]]), params)
    np.testing.assert_allclose(tensor.numpy(), [[-1000.0, 500.0, 2000.0]])
    batch = tf.zeros((2, 4, 4, 1))
    out = normalization.denormalize_tensor(batch, tf.constant([-1000.0, 0.0]), tf.constant([2000.0, 10.0]))
    np.testing.assert_allclose(out.numpy()[:, 0, 0, 0], [500.0, 5.0])


def test_schema_round_trip_in_tensorflow_and_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    source = rng.uniform(-1, 1, (8, 8)).astype(np.float32)
    target = rng.uniform(-1, 1, (8, 8, 1)).astype(np.float32)
    params_s = {"kind": "scale", "unit": "SUV", "low": 0.0, "high": 7.5}
    params_t = {"kind": "window", "unit": "HU", "low": -1000.0, "high": 2000.0}
    serialized = schema.encode_example(source, target, "abc123", 5, (1.0, 1.0, 2.0), params_s, params_t)
    parsed = schema.parse_example(tf.constant(serialized))
    assert parsed["source"].shape == (8, 8, 1) and parsed["source"].dtype == tf.float32
    np.testing.assert_array_equal(parsed["source"].numpy()[..., 0], source)
    np.testing.assert_array_equal(parsed["target"].numpy(), target)
    assert parsed["patient_key"].numpy() == b"abc123" and int(parsed["slice_index"]) == 5
    np.testing.assert_allclose(parsed["spacing"].numpy(), (1.0, 1.0, 2.0))
    assert float(parsed["target_low"]) == -1000.0 and parsed["source_unit"].numpy() == b"SUV"
    as_numpy = schema.parse_example_numpy(serialized)
    assert as_numpy["source_params"] == params_s and as_numpy["target_params"] == params_t
    with pytest.raises(ValueError, match="square slices"):
        schema.encode_example(source, target[:4], "k", 0, (1, 1, 1), params_s, params_t)


def test_preparation_fits_normalization_without_the_padding_around_a_small_volume():
    values = np.full((8, 8, 4), 10.0, np.float32)
    values[0, 0, 0] = 0.0  # background (the padding value) = the volume's minimum
    volume = Volume(values, np.eye(4), "PT", "Bq/ml")
    array, grid = geometry.to_model_grid(volume, (1.0, 1.0, 1.0), 32)  # 8×8 inside 32×32 of zeros
    config = NormalizationConfig(kind="scale", percentile=50.0, unit="SUV")
    assert normalization.fit(array, config)["high"] == 1.0  # median of mostly padding: 0 → guarded to 1
    data = dataclasses.replace(tasks.TASKS.get("pet_denoise").data, spacing_mm=(1.0, 1.0, 1.0), image_size=32,
                               source_normalization=config)
    params = prepare(volume, data).source_params
    assert params["high"] == 10.0 and params["unit"] == "Bq/ml"
