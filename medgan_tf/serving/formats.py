"""The export formats: one row each, the one table `export --format` and `--model` detection read.

    key         written under OUT (model base folder)         run by            detected from a path
    savedmodel  OUT/<version>/saved_model.pb, variables/        TensorFlow        saved_model.pb in it (or in a version folder)
    onnx        OUT/onnx/<version>/model.onnx                   onnxruntime       *.onnx, or a folder holding model.onnx
    openvino    OUT/openvino/<version>/model.xml, model.bin     openvino          *.xml, or a folder holding model.xml
    litert      OUT/litert/<version>/model.tflite               ai-edge-litert    *.tflite, or a folder holding model.tflite

Every version folder holds the same assets/ (config.json, normalization.json, precision.json,
written by `export.write_assets`), so `translate` and `evaluate` read the task and the
normalization from any of them. The numbered folders of one format sit apart from TF Serving's
(`onnx/` is not a number, so TF Serving ignores it); one `export --format a,b` gives every
artefact the same version number. The ONNX, OpenVINO and LiteRT artefacts are written by Keras'
own `Model.export(format=...)` from the float32 generator and take and return the SavedModel's
`serving_default` tensors (normalized float32 (B, S, S, C_in) → (B, S, S, 1)); the physical-unit
signatures stay the SavedModel's (`translate` converts units around any of them).
Precision: ONNX Runtime and LiteRT compute float32; OpenVINO also computes bfloat16 natively
(its CPU inference-precision hint, set from precision.json when the artefact is loaded). int8 is
offered by the three non-TensorFlow formats through post-training quantization, only when asked
(`--precision int8 --calibration DATA`, never by auto) and only when the quantized artefact holds
the accuracy bound against float32 (`medgan_tf.serving.quantize`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path
from typing import Iterable

from medgan_tf.errors import UserError
from medgan_tf.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_FORMAT = "savedmodel"
INT8 = "int8"  # post-training quantization (`medgan_tf.serving.quantize`)


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    """One export format: a row of the table above.

    key:        its name for `export --format`; also the sub-folder of OUT it is written to
                ("" for the SavedModel: TF Serving reads OUT itself).
    marker:     the file in a version folder that holds the network (and whose suffix names a bare file).
    runtime:    the Python module that runs it (`package` on PyPI), loaded by `serving.runtimes`.
    exporters:  modules Keras needs to write it.
    precisions: what the runtime computes natively on CPU.
    quantized:  what it computes from a post-training quantized artefact (int8; `serving.quantize`).
    """

    key: str
    name: str
    marker: str
    runtime: str
    package: str
    exporters: tuple[str, ...]
    precisions: tuple[str, ...]
    subfolder: str
    quantized: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        return Path(self.marker).suffix

    def base(self, out_dir: Path) -> Path:
        """The folder its numbered versions go to."""
        return out_dir / self.subfolder if self.subfolder else out_dir

    def claims(self, path: Path) -> bool:
        """Whether `path` names an artefact of this format: a file with its suffix, a version
        folder holding its marker, or a base folder with numbered versions holding one."""
        if path.is_file():
            return path.suffix == self.suffix and self.key != DEFAULT_FORMAT
        return path.is_dir() and ((path / self.marker).is_file() or any(
            (child / self.marker).is_file() for child in path.iterdir() if child.name.isdigit()))

    def version_dir(self, path: Path) -> Path:
        """The version folder (holding assets/) of the artefact `path` names."""
        from medgan_tf.serving.assets import resolve_export_dir

        return path.parent if path.is_file() else resolve_export_dir(path, self.marker)

    def missing_modules(self, what: Iterable[str]) -> list[str]:
        return [module for module in what if importlib.util.find_spec(module) is None]


FORMATS: Registry[ModelFormat] = Registry("export format")
for _row in (
    ModelFormat("savedmodel", "TF SavedModel", "saved_model.pb", "tensorflow", "tensorflow", (),
                ("float32", "bfloat16"), ""),
    ModelFormat("onnx", "ONNX", "model.onnx", "onnxruntime", "onnxruntime", ("tf2onnx", "onnx"), ("float32",), "onnx",
                ("int8",)),
    ModelFormat("openvino", "OpenVINO IR", "model.xml", "openvino", "openvino", ("openvino",),
                ("float32", "bfloat16"), "openvino", ("int8",)),
    ModelFormat("litert", "LiteRT (TFLite)", "model.tflite", "ai_edge_litert", "ai-edge-litert", (),
                ("float32",), "litert", ("int8",)),
):
    FORMATS.add(_row.key, _row)


def parse_formats(text: str | Iterable[str]) -> list[ModelFormat]:
    """'onnx,openvino' (or a list of keys) → their rows, each once, in the order given; a
    UserError naming the known keys for an unknown one."""
    keys = [key.strip().lower() for key in (text.split(",") if isinstance(text, str) else text) if key.strip()]
    unknown = [key for key in keys if key not in FORMATS]
    if unknown or not keys:
        raise UserError(f"--format: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(FORMATS.names())} "
                        "(comma-separated for several)")
    return [FORMATS[key] for key in dict.fromkeys(keys)]


def format_of(path: str | Path) -> ModelFormat:
    """The format of the artefact `path` names: by its file suffix first, else the first row that
    claims the folder; a UserError when none does."""
    path = Path(path)
    for _, row in FORMATS.items():
        if row.claims(path):
            return row
    raise UserError(f"{path} is no exported model: expected {', '.join(f'{r.name} ({r.marker})' for _, r in FORMATS.items())}"
                    " or a folder holding one (the output of `medgan-tf export --format ...`)")


def format_precision(row: ModelFormat, precision: str) -> tuple[str, str]:
    """(compute dtype, why) of an artefact of `row` exported with `precision` (auto | float32 |
    bfloat16 | int8); a UserError when the runtime does not compute the one asked for."""
    from medgan_tf.training.runtime import choose_inference_precision

    if precision == INT8:
        if INT8 in row.quantized:
            return INT8, "--precision int8: post-training quantization (how it was calibrated and checked: quantization)"
        raise UserError(f"--format {row.key} with --precision int8: {row.name} has no post-training int8 here; "
                        f"int8 is offered by {', '.join(offering_int8())} (--format {','.join(offering_int8())})")
    compute_dtype, reason = choose_inference_precision(precision)
    if compute_dtype in row.precisions:
        return compute_dtype, reason
    if precision == "auto":
        return "float32", f"{row.package} computes float32 only on CPU"
    raise UserError(f"--format {row.key} with --precision {precision}: {row.package} computes "
                    f"{' or '.join(row.precisions)} on CPU; export it in float32 (bfloat16 is offered by "
                    f"{', '.join(k for k, r in FORMATS.items() if compute_dtype in r.precisions)})")


def offering_int8() -> list[str]:
    """The formats that offer post-training int8."""
    return [key for key, row in FORMATS.items() if INT8 in row.quantized]
