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


def sources_text(extra_modalities: tuple[str, ...] | list[str]) -> str:
    """"2 source volumes (source, source_2 (CT))": what a model takes, for messages."""
    names = ["source", *(f"source_{index} ({modality})" for index, modality in enumerate(extra_modalities, start=2))]
    return f"{len(names)} source volume{'s' if len(names) > 1 else ''} ({', '.join(names)})"


def check_extra_columns(what: str, given: int, extra_modalities: tuple[str, ...] | list[str]) -> None:
    """UserError unless a CSV (`what`, e.g. "--inputs rows.csv") has exactly the model's extra
    source columns source_2, … (`given` of them): a one-source model given source_2, or a
    multi-source model given too few or too many, is a mistake for the whole CSV, not for a row."""
    from medgan_tf.errors import UserError

    if given == len(extra_modalities):
        return
    columns = ", ".join(f"source_{index}" for index in range(2, 2 + given)) or "none"
    if not extra_modalities:
        raise UserError(f"{what} has extra source columns ({columns}) but this model takes one source volume; "
                        "drop those columns or use the multi-source model they were meant for")
    raise UserError(f"{what} has {given} extra source column(s) ({columns}) but this model takes "
                    f"{sources_text(extra_modalities)}; give one column per extra source, in training order")


def empty_extra_cells(extra_paths: tuple[Any, ...] | list[Any]) -> list[str]:
    """The names (source_2, …) of a CSV row's empty extra source cells (None or "")."""
    return [f"source_{index}" for index, path in enumerate(extra_paths, start=2) if not path]
