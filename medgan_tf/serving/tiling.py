"""Overlapping S×S tiles over slices larger than the model's field of view (pure numpy).

A slice of H×W pixels (H, W ≥ S) is covered by tiles at `tile_positions` along each axis; the
model translates each tile, and `stitch_tiles` blends the outputs with separable weights that
fall off smoothly towards the tile borders (a raised-cosine ramp over the overlap), divided by
the summed weights. The weights are strictly positive everywhere, so every pixel — corners and
slice borders included — is covered, and a constant stays exactly constant: no seams.
"""

from __future__ import annotations

import numpy as np


def check_overlap(overlap: float) -> float:
    """`overlap` (fraction of a tile) as a float in [0, 1); ValueError otherwise."""
    overlap = float(overlap)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap must be a fraction in [0, 1); received {overlap}")
    return overlap


def tile_positions(length: int, tile: int, overlap: float) -> list[int]:
    """Start indices of tiles of `tile` pixels covering [0, `length`) → sorted list of ints.

    Consecutive tiles overlap by at least round(`overlap` × `tile`) pixels; the last tile ends
    flush with `length` (so it may overlap its neighbour more). A `length` ≤ `tile` gives [0].
    """
    overlap = check_overlap(overlap)
    if length <= tile:
        return [0]
    stride = max(1, tile - int(round(overlap * tile)))
    positions = list(range(0, length - tile, stride))
    positions.append(length - tile)
    return positions


def blend_weights(tile: int, overlap: float) -> np.ndarray:
    """(tile, tile) float64 blending weights, all in (0, 1].

    Separable: a raised-cosine ramp over the first and last round(`overlap` × `tile`) pixels of
    each axis, 1 in between. The ramp is sampled at pixel centres, so its first value is small
    but positive (a pixel seen by a single tile at the slice border still gets its value).
    """
    overlap = check_overlap(overlap)
    ramp_length = min(tile // 2, int(round(overlap * tile)))
    line = np.ones(tile, dtype=np.float64)
    if ramp_length > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp_length) + 0.5) / ramp_length)
        line[:ramp_length] = ramp
        line[tile - ramp_length :] = ramp[::-1]
    return np.outer(line, line)


def tile_grid(shape: tuple[int, int], tile: int, overlap: float) -> list[tuple[int, int]]:
    """(row, column) starts of the tiles covering an H×W slice (`shape`), row-major."""
    rows = tile_positions(int(shape[0]), tile, overlap)
    columns = tile_positions(int(shape[1]), tile, overlap)
    return [(r, c) for r in rows for c in columns]


def split_tiles(slices: np.ndarray, positions: list[tuple[int, int]], tile: int) -> np.ndarray:
    """(K, H, W, ...) slices → (K·P, tile, tile, ...) tiles, slice-major (the P tiles of slice 0
    first), P = len(`positions`)."""
    tiles = [slices[k, r : r + tile, c : c + tile] for k in range(len(slices)) for r, c in positions]
    if not tiles:
        return np.zeros((0, tile, tile, *np.shape(slices)[3:]), dtype=np.asarray(slices).dtype)
    return np.stack(tiles, axis=0)


def stitch_tiles(
    tiles: np.ndarray,
    positions: list[tuple[int, int]],
    shape: tuple[int, int],
    overlap: float,
) -> np.ndarray:
    """Inverse of `split_tiles`: (K·P, tile, tile, ...) tiles → (K, H, W, ...) float32 slices,
    blended with `blend_weights` and normalized by the summed weights.

    A single tile per slice that fills it (H = W = tile) is returned as is: a slice that fits
    the model's field of view gives bit-for-bit the untiled result.
    """
    tiles = np.asarray(tiles)
    tile = int(tiles.shape[1])
    count = len(positions)
    num_slices = len(tiles) // count
    if count == 1 and tuple(shape) == (tile, tile):
        return tiles.astype(np.float32, copy=False)
    weights = blend_weights(tile, overlap).reshape((tile, tile) + (1,) * (tiles.ndim - 3))
    total = np.zeros((num_slices, *shape, *tiles.shape[3:]), dtype=np.float64)
    summed = np.zeros(tuple(shape), dtype=np.float64).reshape(tuple(shape) + (1,) * (tiles.ndim - 3))
    for index, (r, c) in enumerate(positions):
        total[:, r : r + tile, c : c + tile] += weights * tiles[index::count]
        summed[r : r + tile, c : c + tile] += weights
    return (total / summed).astype(np.float32)
