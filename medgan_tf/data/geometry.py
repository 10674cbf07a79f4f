"""World-coordinate geometry: put volumes on the model grid and back (paper §3.1).

The *model grid* of a pair is defined by its source volume: the source's axes reordered/flipped
to the closest RAS+ orientation (so k runs inferior→superior and k-slices are axial), voxel size
= the task spacing, in-plane size = `image_size` × `image_size`, centred on the source volume's
centre, and as many slices as cover the source extent. Sampling a volume on that grid by world
coordinates is, in one interpolation, "target onto the source grid → resample to the task
spacing → centre crop/pad in-plane" (doing it in one step avoids interpolating twice).
`from_model_grid` is the inverse map used by `translate` to put model outputs back on the
original grid; `translate` uses `model_grid(..., cover=True)`, whose in-plane size grows past S
to the volume's whole extent (translated by overlapping S×S tiles, `medgan_tf.serving.tiling`).
"""

from __future__ import annotations

import numpy as np

from medgan_tf.data.io import Volume


def voxel_to_world(affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(N, 3) voxel indices → (N, 3) world mm."""
    return indices @ affine[:3, :3].T + affine[:3, 3]


def resample(
    array: np.ndarray,
    affine: np.ndarray,
    out_shape: tuple[int, ...],
    out_affine: np.ndarray,
    *,
    order: int = 1,
    fill: float = 0.0,
) -> np.ndarray:
    """Sample `array` (on `affine`) at the voxel centres of the grid (`out_shape`, `out_affine`).

    Trilinear (order 1) by default: no overshoot, so HU and activity stay in their physical
    ranges. A volume covers its voxels fully (to half a voxel beyond the outer centres, where the
    nearest value is used); points outside it take `fill`.
    """
    from scipy import ndimage

    mapping = np.linalg.inv(affine) @ out_affine  # output voxel → input voxel
    out = ndimage.affine_transform(
        np.asarray(array, dtype=np.float32),
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=tuple(int(v) for v in out_shape),
        order=order,
        mode="nearest",
        prefilter=order > 1,
    )
    out[~_inside(array.shape, mapping, out_shape)] = fill
    return out.astype(np.float32, copy=False)


def _inside(in_shape: tuple[int, ...], mapping: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Boolean (out_shape): output voxel centres that map inside the input's voxels (±½ voxel).
    Computed one output slice at a time so large reference grids stay cheap in memory."""
    out_shape = tuple(int(v) for v in out_shape)
    i, j = np.meshgrid(np.arange(out_shape[0], dtype=np.float64), np.arange(out_shape[1], dtype=np.float64), indexing="ij")
    plane = np.stack([i.ravel(), j.ravel()], axis=1) @ mapping[:3, :2].T + mapping[:3, 3]
    lower, upper = -0.5, np.asarray(in_shape[:3], dtype=np.float64) - 0.5
    mask = np.empty(out_shape, dtype=bool)
    for k in range(out_shape[2]):
        points = plane + k * mapping[:3, 2]
        mask[:, :, k] = np.all((points >= lower) & (points <= upper), axis=1).reshape(out_shape[:2])
    return mask


def model_grid(
    volume: Volume, spacing_mm: tuple[float, float, float], image_size: int, *, cover: bool = False
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape (S, S, K) and 4×4 affine of the model grid defined by `volume` (see module doc).

    The grid axes follow the volume's axes reordered/flipped to the closest RAS+ orientation,
    so oblique acquisitions keep their own (oblique) slice planes: no rotation is interpolated.

    With `cover`, each in-plane size is max(S, ⌈extent / spacing⌉) instead of S, so the grid
    (H, W, K) covers the volume's whole in-plane extent (for translation by overlapping S×S
    tiles); a volume whose extent fits in S×S gets exactly the S×S grid.
    """
    import nibabel as nib

    affine = np.asarray(volume.affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(affine)
    directions = np.zeros((3, 3))
    extent = np.zeros(3)
    for in_axis, (out_axis, flip) in enumerate(ornt):
        column = affine[:3, in_axis]
        length = np.linalg.norm(column)
        directions[:, int(out_axis)] = flip * column / length
        extent[int(out_axis)] = volume.array.shape[in_axis] * length
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    num_slices = max(1, int(round(extent[2] / spacing[2])))
    shape = (int(image_size), int(image_size), num_slices)
    if cover:
        # The 1e-6 keeps an extent that is a whole number of voxels from rounding up by one.
        shape = tuple(max(int(image_size), int(np.ceil(extent[a] / spacing[a] - 1e-6))) for a in (0, 1)) + (num_slices,)
    centre = voxel_to_world(affine, (np.asarray(volume.array.shape, dtype=np.float64) - 1.0)[None] / 2.0)[0]
    grid = np.eye(4)
    grid[:3, :3] = directions * spacing[None, :]
    grid[:3, 3] = centre - grid[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1.0) / 2.0)
    return shape, grid


def background_value(volume: Volume) -> float:
    """Value for samples outside a volume: its minimum (air: −1000 HU in CT, 0 in PET/MR)."""
    return float(np.min(volume.array))


def to_model_grid(
    volume: Volume,
    spacing_mm: tuple[float, float, float],
    image_size: int,
    *,
    grid: tuple[tuple[int, int, int], np.ndarray] | None = None,
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample `volume` onto a model grid → (float32 array (S, S, K), grid affine 4×4).

    Without `grid`, the grid is the one `volume` defines itself (`model_grid`); pass the source's
    grid to put a target on it. Slice k of the result is `array[:, :, k]`.
    """
    shape, grid_affine = grid if grid is not None else model_grid(volume, spacing_mm, image_size)
    array = resample(volume.array, volume.affine, shape, grid_affine, order=order, fill=background_value(volume))
    return array, grid_affine


def from_model_grid(
    array: np.ndarray,
    grid_affine: np.ndarray,
    reference_volume: Volume,
    *,
    order: int = 1,
    fill: float | None = None,
) -> np.ndarray:
    """Inverse of `to_model_grid`: an (S, S, K) stack on `grid_affine` → float32 array with the
    shape of `reference_volume`, sampled at its voxel centres by world coordinates. Voxels the
    model grid does not cover take `fill` (default: the stack's minimum)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 4 and array.shape[-1] == 1:  # (S, S, K, 1) from a model
        array = array[..., 0]
    if fill is None:
        fill = float(np.min(array))
    return resample(array, grid_affine, reference_volume.array.shape, reference_volume.affine, order=order, fill=fill)


def overlap_fraction(moving: Volume, shape: tuple[int, ...], affine: np.ndarray) -> float:
    """Fraction of the voxel centres of grid (`shape`, `affine`) that fall inside `moving`'s grid."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    # Sub-sample large grids: a few thousand points estimate the fraction well enough.
    points = np.stack([g.ravel() for g in grids], axis=1)
    if len(points) > 20000:
        points = points[:: len(points) // 20000]
    world = voxel_to_world(affine, points)
    inside = voxel_to_world(np.linalg.inv(moving.affine), world)
    upper = np.asarray(moving.array.shape, dtype=np.float64) - 0.5
    within = np.all((inside >= -0.5) & (inside <= upper), axis=1)
    return float(np.mean(within))


def coverage(volume: Volume, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Boolean mask over grid (`shape`, `affine`): voxel centres that fall inside `volume`."""
    return _inside(volume.array.shape, np.linalg.inv(volume.affine) @ affine, shape)


def on_same_voxels(volume: Volume, shape: tuple[int, ...], affine: np.ndarray, tolerance: float = 0.01) -> np.ndarray | None:
    """`volume.array` reordered onto the grid (`shape`, `affine`) when that grid holds the same
    voxel centres with its axes in another order or direction (a NIfTI made from a DICOM series
    and that series, say); None when it does not (within `tolerance` voxels)."""
    mapping = np.linalg.solve(np.asarray(affine, np.float64), np.asarray(volume.affine, np.float64))
    signs = np.round(mapping[:3, :3])  # our index → their index: a signed permutation, if anything
    if not np.allclose(mapping[:3, :3], signs, atol=tolerance) or not np.array_equal(np.abs(signs).sum(0), np.ones(3)) \
            or not np.array_equal(np.abs(signs).sum(1), np.ones(3)):
        return None
    order = [int(np.flatnonzero(signs[axis])[0]) for axis in range(3)]  # their axis `axis` is our axis order[axis]
    array = np.transpose(volume.array, order)
    flipped = [signs[axis, order[axis]] < 0 for axis in range(3)]
    for axis in np.flatnonzero(flipped):
        array = np.flip(array, int(axis))
    corner = [shape[axis] - 1 if flipped[axis] else 0 for axis in range(3)]  # where our voxel 0 lands
    if array.shape != tuple(shape) or not np.allclose(mapping[:3, 3], corner, atol=tolerance):
        return None
    return np.ascontiguousarray(array)
