"""The training driver: a thin loop around `MedGAN.train_step` (Algorithm 1).

It owns what a multi-day run needs and the model must not do: the data position, checkpoints,
TensorBoard, progress, divergence checks and the final `summary.json`. One loop iteration is one
call of the distributed step function, i.e. N_G generator updates and one discriminator update
on one global batch.

Data position: epoch `e` reads the training split shuffled with seed `seed + e`, so the batch at
global step `s` is a pure function of `s`. Resuming at step `s` rebuilds epoch `s // steps_per_epoch`
and skips the batches already consumed, which makes `--resume` continue exactly where the run
stopped (bit-exact in `--deterministic` mode).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from medgan_tf import config as config_lib
from medgan_tf.errors import TrainingDiverged, UserError
from medgan_tf.training import checkpoints
from medgan_tf.training.runtime import Runtime

log = logging.getLogger(__name__)

# Fields that may change between a run and its `--resume` without changing what is trained.
RESUMABLE_FIELDS = (
    "train.epochs",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.image_summary_every_steps",
    "train.validation_steps",
    "train.xla",
    "train.mixed_precision",
    "train.strategy",
)

DatasetFn = Callable[[int], tf.data.Dataset]  # epoch → batches of (source, target)


@dataclasses.dataclass
class TrainingData:
    """Where the batches come from: one dataset per epoch, a preview batch for image grids,
    a validation dataset factory, and how many slices the training split holds."""

    epoch_batches: DatasetFn
    preview_batch: tuple[tf.Tensor, tf.Tensor]
    validation_batches: Callable[[], Iterable] | None
    train_slices: int


def incompatible_fields(saved: config_lib.ExperimentConfig, requested: config_lib.ExperimentConfig) -> dict:
    """Dotted field → (run's value, requested value) for differences that forbid `--resume`."""
    return {k: v for k, v in config_lib.diff(saved, requested).items() if k not in RESUMABLE_FIELDS}


def tfrecord_data(data_dir: Path, experiment: config_lib.ExperimentConfig, global_batch: int) -> TrainingData:
    """Batches from a converted dataset directory (`medgan-tf convert` output)."""
    from medgan_tf.data import dataset as dataset_lib

    train = experiment.train
    manifest = dataset_lib.read_manifest(data_dir)
    counts = {split: int(entry.get("slices", 0)) for split, entry in manifest.get("counts", {}).items()}
    train_slices = counts.get("train", 0)
    if train_slices == 0:
        raise UserError(f"{data_dir}: the training split holds no slices (see {data_dir}/manifest.json)")

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
        )

    preview_split = "val" if counts.get("val", 0) > 0 else "train"
    preview = next(iter(dataset_lib.make_dataset(data_dir, preview_split, 4, shuffle=False, deterministic=True)))

    def validation_batches():
        if counts.get("val", 0) == 0:
            return []
        ds = dataset_lib.make_dataset(data_dir, "val", global_batch, shuffle=False, deterministic=True)
        return ds.take(train.validation_steps) if train.validation_steps else ds

    return TrainingData(epoch_batches, preview, validation_batches, train_slices)


def make_train_step(model, strategy: tf.distribute.Strategy, jit_compile: bool):
    """A tf.function running `model.train_step` on every replica and averaging its logs."""
    replica_step = tf.function(model.train_step, jit_compile=jit_compile, reduce_retracing=True)

    @tf.function
    def distributed_step(iterator):
        per_replica = strategy.run(replica_step, args=(next(iterator),))
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    return distributed_step


def make_validation_step(generator):
    @tf.function
    def validation_step(source, target):
        output = tf.cast(generator(source, training=False), tf.float32)
        # [-1, 1] → [0, 1] so SSIM/PSNR use their documented max_val of 1.
        unit_out, unit_target = (output + 1.0) / 2.0, (target + 1.0) / 2.0
        return {
            "ssim": tf.reduce_mean(tf.image.ssim(unit_out, unit_target, max_val=1.0)),
            "psnr": tf.reduce_mean(tf.image.psnr(unit_out, unit_target, max_val=1.0)),
            "l1": tf.reduce_mean(tf.abs(output - target)),
        }

    return validation_step


def image_grid(source, output, target) -> tf.Tensor:
    """(K, S, 4·S, 1) rows of source | output | target | |error|, all mapped to [0, 1]."""
    output = tf.cast(output, tf.float32)
    panels = [(source + 1.0) / 2.0, (output + 1.0) / 2.0, (target + 1.0) / 2.0, tf.abs(output - target) / 2.0]
    return tf.clip_by_value(tf.concat(panels, axis=2), 0.0, 1.0)


_SHOWN_LOGS = ("generator_total", "discriminator_loss", "d_real", "d_fake")


class _Progress:
    """A Keras progress bar with ETA, or plain log lines with `--quiet`."""

    def __init__(self, total_steps: int, start_step: int, quiet: bool, log_every: int) -> None:
        self.quiet, self.log_every, self.total = quiet, log_every, total_steps
        self.start_step, self.start_time = start_step, time.perf_counter()
        # The logs are already running means (MedGAN's trackers), so the bar must not average again.
        self.bar = None if quiet else keras.utils.Progbar(total_steps, stateful_metrics=_SHOWN_LOGS, unit_name="step")
        if self.bar is not None and start_step:
            self.bar.update(start_step)

    def update(self, step: int, values: dict[str, float]) -> None:
        shown = {k: v for k, v in values.items() if k in _SHOWN_LOGS}
        if self.bar is not None:
            self.bar.update(step, values=list(shown.items()), finalize=step >= self.total)
            return
        if step % self.log_every == 0 or step == self.total:
            done = step - self.start_step
            elapsed = time.perf_counter() - self.start_time
            eta = elapsed / max(done, 1) * (self.total - step)
            text = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
            log.info("step %d/%d %s eta %s", step, self.total, text, time.strftime("%H:%M:%S", time.gmtime(eta)))


def train(
    experiment: config_lib.ExperimentConfig,
    run_dir: Path,
    data: TrainingData | None = None,
    *,
    data_dir: Path | None = None,
    runtime: Runtime,
    resume: bool = False,
    quiet: bool = False,
    log_every: int = 10,
) -> dict:
    """Train `experiment` into `run_dir`; returns the content of `summary.json`.

    Pass either `data_dir` (a converted dataset) or a prepared `TrainingData`.
    """
    from medgan_tf.training.experiment import build_model

    run_dir = Path(run_dir)
    train_cfg = experiment.train
    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()

    strategy = runtime.strategy
    global_batch = train_cfg.batch_size * runtime.num_replicas
    if data is None:
        if data_dir is None:
            raise ValueError("train() needs data or data_dir")
        data = tfrecord_data(Path(data_dir), experiment, global_batch)
    steps_per_epoch = train_cfg.steps_per_epoch or max(1, data.train_slices // global_batch)
    total_steps = train_cfg.epochs * steps_per_epoch

    with strategy.scope():
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
    if resume:
        restored = store.restore_latest()
        if restored is None:
            log.warning("%s has no complete checkpoint: starting from step 0", run_dir)
    if runtime.is_chief:
        checkpoints.write_config(run_dir, experiment)

    if runtime.is_chief:
        train_writer = tf.summary.create_file_writer(str(run_dir / "train"))
        validation_writer = tf.summary.create_file_writer(str(run_dir / "validation"))
    else:
        train_writer = validation_writer = tf.summary.create_noop_writer()

    step_fn = make_train_step(model, strategy, runtime.jit_compile)
    validation_step = make_validation_step(model.generator)
    distribute_options = tf.data.Options()
    distribute_options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    step = int(store.step.numpy())
    if step >= total_steps:
        log.info("%s is already at step %d of %d: nothing to train", run_dir, step, total_steps)
    progress = _Progress(total_steps, step, quiet, log_every)
    last_losses: dict[str, float] = {}
    last_saved = step if resume else -1
    started, start_step = time.perf_counter(), step
    interval_start, interval_steps = time.perf_counter(), 0

    def save(reason: str) -> None:
        nonlocal last_saved
        if last_saved == step:
            return
        path = store.save()
        last_saved = step
        log.debug("checkpoint %s (%s)", path, reason)

    try:
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            model.reset_metrics()  # logged losses are running means over the (rest of the) epoch
            batches = data.epoch_batches(epoch).take(steps_per_epoch).skip(offset)
            iterator = iter(strategy.experimental_distribute_dataset(batches.with_options(distribute_options)))
            for _ in range(steps_per_epoch - offset):
                logs = step_fn(iterator)
                values = {name: float(value) for name, value in logs.items()}
                bad = [name for name, value in values.items() if not math.isfinite(value)]
                if bad:
                    kept = checkpoints.latest_checkpoint(run_dir) or "none written yet"
                    raise TrainingDiverged(
                        f"training diverged at step {step + 1}: {', '.join(f'{n}={values[n]}' for n in bad)}. "
                        f"No checkpoint was written for this step; the last good one is intact ({kept}). "
                        f"Lower the learning rates or check the data, then continue with --resume {run_dir}."
                    )
                step += 1
                store.step.assign(step)
                last_losses = values
                interval_steps += 1
                now = time.perf_counter()
                with train_writer.as_default(step=step):
                    if step == 1 or step % log_every == 0 or step == total_steps:
                        for name, value in values.items():
                            tf.summary.scalar(f"losses/{name}" if name not in ("d_real", "d_fake") else name, value)
                        tf.summary.scalar("learning_rate/generator", _value(model.generator_optimizer.learning_rate))
                        tf.summary.scalar(
                            "learning_rate/discriminator", _value(model.discriminator_optimizer.learning_rate)
                        )
                        tf.summary.scalar("slices_per_second", interval_steps * global_batch / (now - interval_start))
                        interval_start, interval_steps = now, 0
                    if step == 1 or step % train_cfg.image_summary_every_steps == 0 or step == total_steps:
                        source, target = data.preview_batch
                        output = model.generator(source, training=False)
                        tf.summary.image(
                            "source|output|target|error",
                            image_grid(source, output, target),
                            max_outputs=int(source.shape[0]),
                        )
                progress.update(step, values)
                if step % train_cfg.checkpoint_every_steps == 0:
                    save("interval")
            store.epoch.assign(epoch + 1)
            _validate(validation_step, data, validation_writer, step, epoch + 1)
            save("end of epoch")
    except KeyboardInterrupt:
        log.warning("interrupted at step %d: saving a checkpoint before exiting", step)
        save("interrupted")
        raise
    finally:
        train_writer.flush()
        validation_writer.flush()

    elapsed = time.perf_counter() - started
    summary = {
        "step": step,
        "epoch": int(store.epoch.numpy()),
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "global_batch_size": global_batch,
        "generator_updates": int(_value(model.generator_optimizer.iterations)),
        "discriminator_updates": int(_value(model.discriminator_optimizer.iterations)),
        "last_losses": last_losses,
        "slices_per_second": (step - start_step) * global_batch / elapsed if step > start_step else None,
        "wall_seconds_this_session": elapsed,
        "checkpoint": checkpoints.latest_checkpoint(run_dir),
    }
    if runtime.is_chief:
        checkpoints.write_json_atomic(run_dir / checkpoints.SUMMARY_FILE, summary)
    return summary


def _value(variable) -> float:
    """A scalar variable's value as a Python number, also for (Keras-wrapped) MirroredVariables."""
    return float(tf.convert_to_tensor(getattr(variable, "value", variable)).numpy())


def _validate(validation_step, data: TrainingData, writer, step: int, epoch: int) -> None:
    if data.validation_batches is None:
        return
    totals: dict[str, list[float]] = {}
    for source, target in data.validation_batches():
        for name, value in validation_step(source, target).items():
            totals.setdefault(name, []).append(float(value))
    if not totals:
        return
    means = {name: float(np.mean(values)) for name, values in totals.items()}
    with writer.as_default(step=step):
        for name, value in means.items():
            tf.summary.scalar(f"metrics/{name}", value)
    log.info("epoch %d validation: %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in means.items()))
