"""Translating whole volumes with a loaded model (`medgan_tf.serving.loading.TranslationModel`).

Whole-volume translation mirrors the converter's pair preparation (`medgan_tf.data.pairs`) step for step, so a volume
is seen by the model exactly as its training slices were:

  read (NIfTI / DICOM series) → model grid (task spacing, axial slices; a slice smaller than
  S×S is centre-padded to it, a larger one covers the whole in-plane extent) → normalization
  fitted on this volume on the model grid (covered voxels) → S×S tiles (one per slice when it
  fits, else overlapping tiles, `medgan_tf.serving.tiling`) in batches through the generator →
  blended back into slices → de-normalization to the target unit → back onto the input's voxel
  grid by world coordinates.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgan_tf.errors import UserError
from medgan_tf.serving.loading import TranslationModel, load_model
from medgan_tf.serving.signatures import target_parameters
from medgan_tf.serving.tiling import check_overlap, split_tiles, stitch_tiles, tile_grid

log = logging.getLogger(__name__)


def predict_slices(
    model: Callable[[np.ndarray], np.ndarray],
    slices: np.ndarray,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(K, S, S, C_in) normalized slices (C_in = 1, or a 2.5D / multi-source window) → (K, S, S, 1)
    outputs, `batch_size` at a time;
    `progress(done)` is called after every batch.

    Raises a UserError naming the slice indices (0 … K−1) if the model returns NaN/inf for any
    of them: the inputs are finite (the model wrappers refuse others), so such an output means a
    broken model, and it must not end up in a written volume.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; received {batch_size}")
    outputs = [np.zeros((0, *np.shape(slices)[1:3], 1), np.float32)]  # K = 0 → an empty stack
    for start in range(0, len(slices), batch_size):
        outputs.append(np.asarray(model(slices[start : start + batch_size]), dtype=np.float32))
        if progress is not None:
            progress(min(start + batch_size, len(slices)))
    stacked = np.concatenate(outputs, axis=0)
    finite = np.isfinite(stacked).all(axis=tuple(range(1, stacked.ndim)))
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise UserError(
            f"the model returned NaN/inf values for {len(bad)} of {len(stacked)} slices (indices {bad}) although its "
            "input was finite; the model itself is broken (e.g. a diverged checkpoint): use another export "
            "or checkpoint; nothing was written"
        )
    return stacked


# --------------------------------------------------------------------------- whole volumes


@dataclasses.dataclass
class Translation:
    """Result of `translate_volume`: the output volume on the input's grid plus what was used."""

    volume: Any  # medgan_tf.data.io.Volume
    source_params: dict[str, Any]
    target_params: dict[str, Any]
    grid_shape: tuple[int, int, int]  # (H, W, K) model grid; H, W ≥ S
    grid_affine: np.ndarray
    tiles_per_slice: int = 1  # S×S tiles the model saw per slice (1: the slice fits in S×S)


def translate_grid(
    model: Callable[[np.ndarray], np.ndarray],
    normalized: np.ndarray,
    tile: int,
    *,
    batch_size: int = 8,
    tile_overlap: float = 0.25,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """(H, W, K) normalized model-grid stack (H, W ≥ `tile`) → ((H, W, K) float32 outputs, tiles
    per slice). A (H, W, K, C_in) stack holds each slice's 2.5D / multi-source input window
    (`medgan_tf.data.context.stack_windows`); the output is still one channel.

    Each slice is cut into overlapping `tile`×`tile` tiles (a single tile when H = W = `tile`),
    the tiles go through `model` `batch_size` at a time and are blended back; `progress(done,
    total)` counts tiles.
    """
    slices = np.moveaxis(normalized, 2, 0)  # (K, H, W, C_in)
    slices = slices[..., None] if slices.ndim == 3 else slices
    positions = tile_grid(slices.shape[1:3], tile, tile_overlap)
    tiles = split_tiles(slices, positions, tile)  # (K·P, S, S, C_in)
    total = len(tiles)
    outputs = predict_slices(model, tiles, batch_size, None if progress is None else lambda done: progress(done, total))
    stitched = stitch_tiles(outputs, positions, slices.shape[1:3], tile_overlap)
    return np.moveaxis(stitched[..., 0], 0, 2), len(positions)


def translate_volume(
    model: TranslationModel,
    volume: Any,
    *,
    batch_size: int = 8,
    tile_overlap: float = 0.25,
    progress: Callable[[int, int], None] | None = None,
    extra_volumes: tuple[Any, ...] | list[Any] = (),
) -> Translation:
    """Translate a whole source `Volume` (physical units) → output Volume on the same grid.

    A 2.5D / multi-source model gets its window assembled here (`medgan_tf.data.context`): the
    `extra_volumes` (source_2, … in training order) put on the first source's model grid and
    normalized with their own parameters, and each slice's 2K+1 neighbours (end slices repeat).

    The output has the input's shape and affine, the task's target modality, and values in the
    target unit (for a target that shares the source's normalization, e.g. PET denoising, the
    input's own unit, so Bq/ml stays Bq/ml). Slices larger than the model's S×S field of view
    (at the task spacing) are covered by overlapping tiles, `tile_overlap` (fraction of S) apart,
    so nothing is cropped. `progress(done, total)` counts tiles (one per slice when it fits).
    """
    from medgan_tf.data import geometry, normalization
    from medgan_tf.data.io import Volume

    data = model.config.data
    description = model.normalization
    expected_modality = data.source_modality
    if volume.modality not in ("OT", expected_modality):
        raise UserError(
            f"input modality is {volume.modality}; this {model.config.task} model expects {expected_modality}"
        )
    non_finite = int(np.count_nonzero(~np.isfinite(volume.array)))
    if non_finite:  # `read_volume` refuses these too; a Volume built in memory has not been read
        raise UserError(f"input volume holds {non_finite} NaN/inf voxels; expected finite values")
    try:
        tile_overlap = check_overlap(tile_overlap)
    except ValueError as error:
        raise UserError(f"--tile-overlap: {error}") from None
    size, spacing = int(data.image_size), tuple(float(v) for v in data.spacing_mm)
    grid = geometry.model_grid(volume, spacing, size, cover=True)
    grid_array, grid_affine = geometry.to_model_grid(volume, spacing, size, grid=grid)
    # Fitted as the converter fits training data: on the model grid, over the voxels the volume
    # really covers (not the crop/pad fill), so the model sees the intensity scale it learned.
    covered = geometry.coverage(volume, grid_array.shape, grid_affine)
    statistics_voxels = grid_array[covered] if np.any(covered) else grid_array
    source_params = normalization.fit(statistics_voxels, data.source_normalization, unit=volume.unit)
    target_params = target_parameters(description, source_params)
    if description["target"].get("share_source"):
        target_params["unit"] = volume.unit
    normalized = np.asarray(normalization.normalize(grid_array, source_params), dtype=np.float32)
    normalized = _input_window(normalized, extra_volumes, (grid_array.shape, grid_affine), data)
    outputs, tiles_per_slice = translate_grid(
        model, normalized, size, batch_size=batch_size, tile_overlap=tile_overlap, progress=progress
    )
    physical = normalization.denormalize(outputs, target_params).astype(np.float32)
    on_input_grid = geometry.from_model_grid(physical, grid_affine, volume)
    output = Volume(
        array=on_input_grid,
        affine=np.asarray(volume.affine, dtype=np.float64).copy(),
        modality=data.target_modality,
        unit=str(target_params["unit"]),
        metadata={"format": "nifti", "translated_by": f"medgan-tf {model.config.model} ({model.config.task})"},
    )
    grid_shape = tuple(int(v) for v in grid_array.shape)
    return Translation(output, source_params, target_params, grid_shape, grid_affine, tiles_per_slice)


def _input_window(normalized: np.ndarray, extra_volumes: Any, grid: tuple, data: Any) -> np.ndarray:
    """The (H, W, Z) normalized first source, or for a 2.5D / multi-source model the
    (H, W, Z, (2K+1)·C) windows with the extra sources resampled onto `grid` and normalized."""
    from medgan_tf.data import context, geometry, normalization

    expected = len(data.extra_source_modalities)
    if len(extra_volumes) != expected:
        raise UserError(f"this model takes {1 + expected} source volume(s) ({', '.join(('source',) + data.extra_source_modalities)}); "
                        f"received {1 + len(extra_volumes)} (give the extra ones with --extra-input, in training order)")
    if not context.uses_stack(data.context_slices, data.source_channels):
        return normalized
    shape, affine = grid
    stacks = [normalized]
    for index, (volume, modality) in enumerate(zip(extra_volumes, data.extra_source_modalities), start=2):
        if volume.modality not in ("OT", modality):
            raise UserError(f"extra input {index - 1} (source_{index}) has modality {volume.modality}; the model expects {modality}")
        array, _ = geometry.to_model_grid(volume, tuple(data.spacing_mm), int(data.image_size), grid=grid)
        covered = geometry.coverage(volume, shape, affine)
        params = normalization.fit(array[covered] if np.any(covered) else array, context.extra_normalization(modality),
                                   unit=volume.unit)
        stacks.append(np.asarray(normalization.normalize(array, params), dtype=np.float32))
    return context.stack_windows(stacks, data.context_slices)


def translate_file(
    model: TranslationModel | str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    batch_size: int = 8,
    tile_overlap: float = 0.25,
    quiet: bool = False,
    extra_inputs: tuple[str | Path, ...] | list[str | Path] = (),
    output_format: str | None = None,
) -> Translation:
    """Read `input_path` (NIfTI file or DICOM series folder), translate, write `output_path`:
    NIfTI, or a DICOM series folder (`output_format` "dicom", or a name without a NIfTI suffix;
    `medgan_tf.serving.outputs`).

    `model` is a loaded model or a path for `load_model`; `tile_overlap` as in `translate_volume`;
    `extra_inputs` are the extra source volumes of a multi-source model (source_2, … in order).
    A progress bar (keras Progbar on stdout) counts tiles unless `quiet`.
    """
    from medgan_tf.data.io import VolumeReadError, read_volume
    from medgan_tf.serving.outputs import resolve_format, write_output

    output_format = resolve_format(output_path, output_format)
    if not isinstance(model, TranslationModel):
        model = load_model(model)
    try:
        volume = read_volume(input_path, modality_hint=model.config.data.source_modality)
    except VolumeReadError as error:
        raise UserError(f"cannot read input {error.path}: {error.reason}") from None
    extra_volumes = []
    for path, modality in zip(extra_inputs, model.config.data.extra_source_modalities + ("OT",) * len(extra_inputs)):
        try:
            extra_volumes.append(read_volume(path, modality_hint=modality))
        except VolumeReadError as error:
            raise UserError(f"cannot read extra input {error.path}: {error.reason}") from None
    progress = None
    if not quiet:
        import keras

        bar: dict[str, Any] = {}

        def progress(done: int, total: int) -> None:
            if "bar" not in bar:
                bar["bar"] = keras.utils.Progbar(total, unit_name="tile")
            bar["bar"].update(done)

    translation = translate_volume(model, volume, batch_size=batch_size, tile_overlap=tile_overlap, progress=progress,
                                   extra_volumes=extra_volumes)
    write_output(translation.volume, volume, model, output_path, output_format)
    return translation
