"""2.5D context slices and multi-channel sources (beyond the paper, which translates one slice of one source).

A model with K context slices and C source volumes sees, for the axial slice z it translates,
(2K+1)·C input channels and still outputs the one target slice z:

    channel c·(2K+1) + (K + o)  =  source c (0 = `source`, 1 = `source_2`, … in pairs-CSV order),
                                   slice z + o, for o = −K … K

i.e. for each source in CSV order the slices z−K … z+K, lowest slice index first. Slices beyond
either end of the volume repeat the end slice (edge replication), so every slice has a full
window. The centre slice of the first source is channel K (`DataConfig.centre_channel`). K = 0 and
C = 1 is the paper's model: one channel, the slice itself.

Storage: a record keeps `source` (the centre slice of the first source, so everything that reads
one source image still works) and, when the converted maximum K_max > 0 or C > 1, the whole
(S, S, (2K_max+1)·C) window as `source_stack` (schema in `medgan_tf.data.schema`). The reader
picks the channels of any K ≤ K_max and any first c ≤ C sources with one gather: no cross-record
work, so the input pipeline stays as fast as for 2D (measured in README).

Extra sources are resampled onto the first source's model grid by world coordinates and
normalized with their own parameters, by their modality (its default normalization in
`medgan_tf.modalities`): the converter's `--extra-source-modalities` (default: the task's extra
sources when it declares them, else the task's source modality for each) names it,
and a DICOM series' own Modality tag must agree, as for the first source.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from medgan_tf import modalities as modality_table
from medgan_tf.config import DataConfig, NormalizationConfig
from medgan_tf.errors import UserError


def channel_layout(context_slices: int, source_channels: int) -> list[tuple[int, int]]:
    """[(source index c, slice offset o)] of each input channel, in channel order (module doc)."""
    offsets = range(-context_slices, context_slices + 1)
    return [(c, o) for c in range(source_channels) for o in offsets]


def window_indices(num_slices: int, context_slices: int, first: int = 0, last: int | None = None) -> np.ndarray:
    """(num_slices, 2K+1) slice index of each window position: z + o clipped to [first, last]
    (default the whole stack): the end slices repeat beyond either end."""
    last = num_slices - 1 if last is None else last
    offsets = np.arange(-context_slices, context_slices + 1)
    return np.clip(np.arange(num_slices)[:, None] + offsets[None, :], first, last)


def stack_windows(
    volumes: Sequence[np.ndarray], context_slices: int, first: int = 0, last: int | None = None
) -> np.ndarray:
    """C normalized stacks, each (H, W, Z), → (H, W, Z, (2K+1)·C) float32 input windows in the
    channel order of `channel_layout` (edge slices replicated at `first` and `last`)."""
    if not volumes:
        raise ValueError("stack_windows needs at least one source volume")
    shape = np.shape(volumes[0])
    if any(np.shape(v) != shape for v in volumes):
        raise ValueError(f"source volumes must share one grid; received {[np.shape(v) for v in volumes]}")
    indices = window_indices(shape[2], context_slices, first, last)  # (Z, 2K+1)
    channels = [np.asarray(volume, np.float32)[:, :, indices] for volume in volumes]  # each (H, W, Z, 2K+1)
    return np.concatenate(channels, axis=-1)


def window_at(volumes: Sequence[np.ndarray], z: int, context_slices: int, first: int = 0, last: int | None = None) -> np.ndarray:
    """The (H, W, (2K+1)·C) float32 window of slice `z` (one row of `stack_windows`, without
    building the whole (H, W, Z, (2K+1)·C) array)."""
    last = np.shape(volumes[0])[2] - 1 if last is None else last
    indices = np.clip(np.arange(z - context_slices, z + context_slices + 1), first, last)
    return np.concatenate([np.asarray(volume, np.float32)[:, :, indices] for volume in volumes], axis=-1)


def select_channels(stored_context: int, stored_sources: int, context_slices: int, source_channels: int) -> list[int]:
    """Indices into a stored (2K_max+1)·C_stored window giving the (2K+1)·C window of a model
    with K = `context_slices` ≤ K_max and the first C = `source_channels` ≤ C_stored sources."""
    if context_slices > stored_context or source_channels > stored_sources:
        raise ValueError(f"a window of K={context_slices}, C={source_channels} is not inside the stored "
                         f"K={stored_context}, C={stored_sources}")
    width = 2 * stored_context + 1
    return [c * width + stored_context + o for c, o in channel_layout(context_slices, source_channels)]


def extra_normalization(modality: str) -> NormalizationConfig:
    """The normalization of an extra source channel of `modality`: the modality's default."""
    if modality not in modality_table.MODALITIES:
        raise UserError(f"extra source modality {modality!r}: expected one of {', '.join(modality_table.MODALITIES.names())}")
    return NormalizationConfig(**modality_table.MODALITIES.get(modality).normalization)


def uses_stack(context_slices: int, source_channels: int) -> bool:
    """Whether records / inputs carry more than the paper's one source slice."""
    return context_slices > 0 or source_channels > 1


# --------------------------------------------------------------------------- converter side


def converter_context(
    data_config: DataConfig, rows: Sequence[Mapping[str, Any]], context_slices: int, modalities: str | None
) -> DataConfig:
    """The converter's `data_config` with K = `context_slices` and one modality per extra source
    column of the pairs CSV (`modalities` "MR,CT" or None: the task's extra sources when it
    declares as many, else the task's source modality for each)."""
    import dataclasses

    if not isinstance(context_slices, int) or context_slices < 0:
        raise UserError(f"--context-slices must be an integer ≥ 0; received {context_slices!r}")
    count = max((len(row.get("extra_sources") or ()) for row in rows), default=0)
    declared = tuple(data_config.extra_source_modalities)
    if modalities is None and declared:
        names = declared
    elif modalities is None:
        names = (data_config.source_modality,) * count
    else:
        names = tuple(name.strip().upper() for name in modalities.split(",") if name.strip())
    if len(names) != count:
        named_by = "--extra-source-modalities" if modalities is not None else "the task's extra_sources"
        raise UserError(f"{named_by} names {len(names)} modalities but the pairs CSV has {count} extra "
                        "source column(s) (source_2, …)")
    for name in names:
        if name not in modality_table.MODALITIES:
            raise UserError(f"--extra-source-modalities: {name!r} is not one of "
                            f"{', '.join(modality_table.MODALITIES.names())}")
    return dataclasses.replace(data_config, context_slices=context_slices, extra_source_modalities=names)


# --------------------------------------------------------------------------- reader side


def stored_context(manifest: Mapping[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    """(K_max, C, extra source modalities) a converted dataset holds, from its manifest."""
    config = manifest.get("config") if isinstance(manifest.get("config"), Mapping) else {}
    extras = tuple(config.get("extra_source_modalities") or ())
    return int(config.get("context_slices") or 0), 1 + len(extras), extras


def check_context(manifest: Mapping[str, Any], data_config: DataConfig, data_dir: Any) -> None:
    """UserError unless the dataset holds the window a model of `data_config` needs."""
    stored_k, _, stored_extras = stored_context(manifest)
    if data_config.context_slices > stored_k:
        raise UserError(f"--context-slices {data_config.context_slices}: {data_dir} was converted with "
                        f"--context-slices {stored_k} (the most a model trained on it can use); convert again "
                        f"with --context-slices {data_config.context_slices} or more")
    wanted = data_config.extra_source_modalities
    if tuple(stored_extras[: len(wanted)]) != tuple(wanted):
        raise UserError(f"the model expects extra sources {list(wanted)} but {data_dir} holds "
                        f"{list(stored_extras)} (pairs CSV columns source_2, …)")


def adopt_dataset_sources(config: Any, manifest: Mapping[str, Any]) -> Any:
    """`config` (an ExperimentConfig) with the extra sources of the dataset when it names none:
    a model trained on a multi-source dataset uses every source it holds."""
    import dataclasses

    _, _, extras = stored_context(manifest)
    if config.data.extra_source_modalities or not extras:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, extra_source_modalities=extras))


def reader_options(data_config: DataConfig) -> dict[str, int]:
    """The keyword arguments of `dataset.make_dataset` that give a model of `data_config` its window."""
    return {"context_slices": data_config.context_slices, "source_channels": data_config.source_channels}


def record_window(record: Mapping[str, Any], data_config: DataConfig) -> np.ndarray:
    """A parsed record (`schema.parse_example_numpy`) → the (S, S, (2K+1)·C) input window of a
    model of `data_config` (the record's `source` itself for the paper's model)."""
    if not uses_stack(data_config.context_slices, data_config.source_channels):
        return record["source"]
    if "source_stack" not in record:
        raise UserError("the records hold one source slice each; this model needs a 2.5D / multi-source window: "
                        "convert with --context-slices / source_2 columns")
    indices = select_channels(record["context_slices"], record["source_channels"], data_config.context_slices,
                              data_config.source_channels)
    return record["source_stack"][..., indices]
