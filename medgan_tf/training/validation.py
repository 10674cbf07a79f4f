"""Validation during training: when it is due, scoring the val split, and keeping the best.

By default the val split is scored at each epoch end; with `train.validate_every_steps = N` at
every N-th global step and at the run's last step instead. Each validation writes its metrics to
TensorBoard and feeds `selection.BestModel` (the `best` checkpoint and early stopping). Scoring
resets the model's running means, so the logged training losses after a validation average the
steps since it.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from medgan_tf.training import checkpoints
from medgan_tf.training.selection import SELECTION_FILE

log = logging.getLogger(__name__)


def due(step: int, every: int, total_steps: int) -> bool:
    """Whether a validation follows global step `step` when validating every `every` steps."""
    return step % every == 0 or step == total_steps


def validate(loop, test_fn, strategy, options, epoch: int) -> dict[str, float]:
    """Score the validation batches with `MedGAN.test_step` (the validation metrics of
    `medgan_tf.metrics` on the 0–255 scale, and every loss term), write and return their means
    ({} without a validation split)."""
    if loop.data.validation_batches is None:
        return {}
    batches = loop.data.validation_batches()
    if isinstance(batches, list) and not batches:
        return {}
    loop.model.reset_metrics()
    values: dict[str, float] = {}
    for batch in strategy.experimental_distribute_dataset(batches.with_options(options)):
        values = {name: float(value) for name, value in test_fn(batch).items()}  # running means
    if not values:
        return {}
    from medgan_tf.metrics import metric_names

    shown = metric_names(validation=True)
    with loop.validation_writer.as_default(step=loop.step):
        for name, value in values.items():
            tf.summary.scalar(f"metrics/{name}" if name in shown else f"losses/{name}", value)
    log.info("step %d (epoch %d) validation: %s", loop.step, epoch, " ".join(f"{k}={values[k]:.4f}" for k in shown if k in values))
    return values


def select(loop, epoch: int, values: dict[str, float]) -> bool:
    """Keep the best checkpoint by the selection metric; True when early stopping ends the run."""
    improved, stop = loop.selection.update(epoch, loop.step, values)
    if improved:
        loop.store.save_best()
        log.info("best so far: %s", loop.selection.best_text())
    if loop.store.is_chief:
        checkpoints.write_json_atomic(loop.run_dir / SELECTION_FILE, loop.selection.to_dict())
    if stop:
        log.info("%s", stop)
        loop.stopped = stop
    return stop is not None
