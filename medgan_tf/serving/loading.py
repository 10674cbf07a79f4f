"""Loading a trained generator for inference: an export or a run directory, one interface.

`load_model(path)` accepts an export (`medgan-tf export` output: a version folder or its base
folder) or a run directory (the generator restored from a checkpoint). Both give a
`TranslationModel`: callable on normalized slices, with the run's config and the normalization
description, so translation and evaluation do not care which one they got.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medgan_tf import config as config_lib
from medgan_tf.errors import UserError
from medgan_tf.serving.signatures import (
    CONFIG_ASSET,
    INPUT_NAME,
    NORMALIZATION_ASSET,
    OUTPUT_NAME,
    PHYSICAL_SIGNATURE,
    SERVING_SIGNATURE,
    normalization_description,
)


@runtime_checkable
class TranslationModel(Protocol):
    """What translation and evaluation need from a trained generator.

    path:          where it was loaded from.
    config:        the run's ExperimentConfig.
    normalization: the normalization description (`signatures.normalization_description`).
    image_size:    S; calling the model maps normalized float32 (B, S, S, 1) slices in [-1, 1]
                   to the normalized output of the same shape.
    """

    path: Path
    config: config_lib.ExperimentConfig
    normalization: dict[str, Any]

    @property
    def image_size(self) -> int: ...

    def __call__(self, source: Any) -> np.ndarray: ...


def resolve_export_dir(path: str | Path) -> Path:
    """A version folder (holding saved_model.pb) from itself or from its model base folder
    (then the highest numeric version, as TF Serving would serve)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if path.is_dir():
        versions = sorted(
            (int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file())
        )
        if versions:
            return path / str(versions[-1])
    raise UserError(
        f"{path} is not a medgan-tf export; expected a folder with saved_model.pb or numeric version "
        "folders holding one (the output of `medgan-tf export`)"
    )


def is_export(path: str | Path) -> bool:
    try:
        resolve_export_dir(path)
    except UserError:
        return False
    return True


def check_slices(images: Any, size: int, name: str = INPUT_NAME) -> np.ndarray:
    """`images` as float32 (B, S, S, 1) with B ≥ 1, or a UserError naming the expected shape."""
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1:] != (size, size, 1) or array.shape[0] < 1:
        raise UserError(f"{name}: expected float32 (batch, {size}, {size}, 1); received shape {array.shape}")
    return array


@dataclasses.dataclass
class ExportedModel:
    """A loaded export. Call it like a function on normalized slices.

    path:          the version folder that was loaded.
    config:        the run's ExperimentConfig (assets/config.json).
    normalization: assets/normalization.json (see `normalization_description`).
    image_size:    S; every image argument is float32 (B, S, S, 1).
    """

    path: Path
    config: config_lib.ExperimentConfig
    normalization: dict[str, Any]
    loaded: Any = dataclasses.field(repr=False)

    @property
    def image_size(self) -> int:
        return int(self.normalization["image_size"])

    @property
    def signatures(self) -> dict[str, Any]:
        return dict(self.loaded.signatures)

    def _check(self, images: Any, name: str = INPUT_NAME) -> np.ndarray:
        return check_slices(images, self.image_size, name)

    def __call__(self, source: Any) -> np.ndarray:
        """Normalized (B, S, S, 1) slices in [-1, 1] → normalized output (B, S, S, 1) (serving_default)."""
        array = self._check(source)
        return self.loaded.signatures[SERVING_SIGNATURE](**{INPUT_NAME: array})[OUTPUT_NAME].numpy()

    def predict(self, source: Any, batch_size: int = 8) -> np.ndarray:
        """`__call__` over a stack of any length, `batch_size` slices at a time."""
        array = self._check(source)
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
            feeds[name] = np.broadcast_to(np.asarray(parameters[name], dtype=np.float32), (len(array),)).copy()
        return self.loaded.signatures[PHYSICAL_SIGNATURE](**feeds)[OUTPUT_NAME].numpy()


def load_export(path: str | Path) -> ExportedModel:
    """Load an export (a version folder, or its base folder → the highest version)."""
    import tensorflow as tf

    version_dir = resolve_export_dir(path)
    assets = version_dir / "assets"
    try:
        experiment = config_lib.experiment_from_json((assets / CONFIG_ASSET).read_text())
        description = json.loads((assets / NORMALIZATION_ASSET).read_text())
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{version_dir}: cannot read the export's assets ({error}); expected {CONFIG_ASSET} and {NORMALIZATION_ASSET}") from error
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
        """Normalized (B, S, S, 1) slices in [-1, 1] → normalized output (B, S, S, 1)."""
        array = check_slices(source, self.image_size)
        return np.asarray(self.generator(array, training=False), dtype=np.float32)


def is_run_dir(path: str | Path) -> bool:
    from medgan_tf.training.checkpoints import CONFIG_FILE

    return (Path(path) / CONFIG_FILE).is_file()


def load_model(path: str | Path, checkpoint: str | None = None) -> TranslationModel:
    """An export (version or base folder) or a run directory → a model callable on normalized slices."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; expected a SavedModel export or a run directory")
    if is_export(path):
        return load_export(path)
    if is_run_dir(path):
        from medgan_tf.training import checkpoints

        generator, experiment = checkpoints.load_generator(path, checkpoint)
        return RunModel(path, experiment, normalization_description(experiment), generator)
    raise UserError(
        f"{path} is neither a SavedModel export (saved_model.pb, or numeric version folders with one) "
        "nor a run directory (config.json + checkpoints/)"
    )
