"""What the training loop shows while it runs: a progress bar (or log lines) and the TensorBoard
image grid."""

from __future__ import annotations

import logging
import time

import keras
import tensorflow as tf

log = logging.getLogger("medgan_tf.training.driver")


def image_grid(source, output, target, source_centre: int = 0) -> tf.Tensor:
    """(K, S, 4·S, 1) rows of source | output | target | |error|, all mapped to [0, 1]; a 2.5D /
    multi-source `source` shows its channel `source_centre` (the centre slice of the first source)."""
    output = tf.cast(output, tf.float32)
    source = source[..., source_centre : source_centre + 1]
    panels = [(source + 1.0) / 2.0, (output + 1.0) / 2.0, (target + 1.0) / 2.0, tf.abs(output - target) / 2.0]
    return tf.clip_by_value(tf.concat(panels, axis=2), 0.0, 1.0)


_SHOWN_LOGS = ("generator_total", "discriminator_loss", "d_real", "d_fake")


class Progress:
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


