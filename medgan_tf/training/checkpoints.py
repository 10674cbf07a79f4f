"""Run directories and checkpoints that survive being killed.

A run directory holds:

    RUN/config.json          resolved ExperimentConfig (written once, before training starts)
    RUN/checkpoints/         ckpt-<step>.{index,data-*} + the `checkpoint` state file
    RUN/train/, RUN/validation/   TensorBoard event files
    RUN/summary.json         final step, optimizer update counts, last losses (written at the end)

A checkpoint holds generator, discriminator (incl. the spectral-norm power-iteration vectors),
both optimizers, the global step and the epoch. TensorFlow writes the data files first (into a
`ckpt-<step>_temp/` folder, merged into place afterwards) and replaces the `checkpoint` state file
atomically last, so a process killed while saving leaves the state pointing at the last complete
checkpoint, which `--resume` then uses. A save that fails (a full disk) removes what it had
written and ends in one UserError; the leftovers of a killed save are removed when a run starts.
A checkpoint damaged afterwards (a truncated data file, a deleted index) is named on resume, which
continues from the newest intact one; a garbled state file is an error naming it.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import tensorflow as tf

from medgan_tf import config as config_lib
from medgan_tf import files
from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"  # RUN/checkpoints/best/: the checkpoint with the best validation metric


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file.

    A failed write (a full disk, no permission) leaves the previous file as it was, removes the
    temporary one and raises a UserError naming `path`."""
    path = Path(path)
    try:
        files.write_json_atomic(path, payload, indent=2, sort_keys=True, default=str)
    except OSError as error:
        raise UserError(f"could not write {path}: {write_failure_reason(error)}; the previous version (if any) "
                        f"is unchanged. Free space there (or fix its permissions) and run the command again") from error


def write_failure_reason(error: BaseException) -> str:
    """The operating system's words for a failed write, without TensorFlow's op decoration."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    message = getattr(error, "message", None) or str(error)
    return message.split(" [Op:", 1)[0].strip() or type(error).__name__


def is_disk_full(error: BaseException) -> bool:
    """Whether a write failed for want of space (or a read-only file system) rather than a bug."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    message = str(error)
    return any(text in message for text in ("No space left on device", "Disk quota exceeded", "Read-only file system"))


def disk_full_error(run_dir: Path, error: BaseException) -> UserError:
    """The UserError for a write into `run_dir` that failed for want of space (e.g. TensorBoard events)."""
    kept = latest_checkpoint(run_dir) or "none written yet"
    return UserError(f"could not write to {run_dir}: {write_failure_reason(error)}. The last complete checkpoint is "
                     f"intact ({kept}); free space on that disk, then continue with --resume {run_dir}")


def write_config(run_dir: Path, experiment: config_lib.ExperimentConfig) -> None:
    write_json_atomic(Path(run_dir) / CONFIG_FILE, config_lib.to_dict(experiment))


def read_config(run_dir: Path) -> config_lib.ExperimentConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a medgan-tf run directory (no {CONFIG_FILE})")
    try:
        return config_lib.from_dict(config_lib.ExperimentConfig, json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise UserError(f"{path}: cannot read the run's config: {error}") from error


def latest_checkpoint(run_dir: Path) -> str | None:
    return tf.train.latest_checkpoint(str(Path(run_dir) / CHECKPOINT_DIR))


class CheckpointStore:
    """Saves and restores everything needed to continue a run exactly."""

    def __init__(
        self,
        run_dir: Path,
        *,
        generator,
        discriminator,
        generator_optimizer,
        discriminator_optimizer,
        keep: int,
        is_chief: bool = True,
        worker_index: int = 0,
    ) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(
            generator=generator,
            discriminator=discriminator,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=discriminator_optimizer,
            step=self.step,
            epoch=self.epoch,
        )
        self.directory = Path(run_dir) / CHECKPOINT_DIR
        # Every multi-worker process must take part in saving; only the chief's copy is kept.
        self._is_chief = is_chief
        write_dir = self.directory if is_chief else Path(run_dir) / f".worker-{worker_index}-checkpoints"
        self._write_dir = write_dir
        if is_chief:  # a save killed mid-way (SIGKILL, power loss) leaves its staging folder behind
            remove_leftovers(self.directory)
            remove_leftovers(self.directory / BEST_DIR)
            for folder in (self.directory, self.directory / BEST_DIR):
                read_state(folder)  # TensorFlow's manager would fail on a garbled one with a traceback
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(write_dir), max_to_keep=keep, step_counter=self.step
        )
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, str(write_dir / BEST_DIR), max_to_keep=1, step_counter=self.step
        )

    @property
    def is_chief(self) -> bool:
        return self._is_chief

    def save_best(self) -> str:
        """Replace RUN/checkpoints/best/ with a checkpoint of the current step (model selection)."""
        return self._save(self.best_manager, self._write_dir / BEST_DIR, "the best checkpoint")

    def restore_latest(self) -> str | None:
        """Restore the newest intact checkpoint of the run; None when there is none. Newer damaged
        ones are named in a warning (they stay on disk: the next saves replace them)."""
        path, damaged = newest_intact(self.directory)
        for name, reason in damaged:
            log.warning("checkpoint %s is damaged (%s)", self.directory / name, reason)
        if path is None:
            return None
        self.checkpoint.restore(path).assert_existing_objects_matched()
        if damaged:
            log.warning("resuming from %s, the newest intact checkpoint", path)
        log.info("restored %s (step %d, epoch %d)", path, int(self.step.numpy()), int(self.epoch.numpy()))
        return path

    def save(self) -> str:
        """Write checkpoint ckpt-<step>; a failed write (OSError or a TensorFlow write error, e.g.
        a full disk) removes that checkpoint's files and raises a UserError naming the folder,
        leaving the earlier checkpoints and the `checkpoint` state file as they were."""
        return self._save(self.manager, self._write_dir, "checkpoint")

    def _save(self, manager, folder: Path, what: str) -> str:
        number = int(self.step.numpy())
        try:
            path = manager.save(checkpoint_number=number)
        except (OSError, tf.errors.OpError) as error:
            remove_unrecorded(folder, number)
            kept = tf.train.latest_checkpoint(str(self.directory)) or "none written yet"
            raise UserError(
                f"could not write {what} ckpt-{number} in {folder}: {write_failure_reason(error)}. "
                f"Its partial files were removed; the earlier checkpoints are intact (last: {kept}). Free space "
                f"on that disk, then continue with --resume {self.directory.parent}"
            ) from error
        if not self._is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
        return path


def read_state(directory: Path) -> list[str]:
    """The checkpoint prefixes the `checkpoint` state file of `directory` records, oldest first
    ([] without a state file). A state file that is not TensorFlow's text format (garbled bytes,
    a cut line) is a UserError naming it: TensorFlow would ignore it and start over at step 0."""
    path = Path(directory) / "checkpoint"
    if not path.exists():
        return []
    tf_log = tf.get_logger()
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)  # TensorFlow logs its parse error before returning None
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except (ValueError, OSError, tf.errors.OpError) as error:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path}: the checkpoint state file is garbled ({type(error).__name__}); restore it from a "
                        f"backup, or start the run again from step 0 with --resume {Path(directory).parent} --restart") from None
    finally:
        tf_log.setLevel(level)
    if state is None:
        raise UserError(f"{path}: the checkpoint state file is garbled (not TensorFlow's checkpoint state); restore it "
                        f"from a backup, or start the run again from step 0 with --resume {Path(directory).parent} --restart")
    recorded = [*state.all_model_checkpoint_paths]
    if state.model_checkpoint_path and state.model_checkpoint_path not in recorded:
        recorded.append(state.model_checkpoint_path)
    return [str(Path(directory) / Path(prefix).name) for prefix in recorded]


def newest_intact(directory: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """(the newest recorded checkpoint whose files are complete, or None; the newer ones found
    damaged as (name, reason)). Complete: its index and every data file it lists can be read."""
    damaged = []
    for prefix in sorted(read_state(directory), key=_step_of, reverse=True):
        reason = damage_of(prefix)
        if reason is None:
            return prefix, damaged
        damaged.append((Path(prefix).name, reason))
    return None, damaged


def damage_of(prefix: str) -> str | None:
    """Why checkpoint `prefix` cannot be restored (a missing index or data file, a short read),
    or None when every tensor it holds reads back."""
    if not Path(prefix + ".index").is_file():
        return f"{Path(prefix).name}.index is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError) as error:
        detail = (getattr(error, "message", None) or str(error)).split("\n", 1)[0].split(" [Op:", 1)[0]
        return f"its files cannot be read: {detail[:200]}"
    return None


def _step_of(prefix: str) -> int:
    number = Path(prefix).name.rsplit("-", 1)[-1]
    return int(number) if number.isdigit() else -1


def remove_leftovers(directory: Path) -> list[Path]:
    """Remove what killed or failed saves left in a checkpoint folder: `ckpt-<n>_temp*` folders
    (TensorFlow's staging area) and `checkpoint.tmp*` state files. Returns what was removed."""
    directory = Path(directory)
    removed = sorted([*directory.glob("*_temp*"), *directory.glob("checkpoint.tmp*")])
    _remove(removed)
    if removed:
        log.warning("removed %d leftover(s) of an unfinished checkpoint save in %s: %s", len(removed), directory,
                    ", ".join(p.name for p in removed))
    return removed


def remove_unrecorded(directory: Path, number: int) -> None:
    """After a failed save of ckpt-<number>: remove its staging folder and, unless the state file
    already records it, its merged files (a checkpoint the state never names is never resumed)."""
    directory = Path(directory)
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except (OSError, tf.errors.OpError, ValueError):
        state = None
    recorded = {Path(p).name for p in (state.all_model_checkpoint_paths if state else [])}
    doomed = [*directory.glob(f"ckpt-{number}_temp*"), *directory.glob("checkpoint.tmp*")]
    if f"ckpt-{number}" not in recorded:
        doomed += [*directory.glob(f"ckpt-{number}.index"), *directory.glob(f"ckpt-{number}.data-*")]
    _remove(doomed)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def best_checkpoint(run_dir: Path) -> str | None:
    """The run's best checkpoint by its validation metric (None before the first validation)."""
    return tf.train.latest_checkpoint(str(Path(run_dir) / CHECKPOINT_DIR / BEST_DIR))


def resolve_checkpoint(run_dir: Path, checkpoint: str | None = None) -> str:
    """The checkpoint prefix `checkpoint` names: None or "latest" → the newest; "best" → the best
    by validation; a step number → ckpt-<step>; anything else is taken as a prefix."""
    run_dir = Path(run_dir)
    if checkpoint in (None, "latest"):
        path = latest_checkpoint(run_dir)
    elif checkpoint == "best":
        path = best_checkpoint(run_dir)
        if path is None:
            raise UserError(f"{run_dir} has no best checkpoint (it has not validated yet); use --checkpoint latest")
    elif str(checkpoint).isdigit():
        path = str(run_dir / CHECKPOINT_DIR / f"ckpt-{int(checkpoint)}")
        if not Path(path + ".index").is_file():
            kept = sorted(p.name[: -len(".index")] for p in (run_dir / CHECKPOINT_DIR).glob("ckpt-*.index"))
            raise UserError(f"{run_dir} has no checkpoint at step {checkpoint}; kept: {', '.join(kept) or 'none'}")
    else:
        path = str(checkpoint)
    if path is None:
        raise UserError(f"{run_dir} has no checkpoint yet: train it first")
    return path


def load_generator(run_dir: Path, checkpoint: str | None = None):
    """(generator with the weights of the run's `checkpoint` — see `resolve_checkpoint`, default
    the latest — , the run's ExperimentConfig)."""
    from medgan_tf import presets

    experiment = read_config(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    try:
        generator = presets.recipe_of(experiment).generator(experiment)
    except KeyError as error:
        raise UserError(f"{run_dir}: {str(error).strip(chr(34) + chr(39))}") from None
    status = tf.train.Checkpoint(generator=generator).restore(path)
    status.assert_existing_objects_matched()
    status.expect_partial()  # the discriminator and optimizers are not needed here
    return generator, experiment
