"""What an export of any format carries and what every model's input must be, below the loaders
(`loading` for SavedModels and runs, `runtimes` for ONNX / OpenVINO / LiteRT) and the format table
(`formats`): the version folder an export path names, its assets (config, normalization
description, precision), the precision check, and the checks of a batch of slices (dtype, shape,
finite values) with a UserError naming the expected spec."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf import config as config_lib
from medgan_tf.errors import UserError
from medgan_tf.serving.signatures import CONFIG_ASSET, INPUT_NAME, NORMALIZATION_ASSET

log = logging.getLogger(__name__)


def resolve_export_dir(path: str | Path, marker: str = "saved_model.pb") -> Path:
    """A version folder (holding `marker`: saved_model.pb, or another format's model file,
    `medgan_tf.serving.formats`) from itself or from its model base folder (then the highest
    numeric version, as TF Serving would serve)."""
    path = Path(path)
    if (path / marker).is_file():
        return path
    if path.is_dir():
        versions = sorted(
            (int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / marker).is_file())
        )
        if versions:
            return path / str(versions[-1])
    raise UserError(
        f"{path} is not a medgan-tf export; expected a folder with {marker} or numeric version "
        "folders holding one (the output of `medgan-tf export`)"
    )


def is_export(path: str | Path) -> bool:
    try:
        resolve_export_dir(path)
    except UserError:
        return False
    return True


def _shape_of(value: Any) -> tuple:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else np.shape(value)


def _as_float32(value: Any, name: str, expected: str) -> np.ndarray:
    """`value` as a float32 numpy array, refusing values that carry another dtype.

    A numpy array or tf.Tensor must already be float32 (casting would hide a wrong input:
    integer codes, half precision); Python numbers and lists, which carry no dtype, are converted.
    """
    dtype = getattr(value, "dtype", None)
    dtype_name = None if dtype is None else getattr(dtype, "name", str(dtype))
    if dtype_name is not None and dtype_name != "float32":
        raise UserError(
            f"{name}: expected {expected}; received {dtype_name} of shape {_shape_of(value)}; "
            "cast it to float32 first if its values are already in the expected units"
        )
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise UserError(f"{name}: expected {expected}; received a {type(value).__name__} that is not numeric ({error})") from None


def check_finite(array: np.ndarray, name: str, per_slice: bool = True) -> np.ndarray:
    """`array` unchanged, or a UserError counting its NaN/inf values (and, if `per_slice`,
    naming the batch indices holding them): one NaN voxel would turn its whole output slice
    into NaN through instance normalization."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = ""
        if per_slice and array.ndim >= 1:
            where = f" in slice(s) {np.flatnonzero(bad.reshape(len(array), -1).any(axis=1)).tolist()}"
        raise UserError(
            f"{name}: expected finite values; received {int(bad.sum())} NaN/inf value(s){where}; "
            "replace or mask them before translating"
        )
    return array


def check_slices(images: Any, size: int, name: str = INPUT_NAME, channels: int = 1) -> np.ndarray:
    """`images` as float32 (B, S, S, channels) (B ≥ 0) with finite values, or a UserError naming the
    expected spec (channels = C_in of a 2.5D / multi-source model, 1 for the paper's)."""
    expected = f"float32 (batch, {size}, {size}, {channels})"
    if channels > 1:
        expected += f" ({channels} channels: the 2.5D / multi-source window)"
    array = _as_float32(images, name, expected)
    if array.ndim != 4 or array.shape[1:] != (size, size, channels):
        raise UserError(f"{name}: expected {expected}; received shape {array.shape}")
    return check_finite(array, name)


def read_assets(version_dir: Path) -> tuple[config_lib.ExperimentConfig, dict[str, Any]]:
    """(config, normalization description) from an export's assets/ (any format's)."""
    assets = version_dir / "assets"
    try:
        experiment = config_lib.experiment_from_json((assets / CONFIG_ASSET).read_text())
        description = json.loads((assets / NORMALIZATION_ASSET).read_text())
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{version_dir}: cannot read the export's assets ({error}); expected {CONFIG_ASSET} and "
                        f"{NORMALIZATION_ASSET} in assets/ beside the model (the output of `medgan-tf export`)") from error
    return experiment, description


def check_export_precision(version_dir: Path, precision: str | None) -> None:
    from medgan_tf.serving.export import read_precision
    from medgan_tf.training.runtime import choose_inference_precision

    carried = read_precision(version_dir)["compute_dtype"]
    if precision in (None, "export"):
        log.info("%s computes in %s (its export precision)", version_dir, carried)
        return
    wanted, reason = choose_inference_precision(precision)
    if wanted != carried:
        raise UserError(f"{version_dir} was exported to compute in {carried}, not {wanted} ({reason}); "
                        f"re-export the run with `medgan-tf export RUN --precision {wanted}`, or drop --precision")
