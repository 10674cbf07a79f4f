"""Timing and FLOP counting for `medgan-tf bench`, TensorFlow-free at import (cheap to test).

Every figure is the median of `repeats` timed calls after `warmup` untimed ones (tracing, graph
optimization, allocator growth and file caches happen in the warm-up).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np


@dataclasses.dataclass
class Timing:
    """Wall times (seconds) of the timed repeats of one measurement; warm-up runs excluded."""

    seconds: list[float]
    warmup: int

    @property
    def median(self) -> float:
        return median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "repeats_s": [round(s, 6) for s in self.seconds], "warmup": self.warmup}


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (the mean of the middle two for an even count)."""
    if len(values) == 0:
        raise ValueError("median of no values; expected at least one timed repeat")
    return float(statistics.median(values))


def time_repeats(
    function: Callable[[], Any],
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Call `function` `warmup` times untimed, then `repeats` times timed, each call on its own.

    `function` must block until its work is done (return numpy, not a pending tensor).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0; received repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        start = clock()
        function()
        seconds.append(clock() - start)
    return Timing(seconds, warmup)


# --------------------------------------------------------------------------- FLOP counting


def _layer_flops(layer: Any) -> int:
    """Multiply-adds × 2 of one layer for one example (convolutions and dense layers; the
    normalizations and activations are O(activations), < 0.1 % of a U-block, and not counted)."""
    import keras

    if isinstance(layer, keras.layers.SpectralNormalization):
        layer = layer.layer
    if isinstance(layer, keras.layers.Conv2DTranspose):
        # Every input pixel scatters a kh×kw×C_out patch from C_in channels.
        _, height, width, channels_in = layer.input.shape
        kernel_h, kernel_w = layer.kernel_size
        return 2 * height * width * channels_in * kernel_h * kernel_w * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, channels_out = layer.output.shape
        channels_in = layer.input.shape[-1]
        kernel_h, kernel_w = layer.kernel_size
        return 2 * height * width * channels_out * kernel_h * kernel_w * (channels_in // layer.groups)
    if isinstance(layer, keras.layers.Dense):
        positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
        return 2 * positions * layer.input.shape[-1] * layer.units
    return 0


def model_flops(model: Any) -> int:
    """FLOP of one forward pass of one example through a built functional `keras.Model`,
    counted from its layers' shapes (nested models, e.g. CasNet's U-blocks, are entered).

    Conv2D: 2·H_out·W_out·C_out·k_h·k_w·C_in; Conv2DTranspose: 2·H_in·W_in·C_in·k_h·k_w·C_out;
    Dense: 2·C_in·C_out per position. CasNet-6 at 256² → ≈ 71.4 GFLOP.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += model_flops(layer)
        else:
            total += _layer_flops(layer)
    return int(total)


def gemm_gflops(size: int, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """fp32 GEMM rate of this machine: tf.linalg.matmul of two size×size matrices."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    b = tf.constant(rng.standard_normal((size, size), dtype=np.float32))
    matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)[:1, :1]))  # tiny fetch, full GEMM
    timing = time_repeats(lambda: matmul().numpy(), repeats, warmup)
    return {"size": size, "gflops": 2.0 * size**3 / timing.median / 1e9, **timing.as_dict()}


