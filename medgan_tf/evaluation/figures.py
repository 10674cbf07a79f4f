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




# --------------------------------------------------------------------------- whole volumes


def save_figure_atomic(figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """figure.savefig through a temporary file in the same folder and a rename: a reader never
    sees half a PNG, and an earlier figure stays until the new one is complete."""
    from medgan_tf import files

    with files.atomic_file(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")


PLANES = ("axial", "coronal", "sagittal")


def plane_slices(volume: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    """The axial, coronal and sagittal slices of a (Z, Y, X) volume through voxel `centre`;
    coronal and sagittal with Z as their first axis."""
    z, y, x = (int(c) for c in centre)
    return [volume[z], volume[:, y, :], volume[:, :, x]]


def _window(volume: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(volume, [0.5, 99.5]))
    return (low, high) if high > low else (low, low + 1.0)


def save_three_plane_figure(
    path: str | os.PathLike,
    volumes: Mapping[str, np.ndarray],
    *,
    error_of: tuple[str, str] | None = ("output", "target"),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    centre: Sequence[int] | None = None,
    unit: str = "",
    title: str = "",
    dpi: int = 100,
    uncertainty: np.ndarray | None = None,
) -> None:
    """Rows axial | coronal | sagittal through `centre` (default: the volumes' centre); one
    column per entry of `volumes` ((Z, Y, X) arrays in physical units, one shape; e.g. input,
    output, target), plus |a − b| for `error_of` = (a, b), and beside it the model's
    `uncertainty` (standard deviation, same unit) on the error's colour scale, so the two can be
    compared by eye. The two volumes of `error_of` share
    the window of b (0.5–99.5th percentile); every other column has its own. `spacing` (mm,
    Z, Y, X) sets the aspect ratio, so anisotropic voxels are shown at their true shape."""
    names = [name for name, volume in volumes.items() if volume is not None]
    if not names:
        raise ValueError("save_three_plane_figure needs at least one volume")
    shape = np.shape(volumes[names[0]])
    centre = tuple(n // 2 for n in shape) if centre is None else centre
    shared = _window(volumes[error_of[1]]) if error_of else None
    columns = [(name, volumes[name]) for name in names]
    maps = []
    if error_of:
        maps.append((f"|{error_of[0]} − {error_of[1]}|", np.abs(volumes[error_of[0]] - volumes[error_of[1]])))
    if uncertainty is not None:
        maps.append(("uncertainty (SD)", np.asarray(uncertainty)))
    columns += maps
    sz, sy, sx = (float(s) for s in spacing)
    aspects = (sy / sx, sz / sx, sz / sy)
    figure, axes = _new_figure(3, len(columns), cell_inches=2.6)
    map_limits = (0.0, max([float(np.percentile(volume, 99.5)) for _, volume in maps[:1]] + [1e-6]))
    for column, (name, volume) in enumerate(columns):
        is_error = column >= len(columns) - len(maps)
        if is_error:
            limits, cmap = map_limits, "inferno"
        else:
            limits, cmap = (shared if error_of and name in error_of else _window(volume)), "gray"
        for row, image in enumerate(plane_slices(volume, centre)):
            shown = axes[row, column].imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1],
                                             aspect=aspects[row], origin="lower", interpolation="nearest")
        axes[0, column].set_title(f"{name} ({unit})" if is_error and unit else name, fontsize=9)
        if is_error and column == len(columns) - 1:  # one colour bar for the maps: they share a scale
            figure.colorbar(shown, ax=axes[:, len(columns) - len(maps):].ravel().tolist(), shrink=0.8)
    for row, plane in enumerate(PLANES):
        axes[row, 0].set_ylabel(f"{plane} {centre[row]}", fontsize=9)
    if title:
        figure.suptitle(title)
    save_figure_atomic(figure, path, dpi)


def _restore_ticks(axis, y: bool = True) -> None:
    """Automatic tick marks again (`_new_figure` hides them for image panels)."""
    from matplotlib.ticker import AutoLocator, LogLocator

    axis.xaxis.set_major_locator(AutoLocator())
    axis.yaxis.set_major_locator(AutoLocator() if y else LogLocator())


def save_histogram(path: str | os.PathLike, output: np.ndarray, target: np.ndarray, *, unit: str = "",
                   title: str = "", bins: int = 100, dpi: int = 100) -> None:
    """Intensity histogram (HU / SUV / Bq/ml) of output vs target voxels, shared bins, log counts."""
    figure, axes = _new_figure(1, 1, cell_inches=4.0)
    axis = axes[0, 0]
    values = np.concatenate([np.ravel(output), np.ravel(target)])
    edges = np.linspace(float(values.min()), float(values.max()) or 1.0, bins + 1)
    axis.hist(np.ravel(target), bins=edges, histtype="step", label="target", color="black")
    axis.hist(np.ravel(output), bins=edges, histtype="step", label="output", color="tab:red")
    axis.set_yscale("log")
    axis.set_xlabel(unit or "value")
    axis.set_ylabel("voxels")
    _restore_ticks(axis, y=False)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=9)
    save_figure_atomic(figure, path, dpi)


def save_bland_altman(path: str | os.PathLike, reference: Sequence[float], candidate: Sequence[float], *,
                      unit: str = "", what: str = "SUVmean", title: str = "", dpi: int = 100) -> None:
    """Bland–Altman plot (Bland & Altman 1986): per region, the mean of candidate and reference
    against their difference, with the bias and the 95 % limits of agreement (bias ± 1.96 sd)."""
    reference, candidate = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    mean, difference = (reference + candidate) / 2, candidate - reference
    bias = float(difference.mean()) if difference.size else 0.0
    sd = float(difference.std(ddof=1)) if difference.size > 1 else 0.0
    figure, axes = _new_figure(1, 1, cell_inches=4.0)
    axis = axes[0, 0]
    axis.scatter(mean, difference, s=14, color="tab:blue")
    for level, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
        axis.axhline(level, color="gray", linestyle=style, linewidth=1)
    suffix = f" ({unit})" if unit else ""
    axis.set_xlabel(f"mean of output and target {what}{suffix}")
    axis.set_ylabel(f"output − target {what}{suffix}")
    _restore_ticks(axis)
    axis.set_title(f"{title}\nbias {bias:+.3g}, limits ±{1.96 * sd:.3g}" if title else
                   f"bias {bias:+.3g}, limits ±{1.96 * sd:.3g}", fontsize=9)
    save_figure_atomic(figure, path, dpi)
