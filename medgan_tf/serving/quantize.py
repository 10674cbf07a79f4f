"""Post-training int8 artefacts (`export --format litert|onnx|openvino --precision int8 --calibration DATA`)
and the accuracy gate they must pass to be published.

Each runtime quantizes with its own tool, from the float32 generator and the calibration slices of
`medgan_tf.serving.calibration` (drawn from the training records), keeping float32 input and output
so that `translate` and `evaluate` run the artefact unchanged:

    litert    TensorFlow's TFLiteConverter (through Keras' `Model.export(format="litert")`): integer
              quantization with a representative dataset; ops without an int8 kernel stay float32
    onnx      onnxruntime.quantization.quantize_static of Keras' float32 ONNX: QDQ, uint8
              activations, int8 per-channel weights, MinMax calibration
    openvino  NNCF's `nncf.quantize` of Keras' float32 OpenVINO IR (its default int8 preset)

The gate: the int8 artefact, run by its own runtime, and the float32 generator translate the
held-out slices (never used to calibrate); the worst slice's PSNR and SSIM (0–255 scale, as every
export format is held to against the float32 SavedModel) must reach `MIN_PSNR_DB` and `MIN_SSIM`.
Below either, `export` refuses with a UserError stating the figures and the bound, and the
version folder is never published; above, precision.json records int8 with the figures. The bench
measures int8 rows without the refusal (`enforce=False`): it reports, the export decides.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgan_tf.errors import UserError
from medgan_tf.serving.formats import INT8

log = logging.getLogger(__name__)

MIN_PSNR_DB = 45.0  # the accuracy bound of every export format against float32, per slice, 0–255 scale
MIN_SSIM = 0.999
GATE_BATCH = 8  # slices per call of the gate's runs
WORK_NAME = "float32"  # the float32 artefact a quantizer starts from, removed from the version folder


def worst_slice_accuracy(output: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """The lowest per-slice PSNR (dB) and SSIM of `output` against `expected` (normalized [-1, 1]
    slices (N, S, S, 1), compared on the 0–255 scale), and whether both hold the bound."""
    from medgan_tf import metrics

    pairs = [(metrics.to_255(o[..., 0]), metrics.to_255(e[..., 0])) for o, e in zip(output, expected)]
    worst = {"min_psnr_db": min(metrics.psnr(a, b) for a, b in pairs),
             "min_ssim": min(metrics.ssim(a, b) for a, b in pairs)}
    return {**worst, "holds_bound": bool(worst["min_psnr_db"] >= MIN_PSNR_DB and worst["min_ssim"] >= MIN_SSIM)}


def bound_text() -> str:
    return f"PSNR ≥ {MIN_PSNR_DB:g} dB and SSIM ≥ {MIN_SSIM:g}"


def _batches(slices: np.ndarray):
    """One-slice batches (1, S, S, C) of float32: what each calibrator reads."""
    return [np.ascontiguousarray(s[None], dtype=np.float32) for s in slices]


def quantize_litert(served, staging: Path, marker: str, slices: np.ndarray) -> None:
    import tensorflow as tf

    def representative():
        for batch in _batches(slices):
            yield [batch]

    served.export(str(staging / marker), format="litert", verbose=False, optimizations=[tf.lite.Optimize.DEFAULT],
                  representative_dataset=representative, inference_input_type=tf.float32,
                  inference_output_type=tf.float32)


def quantize_onnx(served, staging: Path, marker: str, slices: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_file = staging / f"{WORK_NAME}.onnx"
    served.export(str(float_file), format="onnx", verbose=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            import onnx

            self.name = onnx.load(str(float_file), load_external_data=False).graph.input[0].name
            self.batches = iter(_batches(slices))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {self.name: batch}

    quantize_static(str(float_file), str(staging / marker), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    float_file.unlink()


def quantize_openvino(served, staging: Path, marker: str, slices: np.ndarray) -> None:
    import nncf
    import openvino

    float_file = staging / f"{WORK_NAME}.xml"
    served.export(str(float_file), format="openvino", verbose=False)
    model = openvino.Core().read_model(str(float_file))
    nncf.set_log_level(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars: export prints its own summary
        quantized = nncf.quantize(model, nncf.Dataset(_batches(slices)), subset_size=len(slices))
    openvino.save_model(quantized, str(staging / marker), compress_to_fp16=False)
    del model, quantized
    for leftover in staging.glob(f"{WORK_NAME}.*"):
        leftover.unlink()


QUANTIZERS: dict[str, Callable[..., None]] = {"litert": quantize_litert, "onnx": quantize_onnx,
                                              "openvino": quantize_openvino}
# What each quantizer needs beyond the format's own exporters and runtime.
QUANTIZER_MODULES = {"litert": (), "onnx": ("onnxruntime.quantization",), "openvino": ("nncf",)}


def check_int8(row, calibration) -> None:
    """UserError unless `row` (a `formats.ModelFormat` offering int8, `formats.format_precision`)
    can be quantized here with `calibration`."""
    missing = row.missing_modules(QUANTIZER_MODULES[row.key])
    if missing:
        raise UserError(f"--format {row.key} --precision int8 needs {', '.join(missing)}, not installed: "
                        "pip install -r requirements.txt")
    if calibration is None:
        raise UserError("--precision int8 needs --calibration DATA: the model's training records (a `medgan-tf "
                        "convert` output folder or its .tfrecord.gz files) to calibrate the int8 ranges on")




def write_int8(row, served, staging: Path, calibration, enforce: bool = True) -> dict[str, Any]:
    """The int8 artefact of `served` (the float32 generator) in `staging` (a version folder being
    written) by `row`'s quantizer, then the gate (module doc): its measured figures, or a UserError
    when they miss the bound and `enforce` (the caller's staging folder is then discarded)."""
    from medgan_tf.serving.runtimes import ADAPTERS

    log.info("quantizing %s to int8 on %d calibration slices (%s)", row.name, len(calibration.slices),
             calibration.source)
    # The float32 reference first: it also builds the model's call graph, which Keras' ONNX export needs.
    expected = _in_batches(lambda batch: served(batch, training=False), calibration.held_out)
    QUANTIZERS[row.key](served, staging, row.marker, calibration.slices)
    if not (staging / row.marker).is_file():
        raise RuntimeError(f"the {row.name} int8 quantization wrote no {row.marker} into {staging}")
    adapter = ADAPTERS[row.key]
    runner = adapter(path=staging, config=None, normalization={}, compute_dtype=INT8,
                     session=adapter.open(staging / row.marker, INT8))
    output = _in_batches(runner.run, calibration.held_out)
    del runner
    accuracy = worst_slice_accuracy(output, expected)
    figures = f"worst of {len(expected)} held-out slices: PSNR {accuracy['min_psnr_db']:.2f} dB, SSIM {accuracy['min_ssim']:.5f}"
    if enforce and not accuracy["holds_bound"]:
        raise UserError(f"--format {row.key} --precision int8 refused: the int8 {row.name} misses the accuracy bound "
                        f"against float32 ({figures}; the bound is {bound_text()} per slice, 0–255 scale). Nothing "
                        "was published; export it in float32")
    log.info("int8 %s against float32: %s (%s)", row.name, figures,
             "within the bound" if accuracy["holds_bound"] else f"misses the bound {bound_text()}")
    return accuracy


def _in_batches(run: Callable[[np.ndarray], Any], slices: np.ndarray, size: int = GATE_BATCH) -> np.ndarray:
    """`run` over `slices`, a batch of `size` at a time (the memory of a 256² network stays bounded)."""
    return np.concatenate([np.asarray(run(np.ascontiguousarray(slices[i:i + size], dtype=np.float32)), np.float32)
                           for i in range(0, len(slices), size)])


def int8_description(base: dict, calibration, accuracy: dict[str, Any], enforced: bool) -> dict:
    """precision.json of an int8 artefact: `base` (`export.precision_description`) with how it
    was quantized, calibrated and checked."""
    return {**base, "dtype_policy": "post-training int8 quantization", "variables_dtype": INT8,
            "quantization": {"scheme": "post-training static int8 (float32 input and output)",
                             "calibration": calibration.describe(),
                             "gate": {"against": "the float32 generator, on the held-out slices",
                                      "min_psnr_db": accuracy["min_psnr_db"], "min_ssim": accuracy["min_ssim"],
                                      "bound": {"min_psnr_db": MIN_PSNR_DB, "min_ssim": MIN_SSIM},
                                      "holds_bound": accuracy["holds_bound"], "enforced": enforced}}}
