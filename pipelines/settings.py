"""What a conversion writes, decided before and after the Beam steps: the data config from the
converter's options (grid and split fractions over the task preset) and the split of each converted
patient (named in the pairs CSV, else the hash split of `medgan_tf.data.pairs.assign_splits`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from medgan_tf.config import DataConfig, check_image_size
from medgan_tf.data.context import converter_context
from medgan_tf.data.pairs import SPLITS, assign_splits
from medgan_tf.errors import UserError
from pipelines.options import ConvertOptions


def splits_of(summaries: list[dict[str, Any]], data_config: DataConfig) -> dict[str, str]:
    """Patient key → split for the converted volumes' summaries: the split a CSV row named, else
    the hash split (`assign_splits`). The pipeline and the manifest both use this."""
    named = {s["patient_key"]: s["split_named"] for s in summaries if s.get("split_named")}
    return assign_splits([s["patient_key"] for s in summaries], data_config.val_fraction, data_config.test_fraction, named)


def written_splits(rows: list[dict[str, Any]], data_config: DataConfig) -> tuple[str, ...]:
    """The splits whose shards are written: train and val always, test when it can hold patients."""
    wants_test = data_config.test_fraction > 0 or any(row.get("split") == "test" for row in rows)
    return tuple(split for split in SPLITS if split != "test" or wants_test)


def converter_data_config(options: ConvertOptions) -> DataConfig:
    """The task preset with the grid and split fractions the user named (image_size, spacing,
    val_fraction, test_fraction; None keeps the preset's)."""
    preset = options.resolved_task().data
    chosen = {"image_size": options.image_size, "spacing_mm": options.spacing,
              "val_fraction": options.val_fraction, "test_fraction": options.test_fraction}
    data_config = dataclasses.replace(preset, **{k: v for k, v in chosen.items() if v is not None})
    check_image_size(data_config.image_size, power_of_two=False)
    if data_config.val_fraction + data_config.test_fraction >= 1:
        raise UserError(f"--val-fraction {data_config.val_fraction} + --test-fraction {data_config.test_fraction} "
                        "leaves no patient for train; expected a sum below 1")
    return data_config


def with_windows(data_config: DataConfig, rows: Sequence[Mapping[str, Any]], options: ConvertOptions) -> DataConfig:
    """`data_config` with the 2.5D / multi-source windows to store (`medgan_tf.data.context`): K of
    context_slices and one modality per extra source column of `rows` (extra_source_modalities)."""
    return converter_context(data_config, rows, options.context_slices or 0, options.extra_source_modalities)
