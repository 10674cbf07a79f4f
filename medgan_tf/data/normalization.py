"""Per-task intensity normalization to [-1, 1] and its inverse.

Every kind of `NormalizationConfig` reduces to one linear window [low, high] → [-1, 1]
(values outside the window are clipped):

- "window":     fixed [low, high] in physical units (CT: −1000 … 2000 HU).
- "scale":      per volume [0, percentile_p(volume)] (PET in SUV or Bq/ml).
- "percentile": per volume [percentile_low(volume), percentile_p(volume)] (MR).

`fit` returns the parameters as a JSON-ready dict {"kind", "unit", "low", "high"} that the
converter stores per volume in the records and the manifest, so model outputs map back to
HU/SUV with `denormalize`, which is plain arithmetic and so works on numpy arrays and on
TensorFlow tensors alike (the SavedModel's physical-units signature uses it).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from medgan_tf.config import NormalizationConfig
from medgan_tf.errors import UserError

KINDS = ("window", "scale", "percentile")


def fit(array: np.ndarray, config: NormalizationConfig, unit: str | None = None) -> dict[str, Any]:
    """Parameters mapping `array` (physical units) to [-1, 1] under `config`.

    `unit` is the unit the volume actually carries (e.g. "Bq/ml" for a PET without SUV
    information); it defaults to `config.unit`. An empty `array`, or one holding NaN/inf, is a
    UserError (whatever the kind: a fixed window would pass NaN on to the model).
    """
    if config.kind not in KINDS:
        raise ValueError(f"unknown normalization kind {config.kind!r}; expected one of {', '.join(KINDS)}")
    values = np.asarray(array, dtype=np.float64)
    # Percentiles of NaN are NaN and an inf shifts them: the parameters would be silently wrong.
    if values.size == 0:
        raise UserError(f"cannot fit the {config.kind!r} normalization: expected at least one voxel; received shape {values.shape}")
    non_finite = int(np.count_nonzero(~np.isfinite(values)))
    if non_finite:
        raise UserError(
            f"cannot fit the {config.kind!r} normalization: expected finite values; received {non_finite} NaN/inf "
            f"of {values.size} voxels; replace or mask them first (volumes read from files are checked on reading)"
        )
    if config.kind == "window":
        low, high = float(config.low), float(config.high)
    elif config.kind == "scale":
        low, high = 0.0, float(np.percentile(values, config.percentile))
    else:
        low, high = (float(v) for v in np.percentile(values, [config.percentile_low, config.percentile]))
    if not high > low:  # constant volume: keep the map invertible
        high = low + 1.0
    return {"kind": config.kind, "unit": unit or config.unit, "low": low, "high": high}


def normalize(array: Any, params: Mapping[str, Any]) -> Any:
    """Physical units → [-1, 1]: y = 2·(clip(x, low, high) − low)/(high − low) − 1 (numpy, float32)."""
    low, high = float(params["low"]), float(params["high"])
    clipped = np.clip(np.asarray(array, dtype=np.float32), low, high)
    return (2.0 * (clipped - low) / (high - low) - 1.0).astype(np.float32)


def denormalize(array: Any, params: Mapping[str, Any]) -> Any:
    """[-1, 1] → physical units: x = low + (y + 1)/2 · (high − low).

    Works on numpy arrays and TensorFlow tensors (plain arithmetic with Python floats).
    """
    low, high = float(params["low"]), float(params["high"])
    return (array + 1.0) * (0.5 * (high - low)) + low


def denormalize_tensor(array: Any, low: Any, high: Any) -> Any:
    """TensorFlow variant with per-example `low`/`high` tensors (shape (B,) or scalars), as
    parsed from the records: x = low + (y + 1)/2 · (high − low), broadcast over (B, S, S, 1)."""
    import tensorflow as tf

    array = tf.convert_to_tensor(array, tf.float32)
    low = tf.reshape(tf.cast(low, tf.float32), [-1] + [1] * (len(array.shape) - 1)) if len(array.shape) else low
    high = tf.reshape(tf.cast(high, tf.float32), [-1] + [1] * (len(array.shape) - 1)) if len(array.shape) else high
    return (array + 1.0) * (0.5 * (high - low)) + low
