"""The served input of a 2.5D / multi-source model: its channel count and order, and the
per-channel normalization windows of the `physical` signature (`medgan_tf.data.context`)."""

from __future__ import annotations

from typing import Any

from medgan_tf import config as config_lib


def serving_input(data: config_lib.DataConfig) -> dict[str, Any]:
    """What `serving_default`'s input holds: C_in = (2K+1)·C channels and their order
    (`medgan_tf.data.context`); K = 0, C = 1 is the paper's single slice."""
    return {
        "input_channels": int(data.input_channels),
        "context_slices": int(data.context_slices),
        "source_channels": int(data.source_channels),
        "channel_order": "for each source (source, source_2, ...): slices z-K ... z+K; channel c*(2K+1)+K+o",
    }


def channel_windows(images, windows, channels: int):
    """Per-channel (low, high), each (B, 1, 1, C_in), from one (low, high) per source — scalars or
    (B, 1, 1, 1) tensors — repeated over that source's 2K+1 context channels."""
    import tensorflow as tf

    per_source = channels // len(windows)
    ones = tf.ones(tf.stack([tf.shape(images)[0], 1, 1, per_source]), tf.float32)
    low = tf.concat([ones * low for low, _ in windows], axis=-1)
    high = tf.concat([ones * high for _, high in windows], axis=-1)
    return low, high
