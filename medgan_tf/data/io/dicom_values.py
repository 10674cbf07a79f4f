"""The values of a DICOM output: 16-bit integers with one RescaleSlope/Intercept per series, and
the Window Center/Width pairs a viewer opens them with.

The encoding of each modality (fixed intercept, slope 1 for HU, signedness, windows) is its
entry in the modality table (`medgan_tf.modalities.DicomEncoding`); this module applies it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def decimal_string(value: float) -> str:
    """A float as a DICOM decimal string (DS: at most 16 characters), as close as it allows."""
    for digits in range(12, 0, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= 16:
            return "0" if text == "-0" else text
    raise ValueError(f"{value!r} has no decimal string")


def decimal_string_rounded(value: float, up: bool) -> str:
    """The decimal string of the nearest DS value ≥ `value` (`up`) or ≤ it: a slope rounded up
    keeps the largest value inside the integer range, an intercept rounded down the lowest."""
    text, step = decimal_string(value), 0.0
    while (float(text) < value) if up else (float(text) > value):
        step = max(2 * step, abs(value) * 1e-15, 1e-300)
        text = decimal_string(value + step if up else value - step)
    return text


def quantize(values: np.ndarray, *, signed: bool, intercept: float | None = None,
             unit_slope: bool = False) -> tuple[np.ndarray, float, float]:
    """float `values` → (int16 or uint16 array, slope, intercept), values ≈ stored · slope + intercept.

    Every value comes back within half a step (slope / 2) for any range: positive, negative,
    mixed, constant, tiny or huge. `intercept` None chooses one so the range fills the integer
    range; a given `intercept` is kept (PET: 0) and only the slope adapts. `unit_slope` keeps
    slope 1 whenever the range fits at that intercept (CT in HU). `signed` forces int16;
    otherwise int16 is used only when a value lies below the intercept. Slope and intercept are
    the decimal strings the DS tags carry (the slope rounded up), so readers get exactly what is
    computed here.
    """
    values = np.asarray(values, np.float64)
    low, high = float(np.min(values)), float(np.max(values))
    if intercept is None:
        intercept = low if high == low else None
    below = intercept is not None and low < intercept
    dtype = np.int16 if signed or below or intercept is None and low < 0 else np.uint16
    info = np.iinfo(dtype)
    if intercept is None:  # low ↦ the lowest integer: the whole range is used
        intercept = low - info.min * (high - low) / (info.max - info.min)
        # Unsigned, the intercept must not pass above the lowest value (it would need stored < 0).
        intercept = float(decimal_string_rounded(intercept, up=False) if info.min == 0 else decimal_string(intercept))
    intercept = float(decimal_string(intercept))
    if unit_slope and math.floor(low - intercept + 0.5) >= info.min and math.floor(high - intercept + 0.5) <= info.max:
        slope = 1.0
    else:
        slope = max((high - intercept) / info.max, (intercept - low) / -info.min if info.min else 0.0)
        slope = float(decimal_string_rounded(slope, up=True)) if slope > 0 else 1.0
    stored = np.clip(np.round((values - intercept) / slope), info.min, info.max)
    return stored.astype(dtype), slope, intercept


def encode(values: np.ndarray, encoding: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """`values` (the series' stored unit) under `encoding` (a `modalities.DicomEncoding`) →
    (stored integers, the pixel-description, rescale and window tags of every slice)."""
    stored, slope, intercept = quantize(values, signed=encoding.signed, intercept=encoding.intercept,
                                        unit_slope=encoding.unit_slope)
    tags: dict[str, Any] = {
        "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
        "PixelRepresentation": 1 if stored.dtype == np.int16 else 0,
        "RescaleSlope": decimal_string(slope), "RescaleIntercept": decimal_string(intercept),
    }
    windows = encoding.windows(stored * slope + intercept) if encoding.windows is not None else ()
    if windows:
        tags["WindowCenter"] = [decimal_string(center) for center, _, _ in windows]
        tags["WindowWidth"] = [decimal_string(max(width, 1.0)) for _, width, _ in windows]  # ≥ 1 (PS3.3 C.11.2.1.2)
        tags["WindowCenterWidthExplanation"] = [name for _, _, name in windows]
    return stored, tags
