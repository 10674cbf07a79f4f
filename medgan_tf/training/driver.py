"""The training driver: a thin loop around `MedGAN.train_step` (Algorithm 1).

It owns what a multi-day run needs and the model must not do: the data position, checkpoints,
TensorBoard, progress, divergence checks and the final `summary.json`. One loop iteration is one
call of the distributed step function, i.e. N_G generator updates and one discriminator update
on one global batch.

Data position: epoch `e` reads the training split shuffled with seed `seed + e`, so the batch at
global step `s` is a pure function of `s`. Resuming at step `s` rebuilds epoch `s // steps_per_epoch`
and skips the batches already consumed, which makes `--resume` continue exactly where the run
stopped (bit-exact in `--deterministic` mode).

Failures end in one UserError that loses no finished step: an epoch's checkpoint precedes its
validation; a damaged shard is named; a full disk keeps the last complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import keras
import tensorflow as tf

from medgan_tf import config as config_lib
from medgan_tf.errors import TrainingDiverged, UserError
from medgan_tf.training import checkpoints
from medgan_tf.training.progress import Progress as _Progress
from medgan_tf.training.progress import image_grid
from medgan_tf.training.runtime import Runtime
from medgan_tf.training import validation
from medgan_tf.training.selection import BestModel

log = logging.getLogger(__name__)

DatasetFn = Callable[[int], tf.data.Dataset]  # epoch → batches of (source, target)


@dataclasses.dataclass
class TrainingData:
    """Where the batches come from: one dataset per epoch, a preview batch for image grids, a validation
    dataset factory, the training split's slice count, and (split, DataLossError) → UserError naming the file."""

    epoch_batches: DatasetFn
    preview_batch: tuple[tf.Tensor, tf.Tensor]
    validation_batches: Callable[[], Iterable] | None
    train_slices: int
    read_error: Callable[[str, Exception], Exception] | None = None


def tfrecord_data(data_dir: Path, experiment: config_lib.ExperimentConfig, global_batch: int) -> TrainingData:
    """Batches from a converted dataset directory (`medgan-tf convert` output)."""
    from medgan_tf.data import dataset as dataset_lib
    from medgan_tf.data.context import check_context, reader_options
    from medgan_tf.data.manifest import check_compatible, split_slices

    train = experiment.train
    manifest = check_compatible(data_dir, task=experiment.task, image_size=experiment.data.image_size, split="train")
    check_context(manifest, experiment.data, data_dir)
    counts = split_slices(manifest)
    train_slices = counts["train"]

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        return dataset_lib.make_dataset(
            data_dir,
            "train",
            global_batch,
            augment=experiment.data.augment,
            max_shift_pixels=experiment.data.max_shift_pixels,
            shuffle=True,
            repeat=True,
            deterministic=train.deterministic,
            seed=train.seed + epoch,
            **reader_options(experiment.data),
        )

    preview_split = "val" if counts.get("val", 0) > 0 else "train"
    try:
        preview = next(iter(dataset_lib.make_dataset(data_dir, preview_split, 4, shuffle=False, deterministic=True,
                                                            **reader_options(experiment.data))))
    except tf.errors.DataLossError as error:
        raise dataset_lib.read_error(data_dir, preview_split, error) from error

    def validation_batches():
        if counts.get("val", 0) == 0:
            return []
        ds = dataset_lib.make_dataset(data_dir, "val", global_batch, shuffle=False, deterministic=True,
                                      **reader_options(experiment.data))
        return ds.take(train.validation_steps) if train.validation_steps else ds

    return TrainingData(epoch_batches, preview, validation_batches, train_slices,
                        lambda split, error: dataset_lib.read_error(data_dir, split, error))


def make_train_step(model, strategy: tf.distribute.Strategy, jit_compile: bool):
    """A tf.function running `model.train_step` on every replica and averaging its logs."""
    return _distributed(model.train_step, strategy, jit_compile)


def make_test_step(model, strategy: tf.distribute.Strategy):
    """A tf.function running `model.test_step` (every loss term and the validation metrics of
    `medgan_tf.metrics`, on the paper's 0–255 scale) on one distributed batch and averaging its
    logs over the replicas."""
    replica_step = tf.function(model.test_step, reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def distributed_step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    return distributed_step


def _distributed(step, strategy: tf.distribute.Strategy, jit_compile: bool):
    replica_step = tf.function(step, jit_compile=jit_compile, reduce_retracing=True)

    @tf.function
    def distributed_step(iterator):
        per_replica = strategy.run(replica_step, args=(next(iterator),))
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    return distributed_step


@dataclasses.dataclass
class _Loop:
    """Where the loop stands, and what it writes along the way."""

    model: object
    store: checkpoints.CheckpointStore
    data: TrainingData
    run_dir: Path
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    step: int
    last_saved: int
    train_writer: object
    validation_writer: object
    selection: BestModel | None = None
    stopped: str | None = None
    last_losses: dict = dataclasses.field(default_factory=dict)
    interval_start: float = dataclasses.field(default_factory=time.perf_counter)
    interval_steps: int = 0

    def save(self, reason: str) -> None:
        if self.last_saved == self.step or self.step == 0:  # nothing trained since the last one
            return
        path = self.store.save()
        self.last_saved = self.step
        log.debug("checkpoint %s (%s)", path, reason)


def train(
    experiment: config_lib.ExperimentConfig,
    run_dir: Path,
    data: TrainingData | None = None,
    *,
    data_dir: Path | None = None,
    runtime: Runtime,
    resume: bool = False,
    restart: bool = False,
    quiet: bool = False,
    log_every: int = 10,
) -> dict:
    """Train `experiment` into `run_dir`; returns the content of `summary.json`.

    Pass either `data_dir` (a converted dataset) or a prepared `TrainingData`. Most callers want
    `medgan_tf.training.train_experiment`, which checks the run and the data first. resume: continue
    from the newest intact checkpoint (none is a UserError); with restart, begin again at step 0.
    """
    run_dir = Path(run_dir)
    train_cfg = experiment.train
    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    global_batch = train_cfg.batch_size * runtime.num_replicas
    if data is None:
        if data_dir is None:
            raise ValueError("train() needs data or data_dir")
        data = tfrecord_data(Path(data_dir), experiment, global_batch)
    steps_per_epoch = train_cfg.steps_per_epoch or max(1, data.train_slices // global_batch)
    resume = resume and not restart
    model, store = _build(experiment, run_dir, runtime, resume)
    if runtime.is_chief:
        checkpoints.write_config(run_dir, experiment)
        writers = (tf.summary.create_file_writer(str(run_dir / "train")),
                   tf.summary.create_file_writer(str(run_dir / "validation")))
    else:
        writers = (tf.summary.create_noop_writer(), tf.summary.create_noop_writer())
    step = int(store.step.numpy())
    loop = _Loop(model, store, data, run_dir, global_batch, steps_per_epoch, train_cfg.epochs * steps_per_epoch,
                 step, step if resume else -1, *writers)
    loop.selection = (BestModel.load(run_dir, train_cfg.select_by, train_cfg.patience) if resume
                      else BestModel(train_cfg.select_by, train_cfg.patience))
    if step >= loop.total_steps:
        log.info("%s is already at step %d of %d: nothing to train", run_dir, step, loop.total_steps)
    started = time.perf_counter()
    try:
        _run_epochs(loop, experiment, runtime, _Progress(loop.total_steps, step, quiet, log_every), log_every)
    except KeyboardInterrupt:
        log.warning("interrupted at step %d: saving a checkpoint before exiting", loop.step)
        loop.save("interrupted")
        raise
    except (OSError, tf.errors.OpError) as error:
        if not checkpoints.is_disk_full(error):
            raise
        raise checkpoints.disk_full_error(run_dir, error) from error
    finally:
        _flush(loop)
    summary = _summary(loop, step, time.perf_counter() - started)
    if runtime.is_chief:
        checkpoints.write_json_atomic(run_dir / checkpoints.SUMMARY_FILE, summary)
    return summary


def _build(experiment: config_lib.ExperimentConfig, run_dir: Path, runtime: Runtime, resume: bool):
    """The compiled model and its checkpoint store (restored when resuming), under the strategy."""
    from medgan_tf.training.build import build_model

    train_cfg = experiment.train
    with runtime.strategy.scope():
        model = build_model(experiment, vgg_weights=train_cfg.vgg_weights, jit_compile=runtime.jit_compile)
        for optimizer, network in (
            (model.generator_optimizer, model.generator),
            (model.discriminator_optimizer, model.discriminator),
        ):
            if not optimizer.built:
                optimizer.build(network.trainable_variables)
        store = checkpoints.CheckpointStore(
            run_dir,
            generator=model.generator,
            discriminator=model.discriminator,
            generator_optimizer=model.generator_optimizer,
            discriminator_optimizer=model.discriminator_optimizer,
            keep=train_cfg.keep_checkpoints,
            is_chief=runtime.is_chief,
            worker_index=runtime.worker_index,
        )
    if resume and store.restore_latest() is None:
        raise UserError(f"{run_dir} has no intact checkpoint to resume from (see the warnings above); to train it "
                        f"again from step 0 on purpose, add --restart")
    return model, store


def _run_epochs(loop: _Loop, experiment: config_lib.ExperimentConfig, runtime: Runtime, progress: _Progress,
                log_every: int) -> None:
    """Epochs from the current step to the end: Algorithm 1 steps, summaries, checkpoints, and
    validation plus a checkpoint at each epoch end (or every `validate_every_steps` steps)."""
    strategy = runtime.strategy
    step_fn = make_train_step(loop.model, strategy, runtime.jit_compile)
    test_fn = make_test_step(loop.model, strategy)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    every = experiment.train.validate_every_steps
    while loop.step < loop.total_steps:
        epoch, offset = divmod(loop.step, loop.steps_per_epoch)
        loop.model.reset_metrics()  # logged losses are running means over the (rest of the) epoch
        batches = loop.data.epoch_batches(epoch).take(loop.steps_per_epoch).skip(offset)
        iterator = iter(strategy.experimental_distribute_dataset(batches.with_options(options)))
        try:
            for _ in range(loop.steps_per_epoch - offset):
                values = _checked({name: float(value) for name, value in step_fn(iterator).items()}, loop)
                loop.step += 1
                loop.store.step.assign(loop.step)
                loop.last_losses = values
                loop.interval_steps += 1
                _write_step_summaries(loop, values, experiment.train.image_summary_every_steps, log_every)
                progress.update(loop.step, values)
                if loop.step % experiment.train.checkpoint_every_steps == 0:
                    loop.save("interval")
                if every and validation.due(loop.step, every, loop.total_steps) and _validate_and_select(
                        loop, test_fn, strategy, options, loop.step // loop.steps_per_epoch):
                    return
        except tf.errors.DataLossError as error:
            loop.save("damaged training data")  # the steps before the damaged record are sound
            raise _data_error(loop, "train", error) from error
        loop.store.epoch.assign(epoch + 1)
        loop.save("end of epoch")  # before validation, so a failing validation cannot cost the epoch
        if not every and _validate_and_select(loop, test_fn, strategy, options, epoch + 1):
            break


def _validate_and_select(loop: _Loop, test_fn, strategy, options, epoch: int) -> bool:
    """Checkpoint, score the val split, keep the best; True when early stopping ends the run."""
    loop.save("validation")  # before validation, so a failing validation cannot cost the steps
    try:
        values = validation.validate(loop, test_fn, strategy, options, epoch)
    except tf.errors.DataLossError as error:
        raise _data_error(loop, "val", error) from error
    return bool(values) and validation.select(loop, epoch, values)


def _data_error(loop: _Loop, split: str, error: Exception) -> Exception:
    """A damaged `split` named by the data's `read_error`, plus where training stopped and how to go on."""
    named = loop.data.read_error(split, error) if loop.data.read_error else error
    kept = checkpoints.latest_checkpoint(loop.run_dir) or "none written yet"
    return UserError(f"{named}. Training stopped at step {loop.step}; every finished step is in the checkpoint "
                     f"{kept}. Once the data is fixed, continue with --resume {loop.run_dir} (add --data-changed "
                     f"if the dataset was converted again)")


def _flush(loop: _Loop) -> None:
    """Flush the TensorBoard writers; a failure (a full disk) is only logged, not to hide the error on its way."""
    for writer in (loop.train_writer, loop.validation_writer):
        try:
            writer.flush()
        except (OSError, tf.errors.OpError) as error:
            log.warning("could not flush TensorBoard events in %s: %s", loop.run_dir, error)


def _checked(values: dict[str, float], loop: _Loop) -> dict[str, float]:
    """`values` when every one is finite; TrainingDiverged (nothing saved for this step) otherwise."""
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        kept = checkpoints.latest_checkpoint(loop.run_dir) or "none written yet"
        raise TrainingDiverged(
            f"training diverged at step {loop.step + 1}: {', '.join(f'{n}={values[n]}' for n in bad)}. "
            f"No checkpoint was written for this step; the last good one is intact ({kept}). "
            f"Lower the learning rates or check the data, then continue with --resume {loop.run_dir}."
        )
    return values


def _write_step_summaries(loop: _Loop, values: dict[str, float], image_every: int, log_every: int) -> None:
    step, model = loop.step, loop.model
    with loop.train_writer.as_default(step=step):
        if step == 1 or step % log_every == 0 or step == loop.total_steps:
            for name, value in values.items():
                tf.summary.scalar(f"losses/{name}" if name not in ("d_real", "d_fake") else name, value)
            tf.summary.scalar("learning_rate/generator", _value(model.generator_optimizer.learning_rate))
            tf.summary.scalar("learning_rate/discriminator", _value(model.discriminator_optimizer.learning_rate))
            now = time.perf_counter()
            tf.summary.scalar("slices_per_second", loop.interval_steps * loop.global_batch / (now - loop.interval_start))
            loop.interval_start, loop.interval_steps = now, 0
        if step == 1 or step % image_every == 0 or step == loop.total_steps:
            source, target = loop.data.preview_batch
            output = model.generator(source, training=False)
            tf.summary.image("source|output|target|error", image_grid(source, output, target, model.source_centre),
                             max_outputs=int(source.shape[0]))


def _summary(loop: _Loop, start_step: int, elapsed: float) -> dict:
    model, step = loop.model, loop.step
    return {
        "step": step,
        "epoch": int(loop.store.epoch.numpy()),
        "total_steps": loop.total_steps,
        "steps_per_epoch": loop.steps_per_epoch,
        "global_batch_size": loop.global_batch,
        "generator_updates": int(_value(model.generator_optimizer.iterations)),
        "discriminator_updates": int(_value(model.discriminator_optimizer.iterations)),
        "last_losses": loop.last_losses,
        "slices_per_second": (step - start_step) * loop.global_batch / elapsed if step > start_step else None,
        "wall_seconds_this_session": elapsed,
        "checkpoint": checkpoints.latest_checkpoint(loop.run_dir),
        "best_checkpoint": checkpoints.best_checkpoint(loop.run_dir),
        "best": loop.selection.best if loop.selection else None,
        "validation_curve": loop.selection.curve if loop.selection else [],
        "stopped_early": loop.stopped,
    }


def _value(variable) -> float:
    """A scalar variable's value as a Python number, also for (Keras-wrapped) MirroredVariables."""
    return float(tf.convert_to_tensor(getattr(variable, "value", variable)).numpy())
