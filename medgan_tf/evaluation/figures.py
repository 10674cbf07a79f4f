"""Evaluation figures: one model's slices (input | output | target | |error|) and several methods
side by side (the paper's Figs. 4/5). Images are shown on the paper's 0–255 scale."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from medgan_tf import metrics
from medgan_tf.evaluation.scoring import ExampleSlice, as_slice


def _new_figure(num_rows: int, num_columns: int, cell_inches: float = 2.4):
    # Figure + Agg canvas directly, without pyplot: no global backend switch or figure registry,
    # so this is safe inside any process (CLI, tests, Beam workers).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(cell_inches * num_columns, cell_inches * num_rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(num_rows, num_columns, squeeze=False)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    return figure, axes


def save_slice_figure(
    examples: Sequence[ExampleSlice],
    path: str | os.PathLike,
    *,
    title: str = "",
    dpi: int = 100,
) -> None:
    """figure.png: one row per slice, columns input | output | target | |output − target|.

    Images are shown on the 0–255 scale in gray; the error in 0–255 units with one shared color
    scale (up to the 99.5th percentile of all shown errors) and a color bar.
    """
    if not examples:
        raise ValueError("save_slice_figure needs at least one example slice")
    errors = [np.abs(metrics.to_255(example.output) - metrics.to_255(example.target)) for example in examples]
    error_limit = max(1.0, float(np.percentile(np.concatenate([error.ravel() for error in errors]), 99.5)))
    figure, axes = _new_figure(len(examples), 4)
    for row, (example, error) in enumerate(zip(examples, errors)):
        images = (example.source, example.output, example.target)
        for column, image in enumerate(images):
            axes[row, column].imshow(metrics.to_255(image), cmap="gray", vmin=0, vmax=255)
        error_image = axes[row, 3].imshow(error, cmap="inferno", vmin=0, vmax=error_limit)
        axes[row, 0].set_ylabel(f"{example.patient_key}\nslice {example.slice_index}", fontsize=8)
    for column, name in enumerate(("input", "output", "target", "|error| (0–255)")):
        axes[0, column].set_title(name, fontsize=10)
    figure.colorbar(error_image, ax=axes[:, 3].tolist(), shrink=0.8)
    if title:
        figure.suptitle(title)
    figure.savefig(os.fspath(path), dpi=dpi)


def save_comparison_figure(
    path: str | os.PathLike,
    *,
    inputs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    outputs: Mapping[str, Sequence[np.ndarray]],
    column_titles: Sequence[str] | None = None,
    title: str = "",
    dpi: int = 100,
) -> None:
    """Multi-method figure (paper Figs. 4/5): rows input, each method, target; columns = slices.

    inputs, targets: K normalized slices ((S, S) or (S, S, 1) in [-1, 1]); outputs: {method name:
    the same K slices as that method translated them}; column_titles: K labels (e.g. patient/slice).
    """
    num_slices = len(inputs)
    if num_slices == 0 or len(targets) != num_slices:
        raise ValueError(f"need the same K ≥ 1 inputs and targets; received {len(inputs)} and {len(targets)}")
    for method, images in outputs.items():
        if len(images) != num_slices:
            raise ValueError(f"method {method!r} has {len(images)} slices; expected {num_slices}")
    rows = [("input", inputs), *outputs.items(), ("target", targets)]
    figure, axes = _new_figure(len(rows), num_slices)
    for row, (name, images) in enumerate(rows):
        for column, image in enumerate(images):
            axes[row, column].imshow(metrics.to_255(as_slice(image, name)), cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_ylabel(name, fontsize=10)
    if column_titles is not None:
        for column, label in enumerate(column_titles):
            axes[0, column].set_title(label, fontsize=9)
    if title:
        figure.suptitle(title)
    figure.savefig(os.fspath(path), dpi=dpi)


