"""The runtime figures of `medgan-tf bench`: CasNet-6 256² inference at batch 8 on every runtime an
export can target (`medgan_tf.serving.formats`), in every precision the runtime computes natively.

TensorFlow's rows (SavedModel float32 and bfloat16) are the bench's own `inference[_bf16]_batch8`;
this section adds ONNX Runtime, OpenVINO (float32 and bfloat16: its CPU inference-precision hint)
and LiteRT (XNNPACK) from artefacts that Keras' `Model.export` writes of the same weights (the same
seeded CasNet-6 as the SavedModel). Each row gives slices/s, GFLOP/s and their fraction of the same
run's float32 GEMM (`vs_gemm`, one yardstick for every row) and of the GEMM in the row's own
precision (`vs_gemm_same_precision`), plus the worst slice's PSNR / SSIM (0–255 scale) against the
float32 Keras generator on the timed batch. Runtimes whose package is not installed are skipped
with a note, and so is a precision the runtime falls back from on this processor (OpenVINO
bfloat16 without avx512_bf16 / amx_bf16).

Each runtime that offers post-training int8 (`medgan_tf.serving.quantize`) adds an int8 row: the same
CasNet-6 quantized on `INT8_CALIBRATION` slices of the task's built-in phantom (synthetic patients,
`serving.calibration.phantom_calibration`, seeded) and compared with the float32 generator on
further held-out phantom slices; its `min_psnr_db` / `min_ssim` are those held-out slices' worst
and `holds_bound` says whether they reach the export's bound (PSNR ≥ 45 dB, SSIM ≥ 0.999). The
bench measures int8 whether or not it holds the bound (the export is what refuses). The weights are
random (seeded), so the int8 accuracy here is not a trained model's: export yours with
`--precision int8 --calibration DATA` to know it. `vs_gemm_same_precision` of an int8 row is its
fraction of the float32 GEMM (no int8 GEMM is measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf.serving.quantize import worst_slice_accuracy
from medgan_tf.workflows.timing import inference_figures

RUNTIME_FORMATS = ("onnx", "openvino", "litert")
# tf2onnx (inside Keras' ONNX export) needs more than this machine's 24 GB to convert CasNet-6 at 256²
# (the bench was killed by the kernel's OOM killer; alone it passed 12 GB within 75 s): the bench leaves
# ONNX out of its CasNet-6 figures; smaller networks convert in seconds (tests/test_runtimes.py).
BENCH_LEFT_OUT = {"onnx": "not measured: tf2onnx needs > 24 GB of memory to convert CasNet-6 at 256² (OOM-killed)"}
BATCH = 8
INT8_CALIBRATION = {False: (100, 20), True: (32, 8)}  # (calibration, held-out) phantom slices: full run, --quick
INT8_NOTE = "random (seeded) weights calibrated on phantom slices: not a trained model's int8 accuracy"


def _row(runtime: str, artefact: str, precision: str, item: dict, figures: dict) -> dict[str, Any]:
    gemm = figures["gemm"]["gflops"]
    own = figures["gemm_bf16"]["gflops"] if precision == "bfloat16" and "gemm_bf16" in figures else gemm
    return {
        "runtime": runtime, "format": artefact, "precision": precision, "batch_size": item["batch_size"],
        "slices_per_s": item["slices_per_s"], "gflops": item["gflops"],
        "vs_gemm": item["gflops"] / gemm, "vs_gemm_same_precision": item["gflops"] / own,
        "median_s": item["median_s"],
    }


def _int8_formats(keys: list[str]) -> list[str]:
    """The formats of `keys` whose runtime offers int8 and whose quantizer is installed."""
    from medgan_tf.serving.formats import FORMATS
    from medgan_tf.serving.quantize import INT8, QUANTIZER_MODULES

    return [key for key in keys if INT8 in FORMATS[key].quantized and not FORMATS[key].missing_modules(QUANTIZER_MODULES[key])]


def _int8_accuracy(version_dir: Path) -> dict[str, Any]:
    """The held-out accuracy the int8 export measured (its precision.json), as the row's fields."""
    from medgan_tf.serving.export import read_precision

    quantization = read_precision(version_dir)["quantization"]
    gate = quantization["gate"]
    calibration = quantization["calibration"]
    return {"min_psnr_db": gate["min_psnr_db"], "min_ssim": gate["min_ssim"], "holds_bound": gate["holds_bound"],
            "accuracy_on": f"{calibration['held_out_slices']} held-out phantom slices (calibrated on "
                           f"{calibration['slices']})", "note": INT8_NOTE}


def runtime_section(figures: dict, work_dir: Path, experiment, quick: bool, repeats: int, say: Any,
                    formats: tuple[str, ...] | None = None) -> None:
    """figures["runtimes"]: one row per runtime and precision (TensorFlow's from the SavedModel
    figures already measured; int8 where the runtime offers it); figures["runtimes_skipped"]:
    formats whose runtime is missing or that are left out (`formats`: default every runtime format
    but `BENCH_LEFT_OUT`)."""
    from medgan_tf.serving.formats import FORMATS
    from medgan_tf.serving.runtimes import load_artefact

    rows = [_row("tensorflow", "savedmodel", precision, figures[key], figures)
            for key, precision in (("inference_batch8", "float32"), ("inference_bf16_batch8", "bfloat16")) if key in figures]
    chosen = formats if formats is not None else tuple(k for k in RUNTIME_FORMATS if k not in BENCH_LEFT_OUT)
    available = [key for key in chosen if not FORMATS[key].missing_modules(FORMATS[key].exporters + (FORMATS[key].runtime,))]
    figures["runtimes_skipped"] = {key: f"{FORMATS[key].package} not installed" for key in chosen if key not in available}
    figures["runtimes_skipped"].update({key: BENCH_LEFT_OUT[key] for key in RUNTIME_FORMATS if key not in chosen})
    figures["runtimes_skipped"].update({f"{key} int8": "its quantizer is not installed (pip install -r requirements.txt)"
                                        for key in available if key not in _int8_formats(available)})
    if available:
        batch, expected, written, int8 = _exports(available, work_dir, experiment, quick, say)
        flops = int(figures["casnet6"]["gflop_per_slice"] * 1e9)
        runs = [(key, precision, written[key]) for key in available for precision in FORMATS[key].precisions]
        runs += [(key, "int8", version_dir) for key, version_dir in int8.items()]
        for key, precision, version_dir in runs:
            model = load_artefact(version_dir, compute_dtype=precision)
            if model.compute_dtype != precision:  # e.g. OpenVINO bfloat16 on a CPU without it
                figures["runtimes_skipped"][f"{key} {precision}"] = (
                    f"{FORMATS[key].package} computes {model.compute_dtype} on this processor, not {precision}")
                continue
            say(f"inference batch {BATCH}, {FORMATS[key].package} {precision}")
            item = inference_figures(model, flops, BATCH, repeats=repeats + (0 if quick else 2))
            accuracy = _int8_accuracy(version_dir) if precision == "int8" else worst_slice_accuracy(model(batch), expected)
            rows.append({**_row(FORMATS[key].package, key, precision, item, figures), **accuracy})
            del model
    figures["runtimes"] = rows


def _exports(available: list[str], work_dir: Path, experiment, quick: bool, say: Any):
    """The seeded CasNet-6 (the SavedModel's weights) written in every available format (version 1)
    and, where offered, in int8 calibrated on phantom slices (version 2, published whatever its
    accuracy); (timed batch, its float32 output, float32 version folders, int8 version folders)."""
    import keras

    from medgan_tf.models import build_casnet
    from medgan_tf.serving.calibration import phantom_calibration
    from medgan_tf.serving.format_export import export_formats

    say(f"CasNet-6 export: {', '.join(available)}")
    keras.utils.set_random_seed(0)  # the same weights as the SavedModel's (bench._inference_section)
    generator = build_casnet(experiment.generator, experiment.data.image_size)
    size = experiment.data.image_size
    batch = np.random.default_rng(1).uniform(-1, 1, (BATCH, size, size, 1)).astype(np.float32)
    expected = np.asarray(generator(batch, training=False))
    written = export_formats(generator, experiment, work_dir / "runtimes", version=1, formats=available)
    int8 = {}
    quantizable = _int8_formats(available)
    if quantizable:
        count, held_out = INT8_CALIBRATION[bool(quick)]
        say(f"CasNet-6 int8 export: {', '.join(quantizable)} ({count} phantom slices)")
        calibration = phantom_calibration(experiment, count, held_out)
        int8 = export_formats(generator, experiment, work_dir / "runtimes", version=2, precision="int8",
                              formats=quantizable, calibration=calibration, enforce=False)
    del generator
    return batch, expected, written, int8


def runtime_rows(f: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The bench table's rows of the runtime figures, fastest first."""
    rows = []
    for row in sorted(f.get("runtimes", []), key=lambda r: -r["slices_per_s"]):
        accuracy = f", worst slice {row['min_psnr_db']:.1f} dB / SSIM {row['min_ssim']:.4f}" if "min_ssim" in row else ""
        if row["precision"] == "int8":
            accuracy += (f" on {row['accuracy_on']}, {'holds' if row['holds_bound'] else 'misses'} the export bound "
                         f"({row['note']})")
        rows.append((f"runtime {row['runtime']} {row['precision']}", f"CasNet-6 256², batch {row['batch_size']}, {row['format']}",
                     f"{row['slices_per_s']:.3f} slices/s, {row['gflops']:.1f} GFLOP/s = {row['vs_gemm']:.2f} × GEMM fp32"
                     f" ({row['vs_gemm_same_precision']:.2f} × same-precision GEMM){accuracy}"))
    for key, reason in f.get("runtimes_skipped", {}).items():
        rows.append((f"runtime for {key}", "skipped", reason))
    return rows
