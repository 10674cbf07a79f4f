"""Pictures of synthetic pairs: the three orthogonal planes through the centre of the source and
of the target volume, side by side (`medgan-tf synth --preview`, and the README's phantom figure).

Each plane is shown in the volume's own millimetres (the aspect follows the voxel spacing), in
radiological display (patient's left on the right of an axial view, anterior at the top), with a
window per modality: CT (any modality in HU) −450…550 HU (lungs and air black, fat, organs and bone apart), PET 0 to
the 99th percentile (hot bladder and lesions saturate), any other 0 to the 99.5th.

`write_overview` draws the README's figure of every built-in phantom (`make docs-images`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from medgan_tf.evaluation.figures import PLANES, save_figure_atomic

log = logging.getLogger(__name__)


def _window(volume) -> tuple[float, float]:
    from medgan_tf import modalities

    entry = modalities.by_dicom(volume.modality)
    if entry is not None and entry.hounsfield:  # CT and cone-beam CT (stored as CT)
        return -450.0, 550.0
    top = 99.0 if volume.modality == "PT" else 99.5  # PET: the bladder would take the whole grey scale
    return 0.0, float(np.percentile(volume.array, top)) or 1.0


def _plane(volume, plane: str) -> tuple[np.ndarray, float]:
    """(2-D image with rows top → bottom, its pixel aspect height/width) of the central `plane`."""
    array, spacing = volume.array, volume.spacing
    i, j, k = (n // 2 for n in array.shape)
    if plane == "axial":  # rows: anterior (high j) first; columns: patient right (low i) ... left
        return np.flipud(array[:, :, k].T), spacing[1] / spacing[0]
    if plane == "coronal":  # rows: superior first; columns: i
        return np.flipud(array[:, j, :].T), spacing[2] / spacing[0]
    return np.flipud(array[i, :, :].T), spacing[2] / spacing[1]  # sagittal: columns anterior ... posterior flipped


def _draw_row(axes, label: str, source, target, window: tuple[float, float] | None = None) -> None:
    for column, (name, volume) in enumerate((("source", source), ("target", target))):
        low, high = window or _window(volume)
        for offset, plane in enumerate(PLANES):
            ax = axes[column * 3 + offset]
            image, aspect = _plane(volume, plane)
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name} {volume.modality} — {plane}", fontsize=7)
    axes[0].set_ylabel(label, fontsize=8)


def render_pairs(rows: list[tuple[str, object, object]], path: str | Path, dpi: int = 90,
                 windows: dict[str, tuple[float, float]] | None = None) -> Path:
    """A PNG at `path`: one row per (label, source Volume, target Volume), six panels each
    (source and target × axial, coronal, sagittal). `windows`: a grey-scale window (low, high)
    for the rows of some labels instead of the modality's. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = pyplot.subplots(len(rows), 6, figsize=(12, 2.3 * len(rows)), squeeze=False)
    try:
        for row_axes, (label, source, target) in zip(axes, rows):
            _draw_row(row_axes, label, source, target, (windows or {}).get(label))
        figure.tight_layout()
        save_figure_atomic(figure, path, dpi)
    finally:
        pyplot.close(figure)
    return path


def write_previews(pairs_csv: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """One PNG per pair of `pairs_csv` (a `medgan-tf synth` dataset): `<out_dir>/<patient_id>.png`,
    `out_dir` defaulting to `preview/` next to the CSV. Returns the paths written."""
    from medgan_tf.data.io import read_volume

    pairs_csv = Path(pairs_csv)
    out = Path(out_dir) if out_dir else pairs_csv.parent / "preview"
    with open(pairs_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    written = []
    for number, row in enumerate(rows, start=1):
        source = read_volume(pairs_csv.parent / row["source"])
        target = read_volume(pairs_csv.parent / row["target"])
        written.append(render_pairs([(row["patient_id"], source, target)], out / f"{row['patient_id']}.png"))
        log.info("preview %d/%d: %s", number, len(rows), written[-1])
    return written


# The overview's window for CT denoising (one HU modality on both sides): quarter- vs full-dose
# noise (≈ 20 vs 10 HU) only shows in the abdominal soft-tissue window (W400/L40), not in the
# preview's −450…550 HU.
SOFT_TISSUE_WINDOW = (-160.0, 240.0)


def write_overview(names: list[str] | None = None, path: str | Path = "docs/images/phantoms.png", seed: int = 0,
                   dpi: int = 72) -> Path:
    """The README's phantom figure: one row per task with built-in data (default: all of them, in
    registry order), its first synthetic patient of `seed` at the phantom's default size (a 256 mm
    head, a 400 mm trunk), drawn as by `render_pairs`; CT denoising rows in `SOFT_TISSUE_WINDOW`,
    named in the row label. Regenerate with `make docs-images`."""
    from medgan_tf import tasks
    from medgan_tf.data.synthetic import patient_rng, synthesize_pair

    rows, windows = [], {}
    for name in names or tasks.with_builtin_data():
        task = tasks.get(name)
        source, target, _ = synthesize_pair(task.phantom, patient_rng(task.phantom, seed, 0))
        label = name
        if task.denoising and task.target.hounsfield:
            low, high = SOFT_TISSUE_WINDOW
            label = f"{name} ({low:g}…{high:g} HU)"
            windows[label] = (low, high)
        rows.append((label, source, target))
        log.info("overview: %s", name)
    return render_pairs(rows, path, dpi=dpi, windows=windows)
