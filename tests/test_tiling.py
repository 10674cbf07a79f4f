"""Tiles over slices larger than the model's field of view: coverage, overlap and seamless blending."""

import numpy as np
import pytest

from medgan_tf.serving import tiling


@pytest.mark.parametrize("length, tile, overlap", [(240, 32, 0.25), (200, 32, 0.25), (33, 32, 0.5), (100, 32, 0.0), (97, 16, 0.9)])
def test_tile_positions_cover_overlap_and_end_flush(length, tile, overlap):
    positions = tiling.tile_positions(length, tile, overlap)
    assert positions[0] == 0 and positions[-1] == length - tile  # the last tile ends flush
    assert positions == sorted(set(positions))
    covered = np.zeros(length, dtype=int)
    for start in positions:
        covered[start : start + tile] += 1
    assert covered.min() >= 1  # every pixel covered
    gaps = np.diff(positions)
    assert np.all(tile - gaps >= round(overlap * tile))  # neighbours overlap by at least the fraction


@pytest.mark.parametrize("length", [10, 32])
def test_a_tile_at_least_the_length_is_one_tile(length):
    assert tiling.tile_positions(length, 32, 0.25) == [0]


def test_overlap_outside_zero_one_is_refused():
    for overlap in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"in \[0, 1\)"):
            tiling.tile_positions(100, 32, overlap)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_weights_are_positive_and_blending_a_constant_gives_the_constant(overlap):
    weights = tiling.blend_weights(32, overlap)
    assert weights.shape == (32, 32) and weights.min() > 0 and weights.max() <= 1.0
    positions = tiling.tile_grid((90, 70), 32, overlap)
    slices = np.full((3, 90, 70, 1), 7.25, np.float32)
    tiles = tiling.split_tiles(slices, positions, 32)
    assert tiles.shape == (3 * len(positions), 32, 32, 1)
    np.testing.assert_allclose(tiling.stitch_tiles(tiles, positions, (90, 70), overlap), slices, rtol=1e-6)


def test_split_then_stitch_returns_the_slices():
    slices = np.random.default_rng(0).normal(size=(2, 75, 64)).astype(np.float32)
    positions = tiling.tile_grid((75, 64), 32, 0.25)
    tiles = tiling.split_tiles(slices, positions, 32)
    np.testing.assert_allclose(tiling.stitch_tiles(tiles, positions, (75, 64), 0.25), slices, rtol=1e-5, atol=1e-6)


def test_a_slice_that_fits_is_passed_through_unchanged():
    slices = np.random.default_rng(1).normal(size=(4, 32, 32, 1)).astype(np.float32)
    positions = tiling.tile_grid((32, 32), 32, 0.25)
    assert positions == [(0, 0)]
    tiles = tiling.split_tiles(slices, positions, 32)
    assert np.array_equal(tiling.stitch_tiles(tiles, positions, (32, 32), 0.25), slices)
