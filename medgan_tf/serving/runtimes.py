"""ONNX, OpenVINO and LiteRT artefacts as `TranslationModel`s: one small adapter per runtime.

`load_artefact(path)` finds the format from the path (`medgan_tf.serving.formats`), reads the
export's assets (config, normalization, precision) beside the model and returns an adapter with the
interface of `loading.ExportedModel` for translation and evaluation: `path`, `config`,
`normalization`, `image_size`, and calling it on normalized float32 (B, S, S, C_in) slices gives the
normalized output (B, S, S, 1). Inputs are checked as for a SavedModel (`loading.check_slices`), so
tiling, physical units and the output formats work the same whichever runtime runs the network.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf import config as config_lib
from medgan_tf.errors import UserError
from medgan_tf.serving.assets import check_export_precision, check_slices, read_assets

log = logging.getLogger(__name__)

# INFERENCE_PRECISION_HINT per precision.json (int8: the quantized ops run int8 whatever the hint; the rest float32)
OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}


@dataclasses.dataclass
class RuntimeModel:
    """An exported network run by another runtime than TensorFlow (subclasses: one per runtime)."""

    path: Path
    config: config_lib.ExperimentConfig
    normalization: dict[str, Any]
    compute_dtype: str
    session: Any = dataclasses.field(repr=False)

    runtime = ""

    @property
    def image_size(self) -> int:
        return int(self.normalization["image_size"])

    def __call__(self, source: Any) -> np.ndarray:
        """Normalized (B, S, S, C_in) slices in [-1, 1] → normalized output (B, S, S, 1)."""
        array = check_slices(source, self.image_size, channels=self.config.data.input_channels)
        if len(array) == 0:
            return np.zeros((0, self.image_size, self.image_size, 1), np.float32)
        return np.asarray(self.run(np.ascontiguousarray(array)), dtype=np.float32)

    @classmethod
    def open(cls, model_file: Path, compute_dtype: str) -> Any:
        raise NotImplementedError

    def run(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def computes(cls, session: Any, asked: str) -> str:
        """What the opened `session` computes in, `asked` unless the runtime chose otherwise."""
        return asked


class OnnxRuntimeModel(RuntimeModel):
    runtime = "onnxruntime"

    @classmethod
    def open(cls, model_file: Path, compute_dtype: str) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.session.get_inputs()[0].name: array})[0]


class OpenVinoModel(RuntimeModel):
    runtime = "openvino"

    @classmethod
    def open(cls, model_file: Path, compute_dtype: str) -> Any:
        import openvino

        core = openvino.Core()
        return core.compile_model(core.read_model(str(model_file)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[compute_dtype]})

    def run(self, array: np.ndarray) -> np.ndarray:
        return self.session(array)[0]

    @classmethod
    def computes(cls, session: Any, asked: str) -> str:
        # OpenVINO falls back to f32 silently where the CPU lacks bfloat16 (no BF16 in its capabilities).
        if asked == "int8":
            return asked
        hint = session.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type: bf16 or f32
        return "bfloat16" if getattr(hint, "get_type_name", lambda: str(hint))() == "bf16" else "float32"


class LiteRtModel(RuntimeModel):
    runtime = "ai_edge_litert"

    @classmethod
    def open(cls, model_file: Path, compute_dtype: str) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(model_file), num_threads=os.cpu_count() or 1)

    def run(self, array: np.ndarray) -> np.ndarray:
        interpreter = self.session
        source = interpreter.get_input_details()[0]
        if tuple(source["shape"]) != array.shape:  # the batch size is chosen at run time
            interpreter.resize_tensor_input(source["index"], array.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], array)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


ADAPTERS: dict[str, type[RuntimeModel]] = {"onnx": OnnxRuntimeModel, "openvino": OpenVinoModel, "litert": LiteRtModel}


def load_artefact(path: str | Path, precision: str | None = None, compute_dtype: str | None = None) -> RuntimeModel:
    """An ONNX / OpenVINO / LiteRT artefact (a model file, its version folder, or its base folder
    → the highest version) as a `RuntimeModel` run by its own runtime. `precision` as in
    `loading.load_model` (the export's, or an error naming how to re-export); `compute_dtype`
    overrides what precision.json says (bench: OpenVINO in bfloat16 from a float32 artefact)."""
    from medgan_tf.serving.export import read_precision
    from medgan_tf.serving.formats import format_of

    path = Path(path)
    row = format_of(path)
    if row.key not in ADAPTERS:
        raise UserError(f"{path} is a {row.name}; load it with `loading.load_export`")
    version_dir = row.version_dir(path)
    check_export_precision(version_dir, precision)
    experiment, description = read_assets(version_dir)
    missing = row.missing_modules((row.runtime,))
    if missing:
        raise UserError(f"{path} is a {row.name} model run by {row.package}, which is not installed: "
                        f"pip install -r requirements.txt")
    compute_dtype = compute_dtype or read_precision(version_dir)["compute_dtype"]
    if compute_dtype not in row.precisions + row.quantized:
        raise UserError(f"{path}: {row.package} computes {' or '.join(row.precisions + row.quantized)}, "
                        f"not {compute_dtype}")
    file = path if path.is_file() else version_dir / row.marker
    adapter = ADAPTERS[row.key]
    try:
        session = adapter.open(file, compute_dtype)
    except Exception as error:  # each runtime has its own exception types; all mean an unreadable model
        raise UserError(f"{file}: {row.package} cannot load it ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:300]})") from error
    asked, compute_dtype = compute_dtype, adapter.computes(session, compute_dtype)
    if compute_dtype != asked:
        log.warning("%s: %s computes %s on this processor, not %s (no native %s)", file, row.package, compute_dtype,
                    asked, asked)
    log.info("%s runs in %s (%s)", file, row.package, compute_dtype)
    return adapter(path=version_dir, config=experiment, normalization=description, compute_dtype=compute_dtype,
                   session=session)
