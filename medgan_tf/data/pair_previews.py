"""The picture of one converted pair (`convert --preview`): is the target where the source is?

A checkerboard of the source and the target on the model grid (the grid the records are cut
from): squares of the source alternate with squares of the target, so an edge that jumps at the
border of two squares shows a misalignment at a glance. Two planes through the grid's centre —
the middle axial slice and the middle coronal plane — in radiological display (patient's left on
the right, anterior / superior at the top), in millimetres (the aspect follows the grid spacing).

With registration, two columns: the target as its header places it (world coordinates, before)
and as registered (after), under a title with the pair's CSV line and patient pseudonym, what
the registration found (rotation, translation) and the similarity before → after. Without it,
one column "as converted". A rejected pair's picture says so and why, in red.

Each volume is shown in a grey-scale window of its own modality (CT −450…550 HU, otherwise 0 to
the 99.5th percentile of the volume; the target before and after share one window). The figure
is a fixed number of pixels (`figure_pixels`), drawn with matplotlib's Agg canvas into PNG bytes
that the converter's per-pair step writes (`pipelines.convert`).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from medgan_tf.data import geometry
from medgan_tf.data.io import Volume

DPI = 100
COLUMN_INCHES, HEIGHT_INCHES = 5.0, 8.0  # per column (before, after) and the whole figure's height
SQUARES = 8  # checkerboard squares along the side of a slice
MARGIN = 0.03  # left and right margins, fractions of the figure's width


def figure_pixels(columns: int) -> tuple[int, int]:
    """(width, height) in pixels of a preview with `columns` columns (2 with registration, 1 without)."""
    return int(round(COLUMN_INCHES * columns * DPI)), int(round(HEIGHT_INCHES * DPI))


def planes(volume: Volume, grid: tuple[tuple[int, int, int], np.ndarray]) -> dict[str, np.ndarray]:
    """`volume` sampled on the model `grid` (shape, affine) at its middle axial slice (S, S) and
    its middle coronal plane (S, K), by world coordinates; outside the volume its background."""
    (width, height, depth), affine = grid
    fill = geometry.background_value(volume)

    def shifted(axis: int, index: int) -> np.ndarray:
        offset = np.eye(4)
        offset[axis, 3] = index
        return affine @ offset

    axial = geometry.resample(volume.array, volume.affine, (width, height, 1), shifted(2, depth // 2), fill=fill)
    coronal = geometry.resample(volume.array, volume.affine, (width, 1, depth), shifted(1, height // 2), fill=fill)
    return {"axial": axial[:, :, 0], "coronal": coronal[:, 0, :]}


def window(volume: Volume) -> tuple[float, float]:
    """The grey-scale window of `volume`: −450…550 for a modality in HU, else 0 … its 99.5th percentile."""
    from medgan_tf import modalities

    entry = modalities.by_dicom(volume.modality)
    if entry is not None and entry.hounsfield:
        return -450.0, 550.0
    high = float(np.percentile(volume.array, 99.5))
    return 0.0, high if high > 0 else 1.0


def checkerboard(first: np.ndarray, second: np.ndarray, squares: int = SQUARES) -> np.ndarray:
    """`first` on the squares whose row + column is even, `second` on the others (same shape; the
    squares are about side/`squares` pixels of the array's first axis)."""
    side = max(1, int(round(first.shape[0] / squares)))
    i, j = np.indices(first.shape)
    return np.where(((i // side) + (j // side)) % 2 == 0, first, second)


def _scaled(image: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    low, high = limits
    return np.clip((np.asarray(image, np.float64) - low) / ((high - low) or 1.0), 0.0, 1.0)


def _shown(image: np.ndarray) -> np.ndarray:
    """A grid plane (i, j) as displayed: rows top → bottom (anterior / superior first), columns i."""
    return np.flipud(image.T)


def render(source: Volume, target: Volume, grid: tuple[tuple[int, int, int], np.ndarray], spacing_mm: tuple,
           title: str, registered: Volume | None = None, report: dict[str, Any] | None = None,
           rejected: str | None = None) -> bytes:
    """The PNG (bytes) of one pair: checkerboards of `source` against `target` (before) and, when
    given, against `registered` (after), on the model `grid` of `spacing_mm` (module doc).
    `report`: the registration's (`data.registration`), shown under `title`; `rejected`: the
    reason the pair was rejected, shown in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = [("before registration (world coordinates)" if registered is not None else "as converted", target)]
    if registered is not None:
        columns.append(("after registration", registered))
    source_limits, target_limits = window(source), window(target)
    source_planes = {name: _scaled(image, source_limits) for name, image in planes(source, grid).items()}
    aspect = {"axial": spacing_mm[1] / spacing_mm[0], "coronal": spacing_mm[2] / spacing_mm[0]}
    width, height = figure_pixels(len(columns))
    # A Figure of its own, not pyplot's: no global state, so worker threads may draw at once.
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(columns), squeeze=False)
    for column, (label, volume) in enumerate(columns):
        for row, (name, image) in enumerate(planes(volume, grid).items()):
            board = checkerboard(source_planes[name], _scaled(image, target_limits))
            ax = axes[row][column]
            ax.imshow(_shown(board), cmap="gray", vmin=0.0, vmax=1.0, aspect=aspect[name], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} — {name}", fontsize=9)
    lines = [title, *([describe(report)] if report else [])]
    figure.suptitle("\n".join(lines), fontsize=9)
    if rejected:
        figure.text(0.5, 0.01, f"REJECTED: {rejected}", color="red", ha="center", va="bottom", fontsize=9, wrap=True)
    # Margins of MARGIN and a gap of 2·MARGIN: each column sits in its half of the figure as the
    # other does in its own, so before and after line up pixel for pixel half a figure apart.
    figure.subplots_adjust(left=MARGIN, right=1 - MARGIN, bottom=0.08, top=0.86, hspace=0.15,
                           wspace=2 * MARGIN / (0.5 - 2 * MARGIN))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)  # no bbox "tight": the figure keeps its pixel size
    return buffer.getvalue()


def describe(report: dict[str, Any]) -> str:
    """One line of what a registration found, for a preview's title."""
    return (f"{report['method']} ({report['metric']}): rotation {report['rotation_deg']:.2f}°, translation "
            f"{report['translation_mm']:.2f} mm; similarity {report['similarity_before']:.3f} → "
            f"{report['similarity_after']:.3f}")
