"""`convert --preview`: the picture of each pair (`medgan_tf.data.pair_previews`), drawn and
written by the per-pair Beam step itself (no second pass over the data) into DIR/previews/.

A picture is named by the pair's patient pseudonym (the manifest's `patient_key`) and its line of
the pairs CSV, `<patient_key>-line<N>.png` (`line<N>.png` for a row without a patient ID): never
by the patient ID or a path, which the dataset folder does not hold. It is written whole or not at
all (`pipelines.filesystems.write_bytes`) into the run's work folder, so it is published with the
dataset; on an object store, in place beside the shards. A picture that cannot be drawn or written
costs a warning, never the pair.
"""

from __future__ import annotations

import logging
from typing import Any

FOLDER = "previews"


def file_name(row_number: int, patient_key: str) -> str:
    """The preview's file name for CSV line `row_number` of the patient pseudonym `patient_key`."""
    return f"{patient_key}-line{row_number}.png" if patient_key else f"line{row_number}.png"


class PreviewWriter:
    """The `preview` callback of `medgan_tf.data.pairs.convert_pair` for one CSV row: draws the
    pair's `PairView` on the model grid of `data_config` and writes it under `folder`."""

    def __init__(self, folder: str, data_config: Any, row_number: int, patient_key: str):
        self.path = f"{folder.rstrip('/')}/{file_name(row_number, patient_key)}"
        self.data_config = data_config
        self.title = f"CSV line {row_number} · patient {patient_key or '(no patient ID)'}"

    def __call__(self, view: Any) -> None:
        from medgan_tf.data import geometry, pair_previews
        from pipelines import filesystems

        try:
            spacing = tuple(float(v) for v in self.data_config.spacing_mm)
            grid = geometry.model_grid(view.source, spacing, int(self.data_config.image_size))
            title = self.title if view.report is not None or view.registered is not None else \
                f"{self.title} · not registered (world coordinates)"
            png = pair_previews.render(view.source, view.target, grid, spacing, title, registered=view.registered,
                                       report=view.report, rejected=view.rejected)
            filesystems.write_bytes(self.path, png)
        except Exception as error:  # noqa: BLE001 — a picture never costs the pair its conversion
            logging.warning("the preview %s could not be written (%s: %s)", self.path, type(error).__name__, error)
