"""Loading a trained generator for inference: an export or a run directory, one interface.

`load_model(path)` accepts an export (`medgan-tf export` output in any format: a version folder,
its base folder, an ONNX/OpenVINO/LiteRT model file) or a run directory (the generator restored
from a checkpoint). All give a `TranslationModel`: callable on normalized slices, with the run's
config and normalization description, so translation and evaluation do not care which they got.

Every input is checked here before the graph runs, with a UserError naming the expected spec:
dtype (float32 only: TensorFlow's own binding casts a numpy float64/int32/float16 array silently
and refuses a tf.Tensor of another dtype without naming the shape), shape, and NaN/inf values.
A batch of 0 slices gives an empty (0, S, S, 1) output.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medgan_tf import config as config_lib
from medgan_tf.errors import UserError
from medgan_tf.serving.assets import (  # noqa: F401  (re-exported: loading is where callers find them)
    _as_float32,
    check_export_precision,
    check_finite,
    check_slices,
    is_export,
    read_assets,
    resolve_export_dir,
)
from medgan_tf.serving.signatures import (
    FIT_INPUT_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    PHYSICAL_SIGNATURE,
    SERVING_SIGNATURE,
    UNCERTAINTY_NAME,
    normalization_description,
)


log = logging.getLogger(__name__)


NOT_A_MODEL = ("{path} is neither an export (a SavedModel: saved_model.pb, or numeric version folders with one; "
               "model.onnx, an OpenVINO model.xml or a model.tflite, or a folder holding one) "
               "nor a run directory (config.json + checkpoints/)")


@runtime_checkable
class TranslationModel(Protocol):
    """What translation and evaluation need from a trained generator.

    path:          where it was loaded from.
    config:        the run's ExperimentConfig.
    normalization: the normalization description (`signatures.normalization_description`).
    image_size:    S; calling the model maps normalized float32 (B, S, S, C_in) slices in [-1, 1]
                   to the normalized output (B, S, S, 1); C_in = `config.data.input_channels`
                   (1, or (2K+1)·C for a 2.5D / multi-source model, `medgan_tf.data.context`).
    """

    path: Path
    config: config_lib.ExperimentConfig
    normalization: dict[str, Any]

    @property
    def image_size(self) -> int: ...

    def __call__(self, source: Any) -> np.ndarray: ...


def _spec_text(spec: Any) -> str:
    """'float32 (batch, 64, 64, 1)' for a TensorSpec (None = batch), 'float32 (any shape)' if unknown."""
    if spec.shape.rank is None:
        return f"{spec.dtype.name} (any shape)"
    dims = ["batch" if dim is None else str(dim) for dim in spec.shape.as_list()]
    return f"{spec.dtype.name} ({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def check_feeds(specs: dict[str, Any], feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    """`feeds` checked against a signature's input `specs` (name → TensorSpec): names, dtype,
    shape, one batch size, finite values, a non-empty volume. Float32 numpy arrays, or a UserError."""
    missing, extra = sorted(set(specs) - set(feeds)), sorted(set(feeds) - set(specs))
    if missing or extra:
        raise UserError(f"the signature takes {sorted(specs)}; missing {missing}, unexpected {extra}")
    arrays = {}
    for name, spec in specs.items():
        array = _as_float32(feeds[name], name, _spec_text(spec))
        if not spec.shape.is_compatible_with(array.shape):
            raise UserError(f"{name}: expected {_spec_text(spec)}; received shape {array.shape}")
        if name == FIT_INPUT_NAME and array.size == 0:
            raise UserError(f"{name}: expected at least one voxel; received shape {array.shape}")
        arrays[name] = check_finite(array, name, per_slice=spec.shape.rank is not None)
    batches = {name: len(array) for name, array in arrays.items() if specs[name].shape.rank}
    if len(set(batches.values())) > 1:
        raise UserError(f"every input needs one value per slice; received batch sizes {dict(sorted(batches.items()))}")
    return arrays


@dataclasses.dataclass(frozen=True)
class CheckedSignature:
    """A loaded signature that checks its keyword feeds first (`check_feeds`) and raises a
    UserError naming the expected spec; then calls it (→ dict of tf.Tensors, as TF does)."""

    function: Any

    @property
    def structured_input_signature(self) -> Any:
        return self.function.structured_input_signature

    def __call__(self, **feeds: Any) -> dict[str, Any]:
        return self.function(**check_feeds(self.structured_input_signature[1], feeds))


@dataclasses.dataclass
class ExportedModel:
    """A loaded export. Call it like a function on normalized slices.

    path:          the version folder that was loaded.
    config:        the run's ExperimentConfig (assets/config.json).
    normalization: assets/normalization.json (see `normalization_description`).
    image_size:    S; every image argument is float32 (B, S, S, C_in), C_in = 1 unless 2.5D / multi-source.
    """

    path: Path
    config: config_lib.ExperimentConfig
    normalization: dict[str, Any]
    loaded: Any = dataclasses.field(repr=False)

    @property
    def image_size(self) -> int:
        return int(self.normalization["image_size"])

    @property
    def signatures(self) -> dict[str, CheckedSignature]:
        """The export's signatures, each checking its feeds first (`CheckedSignature`)."""
        return {name: CheckedSignature(function) for name, function in self.loaded.signatures.items()}

    def _check(self, images: Any, name: str = INPUT_NAME) -> np.ndarray:
        return check_slices(images, self.image_size, name, self.config.data.input_channels)

    def __call__(self, source: Any) -> np.ndarray:
        """Normalized (B, S, S, C_in) slices in [-1, 1] → normalized output (B, S, S, 1) (serving_default)."""
        array = self._check(source)
        return self.loaded.signatures[SERVING_SIGNATURE](**{INPUT_NAME: array})[OUTPUT_NAME].numpy()

    @property
    def has_uncertainty(self) -> bool:
        """Whether serving_default also returns `uncertainty` (an ensemble export)."""
        return UNCERTAINTY_NAME in self.loaded.signatures[SERVING_SIGNATURE].structured_outputs

    def with_uncertainty(self, source: Any) -> np.ndarray:
        """An ensemble's normalized (B, S, S, C_in) slices → (B, S, S, 2): its `output` (the
        members' mean) and `uncertainty` (their standard deviation), normalized units."""
        array = self._check(source)
        outputs = self.loaded.signatures[SERVING_SIGNATURE](**{INPUT_NAME: array})
        return np.concatenate([outputs[OUTPUT_NAME].numpy(), outputs[UNCERTAINTY_NAME].numpy()], axis=-1)

    def predict(self, source: Any, batch_size: int = 8) -> np.ndarray:
        """`__call__` over a stack of any length, `batch_size` slices at a time."""
        array = self._check(source)
        if len(array) == 0:
            return self(array)
        return np.concatenate([self(array[i : i + batch_size]) for i in range(0, len(array), batch_size)])

    def physical(self, source: Any, **parameters: Any) -> np.ndarray:
        """The `physical` signature: source in physical units (+ per-slice parameters named as in
        `normalization["physical_inputs"]`; scalars are broadcast to the batch) → output in the
        target unit."""
        array = self._check(source)
        names = self.normalization["physical_inputs"][1:]
        missing = [name for name in names if name not in parameters]
        extra = sorted(set(parameters) - set(names))
        if missing or extra:
            raise UserError(f"physical signature takes {names} besides {INPUT_NAME!r}; missing {missing}, unexpected {extra}")
        feeds = {INPUT_NAME: array}
        for name in names:
            value = _as_float32(parameters[name], name, "float32 (batch,) or a scalar")
            if value.ndim > 1 or value.size not in (1, len(array)):
                raise UserError(f"{name}: expected float32 (batch,) with batch = {len(array)}, or a scalar; received shape {value.shape}")
            feeds[name] = check_finite(np.broadcast_to(value.reshape(-1), (len(array),)).copy(), name)
        for side in ("source", "target"):
            if f"{side}_low" in feeds and not np.all(feeds[f"{side}_high"] > feeds[f"{side}_low"]):
                raise UserError(
                    f"{side}_high must be greater than {side}_low; received low {feeds[f'{side}_low'].tolist()}, "
                    f"high {feeds[f'{side}_high'].tolist()}"
                )
        return self.loaded.signatures[PHYSICAL_SIGNATURE](**feeds)[OUTPUT_NAME].numpy()


def load_export(path: str | Path, precision: str | None = None) -> ExportedModel:
    """Load an export (a version folder, or its base folder → the highest version); `precision`
    as in `load_model` (an export computes in the precision it was written in)."""
    import tensorflow as tf

    version_dir = resolve_export_dir(path)
    check_export_precision(version_dir, precision)
    experiment, description = read_assets(version_dir)
    loaded = tf.saved_model.load(str(version_dir))
    if SERVING_SIGNATURE not in loaded.signatures:
        raise UserError(f"{version_dir} has no {SERVING_SIGNATURE!r} signature; found {sorted(loaded.signatures)}")
    return ExportedModel(path=version_dir, config=experiment, normalization=description, loaded=loaded)


@dataclasses.dataclass
class RunModel:
    """A run directory's generator (a `TranslationModel`, like `ExportedModel`)."""

    path: Path
    config: config_lib.ExperimentConfig
    normalization: dict[str, Any]
    generator: Any = dataclasses.field(repr=False)

    @property
    def image_size(self) -> int:
        return int(self.config.data.image_size)

    def __call__(self, source: Any) -> np.ndarray:
        """Normalized (B, S, S, C_in) slices in [-1, 1] → normalized output (B, S, S, 1)."""
        array = check_slices(source, self.image_size, channels=self.config.data.input_channels)
        if len(array) == 0:  # the network fails on an empty batch; the answer is known
            return np.zeros((0, self.image_size, self.image_size, 1), np.float32)
        return np.asarray(self.generator(array, training=False), dtype=np.float32)


def is_run_dir(path: str | Path) -> bool:
    from medgan_tf.training.checkpoints import CONFIG_FILE

    return (Path(path) / CONFIG_FILE).is_file()


def load_model(path: str | Path, checkpoint: str | None = None, precision: str | None = None) -> TranslationModel:
    """An export (version or base folder) or a run directory → a model callable on normalized slices.

    precision (`--precision` of translate/evaluate): None or "export" keeps what the model carries
    (an export's compiled precision; float32 for a run directory). For a run directory, "auto" |
    "float32" | "bfloat16" builds the generator in that compute precision (auto: bfloat16 where
    this machine computes it natively). An export's precision is fixed when it is written: asking
    for another one is an error that says how to re-export."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; expected an export (SavedModel, ONNX, OpenVINO, LiteRT) or a run directory")
    if is_export(path):
        return load_export(path, precision)
    if is_run_dir(path):
        from medgan_tf.training import checkpoints
        from medgan_tf.training.build import generator_in_precision
        from medgan_tf.training.runtime import choose_inference_precision

        generator, experiment = checkpoints.load_generator(path, checkpoint)
        if precision not in (None, "export"):
            compute_dtype, reason = choose_inference_precision(precision)
            generator = generator_in_precision(generator, experiment, compute_dtype)
            log.info("running %s in %s (%s)", path, compute_dtype, reason)
        return RunModel(path, experiment, normalization_description(experiment), generator)
    from medgan_tf.serving.formats import FORMATS
    from medgan_tf.serving.runtimes import load_artefact

    if any(row.claims(path) for _, row in FORMATS.items()):
        return load_artefact(path, precision)  # ONNX, OpenVINO, LiteRT
    raise UserError(NOT_A_MODEL.format(path=path))


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A model's folder that `load_model` would load (an export's version folder, or the run
    directory) and its ExperimentConfig, read without the network."""

    path: Path
    config: config_lib.ExperimentConfig


def model_info(path: str | Path, precision: str | None = None) -> ModelInfo:
    """The path and config of the model at `path`, read from its files without loading the network
    (for a driver that hands the model to worker processes, each loading its own), with the checks
    and errors of `load_model`: a missing path, neither an export nor a run, an export's assets or
    precision, a run without a checkpoint."""
    from medgan_tf.serving.formats import FORMATS

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; expected an export or a run directory")
    for _, row in FORMATS.items():  # a SavedModel, or ONNX / OpenVINO / LiteRT with their assets/ beside
        if row.claims(path):  # (first: a run directory's check imports TensorFlow, which a driver may not need)
            version_dir = row.version_dir(path)
            if precision not in (None, "export"):  # (so does the precision check)
                check_export_precision(version_dir, precision)
            return ModelInfo(version_dir, read_assets(version_dir)[0])
    if is_run_dir(path):
        from medgan_tf.training import checkpoints

        checkpoints.resolve_checkpoint(path)
        return ModelInfo(path, checkpoints.read_config(path))
    raise UserError(NOT_A_MODEL.format(path=path))
