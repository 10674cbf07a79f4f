"""Writing a generator in the export formats of `medgan_tf.serving.formats` (`export --format`):
every artefact of one export with the same version number and assets; ONNX, OpenVINO and LiteRT
through Keras' `Model.export`, int8 through `medgan_tf.serving.quantize`. Above the format table
and the runtimes, which only read artefacts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from medgan_tf.errors import UserError
from medgan_tf.serving.formats import DEFAULT_FORMAT, INT8, ModelFormat, format_precision, parse_formats

log = logging.getLogger(__name__)


def export_formats(generator, experiment, out_dir: str | Path, version: int | None = None, precision: str = "float32",
                   formats: str | Iterable[str] = DEFAULT_FORMAT, calibration=None, enforce: bool = True) -> dict[str, Path]:
    """`generator` written in each of `formats` (see module doc) under `out_dir`, all as one
    version (the next free one in every base folder, or `version`); format key → version folder.
    Everything is checked (keys, packages, precisions, free versions) before anything is written.
    `precision` int8 needs `calibration`: a path to training records (`serving.calibration`) or a
    `calibration.Calibration`; its artefacts are published only when every one holds the accuracy
    bound (`serving.quantize`; `enforce=False`, the bench's, publishes and records them regardless)."""
    from medgan_tf.serving.export import check_new_version, export_generator, next_version
    from medgan_tf.serving.quantize import check_int8

    rows = parse_formats(formats)
    out_dir = Path(out_dir)
    for row in rows:
        missing = row.missing_modules(row.exporters + (row.runtime,))
        if missing:
            raise UserError(f"--format {row.key} needs {', '.join(missing)}, not installed: "
                            "pip install -r requirements.txt")
        format_precision(row, precision)
        if precision == INT8:
            check_int8(row, calibration)
    if calibration is not None and precision != INT8:
        raise UserError(f"--calibration is for --precision int8 only (this export computes {precision})")
    if version is None:
        version = max(next_version(row.base(out_dir)) for row in rows)
    finals = {row.key: check_new_version(row.base(out_dir), version) for row in rows}
    if precision == INT8 and not hasattr(calibration, "held_out"):
        from medgan_tf.serving.calibration import calibration_slices

        calibration = calibration_slices(calibration, experiment)
    written = {}
    if DEFAULT_FORMAT in finals:
        written[DEFAULT_FORMAT] = export_generator(generator, experiment, out_dir, version, precision=precision)
    others = [row for row in rows if row.key != DEFAULT_FORMAT]
    if others:
        written.update(_export_runtimes(others, generator, experiment, finals, precision, calibration, enforce))
    return written


def _export_runtimes(rows: list[ModelFormat], generator, experiment, finals: dict[str, Path], precision: str,
                     calibration, enforce: bool) -> dict[str, Path]:
    """The ONNX / OpenVINO / LiteRT version folders through Keras' `Model.export` (int8: through
    `serving.quantize`), each written aside and all published together once every one is complete
    (an int8 artefact that misses the bound leaves none)."""
    import contextlib

    from medgan_tf import files
    from medgan_tf.serving.export import PRECISION_ASSET, precision_description, publish_version, write_assets
    from medgan_tf.serving.quantize import int8_description, write_int8
    from medgan_tf.serving.signatures import normalization_description
    from medgan_tf.training.build import generator_in_precision

    served = generator_in_precision(generator, experiment, "float32")  # the runtime applies bfloat16 / int8 itself
    size, channels = int(experiment.data.image_size), int(experiment.data.input_channels)
    served(np.zeros((1, size, size, channels), np.float32), training=False)  # Keras exports only a model once called

    def write_one(row: ModelFormat, staging: Path) -> None:
        compute_dtype, reason = format_precision(row, precision)
        more = {}
        if compute_dtype == INT8:
            accuracy = write_int8(row, served, staging, calibration, enforce=enforce)
            more = {PRECISION_ASSET: int8_description(precision_description(compute_dtype, reason), calibration,
                                                      accuracy, enforce)}
        else:
            served.export(str(staging / row.marker), format=row.key, verbose=False)
            if not (staging / row.marker).is_file():
                raise RuntimeError(f"Keras' export wrote no {row.marker} into {staging}")
        write_assets(staging / "assets", experiment, normalization_description(experiment), compute_dtype, reason, more)

    def write() -> list[str]:
        with contextlib.ExitStack() as stack:  # publishes every folder on leaving, or removes them all on an error
            for row in rows:
                write_one(row, stack.enter_context(files.atomic_folder(finals[row.key], replace=False, kind="export")))
        return [row.marker for row in rows]

    publish_version(finals[rows[0].key], write, serving_config=False)  # TF Serving's files are the SavedModel's
    for row in rows:
        log.info("exported %s (%s for %s, computes in %s)", finals[row.key] / row.marker, row.name, row.package,
                 format_precision(row, precision)[0])
    return {row.key: finals[row.key] for row in rows}
