"""Where the model is unsure: test-time augmentation (TTA) and ensembles, as a mean and a spread.

`translate --tta flips` runs the model on four copies of every tile batch — as it is, flipped
left–right, flipped up–down, and both — in *one* call (so TTA×4 costs about four passes, not more),
flips each output back and returns per pixel the mean of the copies (the output) and their
standard deviation (the uncertainty). `flips+shifts` adds four copies shifted by a few pixels
(S/16, at least 1) up, down, left and right; the input's edge is repeated into the gap, and the
pixels a shifted copy does not see are left out of that copy's vote (every pixel keeps at least the
untouched copy).

An ensemble export (`medgan-tf export --ensemble`) returns its members' mean and standard deviation
itself (`loading.ExportedModel.has_uncertainty`); with TTA as well, the spread is that of all
members × copies (the law of total variance over the copies). Standard deviations are population
ones (divided by N, not N − 1): a flip-equivariant model has exactly zero.

Everything here is numpy on normalized (B, S, S, C) batches; a wrapped model returns (B, S, S, 2):
channel 0 the mean, channel 1 the standard deviation, both normalized ([-1, 1] units; the spread
maps to physical units by the half window, `data.preparation.restore_spread`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from medgan_tf.errors import UserError

TTA_MODES = ("none", "flips", "flips+shifts")
FLIPS = ((False, False), (False, True), (True, False), (True, True))  # (up–down, left–right)


@dataclasses.dataclass(frozen=True)
class Copy:
    """One transformed copy: flipped up–down / left–right, then shifted by (rows, columns) pixels."""

    flip_rows: bool = False
    flip_columns: bool = False
    shift: tuple[int, int] = (0, 0)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, S, S, C) → the copy the model sees: flipped, then shifted with the edge repeated."""
        out = _flip(batch, self.flip_rows, self.flip_columns)
        return _shift(out, self.shift, edge=True)

    def inverse(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's (B, S, S, C) output of this copy → (output on the original pixels, (S, S)
        float mask of the pixels this copy saw: 0 where the shift pushed them out)."""
        back = _shift(batch, (-self.shift[0], -self.shift[1]), edge=False)
        seen = _shift(np.ones((1, *batch.shape[1:3], 1), np.float32), (-self.shift[0], -self.shift[1]), edge=False)
        return _flip(back, self.flip_rows, self.flip_columns), _flip(seen, self.flip_rows, self.flip_columns)[0, ..., 0]


def _flip(batch: np.ndarray, rows: bool, columns: bool) -> np.ndarray:
    axes = tuple(axis for axis, flip in ((1, rows), (2, columns)) if flip)
    return np.flip(batch, axis=axes) if axes else batch


def _shift(batch: np.ndarray, shift: tuple[int, int], edge: bool) -> np.ndarray:
    """`batch` moved by `shift` (rows, columns) pixels; the gap repeats the edge (`edge`) or is 0."""
    if shift == (0, 0):
        return batch
    height, width = batch.shape[1:3]
    dr, dc = shift
    pad = ((0, 0), (max(dr, 0), max(-dr, 0)), (max(dc, 0), max(-dc, 0))) + ((0, 0),) * (batch.ndim - 3)
    padded = np.pad(batch, pad, mode="edge" if edge else "constant")
    top, left = max(-dr, 0), max(-dc, 0)
    return padded[:, top : top + height, left : left + width]


def tta_copies(mode: str, tile: int) -> tuple[Copy, ...]:
    """The copies of TTA `mode` (one of `TTA_MODES`) for `tile`×`tile` tiles; "none" is one copy."""
    if mode not in TTA_MODES:
        raise UserError(f"--tta {mode!r}: expected one of {', '.join(TTA_MODES)}")
    if mode == "none":
        return (Copy(),)
    copies = tuple(Copy(rows, columns) for rows, columns in FLIPS)
    if mode == "flips+shifts":
        step = max(1, tile // 16)
        copies += tuple(Copy(shift=shift) for shift in ((step, 0), (-step, 0), (0, step), (0, -step)))
    return copies


def pool(means: np.ndarray, spreads: np.ndarray | None, weights: np.ndarray) -> np.ndarray:
    """Mean and population standard deviation over copies → (B, S, S, 2).

    means (T, B, S, S): each copy's (or member mean's) output; spreads: the same shape, each
    copy's own standard deviation across ensemble members (None for a single model); weights
    (T, S, S): 1 where a copy saw the pixel, 0 where not. Law of total variance:
    var = Σ w·(σ² + μ²)/Σ w − mean².
    """
    w = weights[:, None, :, :].astype(np.float64)
    total = w.sum(axis=0)
    mean = (w * means).sum(axis=0) / total
    second = (w * (means.astype(np.float64) ** 2 + (0.0 if spreads is None else spreads.astype(np.float64) ** 2)))
    variance = np.maximum(second.sum(axis=0) / total - mean**2, 0.0)
    return np.stack([mean, np.sqrt(variance)], axis=-1).astype(np.float32)


def spread_model(model: Any, mode: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """A callable (B, S, S, C_in) normalized → (B, S, S, 2) [mean, std] for `model` under TTA
    `mode`, or None when there is nothing to spread (mode "none" and a single model): the caller
    then runs the model as it always did."""
    has_members = bool(getattr(model, "has_uncertainty", False))
    copies = tta_copies(mode, int(model.image_size))
    if len(copies) == 1 and not has_members:
        return None

    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        count = len(batch)
        stacked = np.concatenate([copy.forward(batch) for copy in copies], axis=0)  # all copies in one call
        if has_members:
            both = model.with_uncertainty(stacked)
            if len(copies) == 1:
                return both
            outputs, spreads = both[..., 0:1], both[..., 1:2]
        else:
            outputs, spreads = np.asarray(model(stacked), dtype=np.float32), None
        means, sds, weights = [], [], []
        for index, copy in enumerate(copies):
            part = slice(index * count, (index + 1) * count)
            mean, seen = copy.inverse(outputs[part])
            means.append(mean[..., 0])
            weights.append(seen)
            if spreads is not None:
                sds.append(copy.inverse(spreads[part])[0][..., 0])
        return pool(np.stack(means), np.stack(sds) if sds else None, np.stack(weights))

    return run


def check_available(model: Any, mode: str, what: str = "--uncertainty") -> None:
    """UserError when `what` asks for an uncertainty that `model` under TTA `mode` cannot give."""
    tta_copies(mode, int(model.image_size))  # an unknown mode is named first
    if mode == "none" and not getattr(model, "has_uncertainty", False):
        raise UserError(f"{what} needs a spread to measure: give --tta flips (or flips+shifts), or a model "
                        "exported with `medgan-tf export --ensemble`")


def describe(model: Any, mode: str) -> str:
    """What the standard deviation is taken across, in words (for DICOM DerivationDescription)."""
    parts = []
    if getattr(model, "has_uncertainty", False):
        parts.append("the ensemble's members")
    if mode != "none":
        parts.append(f"{len(tta_copies(mode, int(model.image_size)))} transformed copies (TTA {mode})")
    return " × ".join(parts) or "one model run (no spread)"
