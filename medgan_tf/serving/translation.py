"""Translating whole volumes with a loaded model (`medgan_tf.serving.loading.TranslationModel`).

A volume is seen by the model exactly as its training slices were, because both are made by one
function (`medgan_tf.data.preparation.prepare`, which the converter uses too):

  read (NIfTI / DICOM series) → `prepare`: model grid (task spacing, axial slices; a slice
  smaller than S×S is centre-padded to it, a larger one covers the whole in-plane extent),
  normalization fitted on the voxels the volume covers, 2.5D / multi-source windows → S×S tiles
  (one per slice when it fits, else overlapping tiles, `medgan_tf.serving.tiling`) in batches
  through the generator → blended back into slices → `restore`: de-normalization to the target
  unit, back onto the input's voxel grid by world coordinates → written through the format table
  (`medgan_tf.data.io`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgan_tf import modalities
from medgan_tf.errors import UserError
from medgan_tf.serving.loading import TranslationModel, load_model
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
    return check_outputs(np.concatenate(outputs[1:] or outputs, axis=0))  # a model may return 2 channels (mean, spread)


def check_outputs(stacked: np.ndarray) -> np.ndarray:
    """`stacked` (K, S, S, 1) model outputs — or (K, S, S, 2) [mean, standard deviation] — unchanged,
    or a UserError naming the slice indices whose outputs hold NaN/inf (see `predict_slices`)."""
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
    uncertainty: Any = None  # Volume: voxel-wise standard deviation in the target unit (TTA / ensemble), or None


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
    (`medgan_tf.data.context.stack_windows`); the output is still one channel — or, for a model
    returning (B, S, S, 2) [mean, standard deviation] (`serving.uncertainty.spread_model`),
    (H, W, K, 2).

    Each slice is cut into overlapping `tile`×`tile` tiles (a single tile when H = W = `tile`),
    the tiles go through `model` `batch_size` at a time and are blended back; `progress(done,
    total)` counts tiles.
    """
    tiles, positions = grid_tiles(normalized, tile, tile_overlap)
    total = len(tiles)
    outputs = predict_slices(model, tiles, batch_size, None if progress is None else lambda done: progress(done, total))
    return stitch_grid(outputs, positions, normalized.shape[:2], tile_overlap), len(positions)


def grid_tiles(normalized: np.ndarray, tile: int, tile_overlap: float) -> tuple[np.ndarray, list]:
    """(H, W, K[, C_in]) model-grid stack → ((K·P, S, S, C_in) tiles, slice by slice, the P tile
    positions per slice); `stitch_grid` is the inverse for the model's outputs."""
    slices = np.moveaxis(normalized, 2, 0)  # (K, H, W, C_in)
    slices = slices[..., None] if slices.ndim == 3 else slices
    positions = tile_grid(slices.shape[1:3], tile, tile_overlap)
    return split_tiles(slices, positions, tile), positions


def stitch_grid(outputs: np.ndarray, positions: list, plane: tuple[int, int], tile_overlap: float) -> np.ndarray:
    """(K·P, S, S, 1) outputs of `grid_tiles`' tiles → the (H, W, K) float32 output stack; (K·P, S,
    S, 2) [mean, standard deviation] outputs → (H, W, K, 2)."""
    stitched = stitch_tiles(outputs, positions, tuple(plane), tile_overlap)
    if stitched.shape[-1] == 2:
        return np.moveaxis(stitched, 0, 2)
    return np.moveaxis(stitched[..., 0], 0, 2)


def translate_volume(
    model: TranslationModel,
    volume: Any,
    *,
    batch_size: int = 8,
    tile_overlap: float = 0.25,
    progress: Callable[[int, int], None] | None = None,
    extra_volumes: tuple[Any, ...] | list[Any] = (),
    tta: str = "none",
) -> Translation:
    """Translate a whole source `Volume` (physical units) → output Volume on the same grid.

    The volume is prepared as the converter prepares training pairs (`medgan_tf.data.preparation`):
    on the model grid (here wide enough for the whole in-plane extent), normalized with parameters
    fitted on the voxels it covers, and for a 2.5D / multi-source model with its window (the
    `extra_volumes`, source_2, … in training order, on the first source's grid, normalized by
    their modality; each slice's 2K+1 neighbours, end slices repeated).

    The output has the input's shape and affine, the task's target modality, and values in the
    target unit (for a target that shares the source's normalization, e.g. PET denoising, the
    input's own unit, so Bq/ml stays Bq/ml). Slices larger than the model's S×S field of view
    (at the task spacing) are covered by overlapping tiles, `tile_overlap` (fraction of S) apart,
    so nothing is cropped. `progress(done, total)` counts tiles (one per slice when it fits).

    `tta` ("none" | "flips" | "flips+shifts", `serving.uncertainty`) averages the outputs of
    transformed copies; with it, or with a model that returns its own uncertainty (an ensemble
    export), `Translation.uncertainty` is the voxel-wise standard deviation in the target unit.
    """
    from medgan_tf.serving.uncertainty import spread_model

    tile_overlap = check_tile_overlap(tile_overlap)
    prepared = prepare_input(model.config, volume, extra_volumes)
    spreading = spread_model(model, tta)
    outputs, tiles_per_slice = translate_grid(
        model if spreading is None else spreading, prepared.inputs(), int(model.config.data.image_size),
        batch_size=batch_size, tile_overlap=tile_overlap, progress=progress,
    )
    spread = None
    if spreading is not None:
        outputs, spread = outputs[..., 0], outputs[..., 1]
    return restore_output(model.config, prepared, outputs, tiles_per_slice, spread)


def check_tile_overlap(tile_overlap: float) -> float:
    try:
        return check_overlap(tile_overlap)
    except ValueError as error:
        raise UserError(f"--tile-overlap: {error}") from None


def prepare_input(config: Any, volume: Any, extra_volumes: Any = ()) -> Any:
    """The source `volume` (and extra sources) of a model with ExperimentConfig `config` →
    `data.preparation.Prepared` on the covering model grid; UserError for an input the model
    cannot take (`translate_volume`)."""
    from medgan_tf.data.preparation import prepare
    from medgan_tf.data.rejections import PairRejected

    data = config.data
    _check_inputs(config, volume, extra_volumes)
    try:
        prepared = prepare(volume, data, extra_sources=extra_volumes, cover=True)
    except PairRejected as error:
        raise UserError(f"extra input {error.detail}") from None
    if prepared.target_params is None:
        raise UserError(f"the target normalization ({data.target_normalization.kind}) is fitted per target volume and "
                        "not shared with the source; a model output cannot be mapped back to physical units")
    return prepared


def restore_output(config: Any, prepared: Any, outputs: np.ndarray, tiles_per_slice: int = 1,
                   spread: np.ndarray | None = None) -> Translation:
    """(H, W, K) model outputs on `prepared`'s grid (and their (H, W, K) standard deviation, when
    given) → the `Translation` (output and uncertainty in the target unit on the input's grid)."""
    from medgan_tf.data.preparation import restore, restore_spread

    metadata = {"format": "nifti", "translated_by": f"medgan-tf {config.model} ({config.task})"}
    output = restore(prepared, outputs, config.data.target_modality, metadata)
    uncertainty = None if spread is None else restore_spread(prepared, spread, config.data.target_modality, metadata)
    return Translation(output, prepared.source_params, prepared.target_params, prepared.grid_shape,
                       prepared.grid_affine, tiles_per_slice, uncertainty)


def _check_inputs(config: Any, volume: Any, extra_volumes: Any) -> None:
    """UserError for a source or extra source of another modality than the model's, a wrong number
    of extra sources, or non-finite values (a Volume built in memory has not been checked)."""
    data = config.data
    non_finite = int(np.count_nonzero(~np.isfinite(volume.array)))
    if non_finite:  # `read_volume` refuses these too; a Volume built in memory has not been read
        raise UserError(f"input volume holds {non_finite} NaN/inf voxels; expected finite values")
    modalities.get(data.source_modality).check_volume(volume, f"the input of this {config.task} model")
    expected = len(data.extra_source_modalities)
    if len(extra_volumes) != expected:
        raise UserError(f"this model takes {1 + expected} source volume(s) ({', '.join(('source',) + data.extra_source_modalities)}); "
                        f"received {1 + len(extra_volumes)} (give the extra ones with --extra-input, in training order)")
    for index, (extra, modality) in enumerate(zip(extra_volumes, data.extra_source_modalities), start=2):
        modalities.get(modality).check_volume(extra, f"extra input {index - 1} (source_{index})")


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
    like: str | Path | None = None,
    tta: str = "none",
    uncertainty_path: str | Path | None = None,
) -> Translation:
    """Read `input_path` (NIfTI file or DICOM series folder), translate, write `output_path` in
    `output_format` (a key of the format table `medgan_tf.data.io.formats`, or None: the one the
    name asks for, e.g. a NIfTI suffix or a DICOM series folder name).

    `like` (a NIfTI input only): a DICOM series of the same patient and frame of reference; the
    output takes its Patient, Study and Frame of Reference, and when the two grids hold the same
    voxels, its orientation and slice references (`like_series`).

    `model` is a loaded model or a path for `load_model`; `tile_overlap` as in `translate_volume`;
    `extra_inputs` are the extra source volumes of a multi-source model (source_2, … in order).
    A progress bar (keras Progbar on stdout) counts tiles unless `quiet`.

    `tta` as in `translate_volume`; `uncertainty_path` (needs TTA or an ensemble model) also
    writes the voxel-wise standard deviation, in the target unit, in the format its name asks for;
    a DICOM one beside a DICOM output is a second series of the output's study and frame of
    reference (`write_uncertainty`).
    """
    from medgan_tf.data import io
    from medgan_tf.serving.outputs import model_description
    from medgan_tf.serving.uncertainty import check_available

    model = model if isinstance(model, TranslationModel) else load_model(model)
    description, derivation = model_description(model)
    progress = None if quiet else _progress_bar("tile")
    volume_format = io.output_format(output_path, output_format)
    if uncertainty_path is not None:
        check_available(model, tta)
        if Path(uncertainty_path).resolve() == Path(output_path).resolve():
            raise UserError(f"--uncertainty {uncertainty_path} is the output itself; give it another name")
        io.output_format(uncertainty_path)  # refused now if it cannot be written, not after the model ran
    data = model.config.data
    volume = io.read_input("input", input_path, data.source_modality)
    hints = data.extra_source_modalities + ("OT",) * len(extra_inputs)
    extra_volumes = [io.read_input("extra input", path, hint) for path, hint in zip(extra_inputs, hints)]
    like_volume = like_series(like, volume) if like is not None else None
    translation = translate_volume(model, volume, batch_size=batch_size, tile_overlap=tile_overlap, progress=progress,
                                   extra_volumes=extra_volumes, tta=tta)
    source = volume
    if like_volume is not None and translation.uncertainty is not None:
        translation.uncertainty, source = as_like(translation.uncertainty, volume, like_volume)
    translation.volume = write_translation(translation.volume, volume, like_volume, output_path, volume_format,
                                           (description, derivation))
    if uncertainty_path is not None:
        write_uncertainty(model, tta, translation.uncertainty, uncertainty_path, output_path, volume_format, source)
    return translation


def write_translation(output: Any, volume: Any, like_volume: Any, output_path: str | Path, volume_format: Any,
                      descriptions: tuple[str, str]) -> Any:
    """Write the translated `output` of the input `volume` (on the --like series' grid when
    `like_volume` holds the same voxels) atomically through the format table; `descriptions` are
    `outputs.model_description`'s. Returns the volume written."""
    from medgan_tf.data import io

    source = volume
    if like_volume is not None:
        output, source = as_like(output, volume, like_volume)
    io.write_output(output, output_path, volume_format, io.Provenance(*descriptions, source))
    return output


def write_uncertainty(model: TranslationModel, tta: str, uncertainty: Any, path: str | Path, output_path: str | Path,
                      output_format: Any, source: Any = None) -> Path:
    """Write the `uncertainty` Volume to `path` (its format from the name). A DICOM series takes
    the Patient, Study and Frame of Reference of the DICOM output series at `output_path` (so a
    viewer shows both in one study, also for a NIfTI input), or — beside a NIfTI output — those of
    `source` (the input, or its --like series), and says what it is in its SeriesDescription and
    DerivationDescription."""
    from medgan_tf.data import io
    from medgan_tf.serving.outputs import model_description
    from medgan_tf.serving.uncertainty import describe

    short, long = model_description(model)
    description = f"SD {short}"[:64]
    derivation = (f"Voxel-wise standard deviation ({uncertainty.unit}) across {describe(model, tta)}: the "
                  f"uncertainty of the series {short}. {long}")
    uncertainty_format = io.output_format(path)
    if uncertainty_format.folder and output_format.folder:
        source = io.read_input("the output series", output_path)  # its study and frame of reference
    return io.write_output(uncertainty, path, uncertainty_format, io.Provenance(description, derivation, source))


def like_series(path: str | Path, volume: Any) -> Any:
    """The DICOM series `path` given with --like for the NIfTI input `volume`; UserError when the
    input is DICOM (it keeps its own study), `path` is no DICOM series or does not overlap it."""
    from medgan_tf.data import io
    from medgan_tf.data.geometry import overlap_fraction

    if volume.dicom_header is not None:
        raise UserError("--like gives a NIfTI input the study of a DICOM series; this input is a DICOM series and "
                        "keeps its own study (leave out --like)")
    like = io.read_input("--like series", path)
    if like.dicom_header is None:
        raise UserError(f"--like {path} is not a DICOM series folder; expected the series whose patient, study and "
                        "frame of reference the output joins")
    if overlap_fraction(like, volume.shape, volume.affine) == 0.0:
        raise UserError(f"--like {path}: the input does not overlap that series anywhere in world coordinates; it "
                        "cannot be in its frame of reference")
    return like


def as_like(output: Any, volume: Any, like: Any) -> tuple[Any, Any]:
    """(`output`, the source its DICOM copies from) for a NIfTI input `volume` given `like`: the
    output on the like series' grid when it holds the same voxels, else on its own grid (logged)."""
    from medgan_tf.data.geometry import on_same_voxels

    source = dataclasses.replace(volume, dicom_header=like.dicom_header, dicom_slices=like.dicom_slices)
    array = on_same_voxels(output, like.shape, like.affine)
    if array is None:
        log.warning("the --like series has other voxels than the input: the output keeps the input's grid and takes "
                    "only that series' patient, study and frame of reference (its slices reference none of the series)")
        return output, source
    log.info("the output joins the --like series' study on its grid (orientation and slice order)")
    return dataclasses.replace(output, array=array, affine=np.array(like.affine)), source


def _progress_bar(unit: str) -> Callable[[int, int], None]:
    """progress(done, total) drawing a keras Progbar counting `unit`s, made at the first call."""
    import keras

    bar: dict[str, Any] = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = keras.utils.Progbar(total, unit_name=unit)
        bar["bar"].update(done)

    return progress
