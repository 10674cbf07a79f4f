"""The slices an int8 export is calibrated on and checked with (`export --precision int8 --calibration`).

`calibration_slices(path, experiment)` draws `CALIBRATION_SLICES + GATE_SLICES` source slices,
seeded, from a model's training records and splits them: the first `CALIBRATION_SLICES` set the
int8 ranges, the other `GATE_SLICES` (never seen by the calibration) are what the accuracy gate of
`medgan_tf.serving.quantize` compares the int8 artefact on. `path` is either a converted dataset
(`medgan-tf convert` output, with manifest.json: its train split, read by the training input
pipeline `data.dataset.make_dataset` with the model's window) or TFRecord files of that schema
(a .tfrecord / .tfrecord.gz file, or a folder of them, e.g. DIR/train). The slices are normalized
float32 (N, S, S, C_in) in [-1, 1], the generator's input.

`phantom_calibration(experiment)` draws the same from the built-in phantom of the task (synthetic
patients, prepared as the converter prepares a pair): the bench's calibration, which has no records.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from medgan_tf.errors import UserError

CALIBRATION_SLICES = 100  # slices the int8 ranges are calibrated on
GATE_SLICES = 20          # further slices, held out of the calibration, the accuracy gate runs on
CALIBRATION_SEED = 0
SHUFFLE_BUFFER = 512      # records the draw picks from (the training pipeline's default shuffle)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Calibration slices, the held-out gate slices, and where they came from (for precision.json)."""

    slices: np.ndarray
    held_out: np.ndarray
    source: str
    seed: int = CALIBRATION_SEED

    def describe(self) -> dict:
        return {"source": self.source, "slices": int(len(self.slices)), "held_out_slices": int(len(self.held_out)),
                "seed": int(self.seed)}


def split_draw(drawn: np.ndarray, source: str, seed: int, count: int, held_out: int) -> Calibration:
    """The drawn slices → `count` to calibrate on and the rest (≤ `held_out`) to check with; with
    fewer than count + held_out drawn, the held-out share shrinks in proportion (at least one)."""
    total = len(drawn)
    if total < 2:
        raise UserError(f"{source}: {total} slice(s) found; int8 calibration needs at least 2 (one to calibrate "
                        "on, one held out for the accuracy gate): give the model's training records")
    gate = held_out if total >= count + held_out else max(1, round(total * held_out / (count + held_out)))
    return Calibration(slices=drawn[: total - gate][:count], held_out=drawn[total - gate:][:held_out], source=source,
                       seed=seed)


def calibration_slices(path: str | Path, experiment, count: int = CALIBRATION_SLICES, held_out: int = GATE_SLICES,
                       seed: int = CALIBRATION_SEED) -> Calibration:
    """`count` calibration and `held_out` gate slices drawn (seeded) from the records at `path`
    (module doc); a UserError naming what was expected for anything else."""
    from medgan_tf.data.manifest import MANIFEST

    path = Path(path)
    if not path.exists():
        raise UserError(f"--calibration {path} does not exist; give the model's training data (a `medgan-tf convert` "
                        "output folder) or its TFRecord files")
    if path.is_dir() and not (path / MANIFEST).is_file() and (path.parent / MANIFEST).is_file():
        path = path.parent  # DIR/train of a converted dataset: read it as the dataset
    if path.is_dir() and (path / MANIFEST).is_file():
        drawn = _from_dataset(path, experiment, count + held_out, seed)
    else:
        drawn = _from_files(_record_files(path), experiment, count + held_out, seed)
    size, channels = int(experiment.data.image_size), int(experiment.data.input_channels)
    if drawn.shape[1:] != (size, size, channels):
        raise UserError(f"--calibration {path} holds slices of {drawn.shape[1:]}; the model takes ({size}, {size}, "
                        f"{channels}): give the records the model was trained on")
    return split_draw(drawn, str(path), seed, count, held_out)


def _from_dataset(data_dir: Path, experiment, total: int, seed: int) -> np.ndarray:
    """`total` source windows of the train split, shuffled by the training pipeline with `seed`."""
    import tensorflow as tf

    from medgan_tf.data import dataset
    from medgan_tf.data.context import check_context, reader_options
    from medgan_tf.data.manifest import check_compatible

    manifest = check_compatible(data_dir, task=experiment.task, image_size=experiment.data.image_size, split="train")
    check_context(manifest, experiment.data, data_dir)
    batches = dataset.make_dataset(data_dir, "train", total, shuffle=True, deterministic=True, seed=seed,
                                   shuffle_buffer=SHUFFLE_BUFFER, **reader_options(experiment.data))
    try:
        source, _target = next(iter(batches))
    except tf.errors.DataLossError as error:
        raise dataset.read_error(data_dir, "train", error) from error
    except StopIteration:
        raise UserError(f"{data_dir}: its train split holds no records") from None
    return np.asarray(source, np.float32)


def _record_files(path: Path) -> list[Path]:
    suffixes = (".tfrecord", ".tfrecord.gz")
    found = sorted(p for p in path.iterdir() if p.name.endswith(suffixes)) if path.is_dir() else [path]
    if not found or not all(p.name.endswith(suffixes) for p in found):
        raise UserError(f"--calibration {path}: expected a converted dataset (with manifest.json), a .tfrecord(.gz) "
                        "file or a folder of them (`medgan-tf convert` output)")
    return found


def _from_files(found: list[Path], experiment, total: int, seed: int) -> np.ndarray:
    """`total` source windows drawn (seeded shuffle) from TFRecord files of the converter's schema."""
    import tensorflow as tf

    from medgan_tf.data.context import record_window
    from medgan_tf.data.schema import parse_example_numpy

    windows = []
    for path in found:
        compression = "GZIP" if path.read_bytes()[:2] == b"\x1f\x8b" else ""
        records = tf.data.TFRecordDataset(str(path), compression_type=compression)
        try:
            for serialized in records.shuffle(SHUFFLE_BUFFER, seed=seed).take(total).as_numpy_iterator():
                windows.append(record_window(parse_example_numpy(serialized), experiment.data))
        except (tf.errors.DataLossError, KeyError, ValueError) as error:
            raise UserError(f"--calibration {path} is no readable record file of `medgan-tf convert` "
                            f"({type(error).__name__}: {' '.join(str(error).split())[:200]})") from error
    if not windows:
        raise UserError(f"--calibration: {', '.join(map(str, found))} hold(s) no records")
    order = np.random.default_rng(seed).permutation(len(windows))[:total]
    return np.stack([windows[i] for i in order]).astype(np.float32)


def phantom_calibration(experiment, count: int = CALIBRATION_SLICES, held_out: int = GATE_SLICES,
                        seed: int = CALIBRATION_SEED) -> Calibration:
    """Calibration and gate slices from synthetic patients of the task's built-in phantom, each
    volume prepared as the converter prepares training records (slices with signal only)."""
    from medgan_tf.data.preparation import prepare
    from medgan_tf.data.synthetic import patient_rng, phantom_of, synthesize_pair

    phantom, windows = phantom_of(experiment.task), []
    for patient in range(64):
        source, _target, _ = synthesize_pair(phantom, patient_rng(phantom, seed, patient))
        prepared = prepare(source, experiment.data)  # the converter's grid: what training records hold
        stack = np.moveaxis(np.take(prepared.inputs(), prepared.keep, axis=2), 2, 0)
        stack = stack[..., None] if stack.ndim == 3 else stack
        windows.extend(s for s in stack if s.std() > 0)
        if len(windows) >= 2 * (count + held_out):
            break
    order = np.random.default_rng(seed).permutation(len(windows))[: count + held_out]
    drawn = np.stack([windows[i] for i in order]).astype(np.float32)
    return split_draw(drawn, f"built-in {phantom} phantom (synthetic patients, seed {seed})", seed, count, held_out)
