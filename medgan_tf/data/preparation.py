"""Preparing volumes for the model, and restoring its outputs: one path for conversion and translation.

`prepare` is what the model's input is made of, written once (in the spirit of MONAI's invertible
transforms) and used by the converter (`data.pairs.convert_pair`, with the target) and by
translation (`serving.translation`, without one):

  1. model grid: defined by the source (`geometry.model_grid`): the task spacing, axial slices,
     S×S in-plane; with `cover`, as wide as the source's whole in-plane extent (for S×S tiles);
  2. the source, the target and the extra sources (source_2, …) sampled on it by world coordinates;
  3. the slices kept: those the source covers and, with a target, that the target covers at least
     half as well (a PET longer than its CT gives no pair beyond the CT);
  4. normalization fitted per volume on the voxels each really covers within the kept slices (not
     the crop/pad fill), so translation scales a volume exactly as training data was scaled; a
     target that shares the source's normalization (PET denoising) takes the source's window;
  5. normalized arrays, and the 2.5D / multi-source input windows (`data.context`), edge slices
     repeated at the ends of the kept range.

`restore` is the inverse for model outputs: [-1, 1] → the target's physical unit → the source's
own voxel grid by world coordinates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from medgan_tf.config import DataConfig, NormalizationConfig
from medgan_tf.data import context, geometry, io, normalization
from medgan_tf.data.io import Volume
from medgan_tf.data.rejections import PairRejected

MIN_OVERLAP = 0.01  # of the source's voxel centres that a target or extra source must cover


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Volumes on the model grid (H, W, K), normalized, with what maps them back.

    `*_normalized` are in [-1, 1] (float32); `keep` holds the indices k of the slices the model
    sees (records hold only these); `target_normalized` is None without a target (translation),
    and then `target_params` are what model outputs map back with (`output_parameters`).
    """

    source: Volume
    grid_shape: tuple[int, int, int]
    grid_affine: np.ndarray
    keep: np.ndarray
    source_params: dict[str, Any]
    source_normalized: np.ndarray
    context_slices: int = 0
    extra_volumes: tuple[Volume, ...] = ()
    extra_params: tuple[dict[str, Any], ...] = ()
    extra_normalized: tuple[np.ndarray, ...] = ()
    target_params: dict[str, Any] | None = None
    target_normalized: np.ndarray | None = None

    @property
    def uses_stack(self) -> bool:
        """Whether the model sees more than the paper's one source slice (2.5D or extra sources)."""
        return context.uses_stack(self.context_slices, 1 + len(self.extra_normalized))

    def window(self, z: int) -> np.ndarray:
        """The (H, W, (2K+1)·C) input window of slice `z` (`context.channel_layout` order)."""
        stacks = [self.source_normalized, *self.extra_normalized]
        return context.window_at(stacks, z, self.context_slices, int(self.keep[0]), int(self.keep[-1]))

    def inputs(self) -> np.ndarray:
        """Every slice's model input: the (H, W, K) normalized source, or for a 2.5D / multi-source
        model the (H, W, K, (2K+1)·C) windows."""
        if not self.uses_stack:
            return self.source_normalized
        stacks = [self.source_normalized, *self.extra_normalized]
        return context.stack_windows(stacks, self.context_slices, int(self.keep[0]), int(self.keep[-1]))


def prepare(
    source: Volume,
    data: DataConfig,
    *,
    target: Volume | None = None,
    extra_sources: Sequence[Volume] = (),
    cover: bool = False,
) -> Prepared:
    """Source (and target, extra sources) → `Prepared` on the source's model grid (module doc).

    Raises PairRejected (one line naming the side, never a path) when the target or an extra
    source does not overlap the source in world space, or no slice is covered by both volumes.
    """
    spacing, size = tuple(float(v) for v in data.spacing_mm), int(data.image_size)
    if target is not None:
        reason = overlap_problem(target, source, "target", "source")
        if reason:
            raise PairRejected(reason)
    grid = geometry.model_grid(source, spacing, size, cover=cover)
    source_array, grid_affine = geometry.to_model_grid(source, spacing, size, grid=grid)
    source_covered = geometry.coverage(source, grid[0], grid_affine)
    source_cover = source_covered.mean(axis=(0, 1))
    target_array = target_covered = None
    if target is None:
        keep = np.flatnonzero(source_cover > 0)
        keep = keep if keep.size else np.arange(grid[0][2])  # a grid nothing covers: fit on all of it
    else:
        target_array, _ = geometry.to_model_grid(target, spacing, size, grid=grid)
        target_covered = geometry.coverage(target, grid[0], grid_affine)
        keep = np.flatnonzero((source_cover > 0) & (target_covered.mean(axis=(0, 1)) >= 0.5 * source_cover))
        if keep.size == 0:
            raise PairRejected("no axial slice is covered by both volumes")

    source_params = fit_covered(source_array, source_covered, keep, data.source_normalization, source.unit)
    prepared = dict(source=source, grid_shape=tuple(int(v) for v in grid[0]), grid_affine=grid_affine, keep=keep,
                    source_params=source_params,
                    source_normalized=normalization.normalize(source_array, source_params),
                    context_slices=int(data.context_slices))
    if target is not None:
        if data.target_normalization.share_source:
            target_params = dict(source_params, unit=target.unit)
        else:
            target_params = fit_covered(target_array, target_covered, keep, data.target_normalization, target.unit)
        prepared.update(target_params=target_params,
                        target_normalized=normalization.normalize(target_array, target_params))
    else:
        prepared.update(target_params=output_parameters(data.target_normalization, source_params, source.unit))
    extras = _extra_sources(extra_sources, data, grid, keep)
    return Prepared(**prepared, **extras)


def overlap_problem(moving: Volume, reference: Volume | tuple, moving_name: str, reference_name: str,
                    minimum: float = MIN_OVERLAP) -> str | None:
    """Why `moving` cannot be put beside `reference` (a Volume, or a grid (shape, affine)) voxel by
    voxel: it covers less than `minimum` of the reference's voxel centres in world space (0: none at
    all); None when it overlaps. The one-line reason every command uses (convert, translate's extra
    inputs, evaluate --pairs)."""
    shape, affine = (reference.array.shape, reference.affine) if isinstance(reference, Volume) else reference
    overlap = geometry.overlap_fraction(moving, shape, affine)
    if overlap >= minimum and overlap > 0:
        return None
    expected = f"at least {minimum:.0%}" if minimum >= 0.01 else "some overlap"
    return (f"volumes do not overlap in world space ({moving_name} covers {overlap:.1%} of the {reference_name}; "
            f"expected {expected})")


def output_parameters(config: NormalizationConfig, source_params: Mapping[str, Any], source_unit: str) -> dict[str, Any] | None:
    """The `normalization.denormalize` parameters of a model output when there is no target: a fixed
    window's own, or (shared with the source, e.g. PET denoising) the source's window in the
    source's unit; None for a per-volume target window, which cannot be fitted on a volume that
    does not exist yet."""
    if config.share_source:
        return {"kind": config.kind, "unit": source_unit, "low": float(source_params["low"]),
                "high": float(source_params["high"])}
    if config.kind == "window":
        return {"kind": config.kind, "unit": config.unit, "low": float(config.low), "high": float(config.high)}
    return None


def fit_covered(array: np.ndarray, covered: np.ndarray, keep: np.ndarray, config: NormalizationConfig,
                unit: str) -> dict[str, Any]:
    """`normalization.fit` over the voxels of the kept slices that the volume covers (all voxels of
    the kept slices when it covers none of them)."""
    voxels = array[..., keep][covered[..., keep]]
    return normalization.fit(voxels if voxels.size else array[..., keep].ravel(), config, unit=unit)


def _extra_sources(volumes: Sequence[Volume], data: DataConfig, grid: tuple, keep: np.ndarray) -> dict[str, Any]:
    """The extra sources on the first source's grid, each normalized by its modality's rule with its
    own parameters. PairRejected naming the side (source_2, …) for one that does not overlap."""
    shape, affine = grid
    spacing, size = tuple(float(v) for v in data.spacing_mm), int(data.image_size)
    params, normalized = [], []
    for index, (volume, modality) in enumerate(zip(volumes, data.extra_source_modalities), start=2):
        reason = overlap_problem(volume, grid, f"source_{index}", "first source's grid")
        if reason:
            raise PairRejected(f"source_{index}: {reason}")
        array, _ = geometry.to_model_grid(volume, spacing, size, grid=grid)
        fitted = fit_covered(array, geometry.coverage(volume, shape, affine), keep,
                             context.extra_normalization(modality), volume.unit)
        params.append(fitted)
        normalized.append(normalization.normalize(array, fitted))
    return {"extra_volumes": tuple(volumes), "extra_params": tuple(params), "extra_normalized": tuple(normalized)}


def restore(prepared: Prepared, outputs: np.ndarray, modality: str, metadata: Mapping[str, Any] | None = None) -> Volume:
    """Model outputs (H, W, K) in [-1, 1] on `prepared`'s grid → a Volume of `modality` (a key of
    the modality table or a DICOM code; the Volume carries the DICOM code, e.g. "CT" for "CBCT") in
    the unit of `prepared.target_params` (`normalization.denormalize`), on the source's own grid
    (shape and affine)."""
    target_params = prepared.target_params
    physical = normalization.denormalize(np.asarray(outputs), target_params).astype(np.float32)
    source = prepared.source
    return Volume(
        array=geometry.from_model_grid(physical, prepared.grid_affine, source),
        affine=np.asarray(source.affine, dtype=np.float64).copy(),
        modality=io.dicom_code(modality),
        unit=str(target_params["unit"]),
        metadata=dict(metadata or {}),
    )


def restore_spread(prepared: Prepared, spread: np.ndarray, modality: str,
                   metadata: Mapping[str, Any] | None = None) -> Volume:
    """A standard deviation (H, W, K) in normalized units on `prepared`'s grid → a Volume like
    `restore`'s, in the target unit: the map to physical units is linear, so a spread scales by
    the half window (high − low)/2 and has no offset; voxels the grid does not cover are 0."""
    params = prepared.target_params
    physical = np.abs(np.asarray(spread, dtype=np.float64)) * (0.5 * (float(params["high"]) - float(params["low"])))
    source = prepared.source
    return Volume(
        array=geometry.from_model_grid(physical.astype(np.float32), prepared.grid_affine, source, fill=0.0),
        affine=np.asarray(source.affine, dtype=np.float64).copy(),
        modality=io.dicom_code(modality),
        unit=str(params["unit"]),
        metadata={**dict(metadata or {}), "uncertainty": "standard deviation"},
    )
