"""tf.data input pipeline over the converter's output.

On-disk layout written by `pipelines.convert`:

    DIR/manifest.json                 written last: its presence means the conversion completed
    DIR/train/data-SSSSS-of-NNNNN.tfrecord.gz   GZIP TFRecords, schema in `medgan_tf.data.schema`
    DIR/val/data-SSSSS-of-NNNNN.tfrecord.gz
    DIR/test/data-SSSSS-of-NNNNN.tfrecord.gz    the held-out split, when one was converted

`make_dataset` yields (source, target) float32 batches (B, S, S, 1) in [-1, 1];
`iterate_records` yields every record of a split with its patient key and normalization
parameters (evaluation groups by patient and maps back to physical units).

Damaged data is named, never skipped: the shards a split reads are the ones its manifest lists
(`counts[split]["shards"]`), each checked to exist and start like a GZIP file before reading; a
shard that fails later (truncated, garbled: TensorFlow's DataLossError, which names no file) is
found by `read_error`, which re-reads the split file by file only after such a failure, so an
intact dataset costs nothing extra.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterator

from medgan_tf.data.manifest import MANIFEST, read_manifest
from medgan_tf.data.pairs import SPLITS
from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
RECONVERT = "convert the dataset again (medgan-tf convert … --overwrite) or restore the file from a copy"


def shard_files(data_dir: str | Path, split: str) -> list[str]:
    """Sorted shard paths of `split` of a dataset with a manifest.json (UserError without one): the ones the manifest lists (each checked to exist and to
    start with the GZIP header), or every DIR/split/*.tfrecord.gz for a manifest that lists none.
    UserError naming the file for a missing or empty listed shard, or when there are no shards."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    import tensorflow as tf

    # Without manifest.json a folder is not a dataset (yet): an interrupted or unfinished conversion,
    # local or on an object store, never gets one.
    read_manifest(data_dir)
    pattern = str(Path(data_dir) / split / "*.tfrecord.gz")
    found = sorted(tf.io.gfile.glob(pattern))
    listed = listed_shards(data_dir, split)
    if listed is None:
        if not found:
            raise UserError(f"no TFRecord shards match {pattern}")
        return found
    files = [str(Path(data_dir) / split / name) for name in listed]
    missing = [path for path in files if not tf.io.gfile.exists(path)]
    if missing:
        raise UserError(f"{Path(data_dir) / MANIFEST} lists {len(files)} {split!r} shard(s) but "
                        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; the dataset is "
                        f"incomplete: {RECONVERT}")
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as handle:
            head = handle.read(len(GZIP_MAGIC))
        if head != GZIP_MAGIC:
            raise UserError(f"{path} is damaged ({'empty' if not head else 'not a GZIP file'}); {RECONVERT}")
    unlisted = sorted(set(found) - set(files))
    if unlisted:
        log.warning("ignoring %s: not listed in %s (left from another conversion?)", ", ".join(unlisted),
                    Path(data_dir) / MANIFEST)
    if not files:
        raise UserError(f"{Path(data_dir) / MANIFEST} lists no {split!r} shards")
    return files


def listed_shards(data_dir: str | Path, split: str) -> list[str] | None:
    """Shard file names the manifest lists for `split`; None when there is no such list (a
    dataset written by hand or before the converter recorded its shards)."""
    if not (Path(data_dir) / MANIFEST).is_file():
        return None
    counts = read_manifest(data_dir).get("counts")
    shards = counts.get(split, {}).get("shards") if isinstance(counts, dict) else None
    return sorted(shards) if isinstance(shards, list) else None


def damaged_shards(data_dir: str | Path, split: str) -> list[tuple[str, str]]:
    """(path, TensorFlow's reason) for every shard of `split` that cannot be read to its end.
    Reads the whole split: meant for after a failure, not before every read."""
    import tensorflow as tf

    damaged = []
    for path in shard_files(data_dir, split):
        try:
            for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"):
                pass
        except tf.errors.DataLossError as error:
            damaged.append((path, _reason(error)))
    return damaged


def read_error(data_dir: str | Path, split: str, error: Exception) -> UserError:
    """The UserError for a DataLossError met while reading `split` through tf.data: it names
    the damaged shard(s), found by reading the split's shards one by one."""
    damaged = damaged_shards(data_dir, split)
    if not damaged:
        return UserError(f"reading the {split!r} split of {data_dir} failed ({_reason(error)}), yet every shard "
                         f"reads to its end on a second try; check the disk or file system and run again")
    listing = "; ".join(f"{path} ({reason})" for path, reason in damaged)
    return UserError(f"damaged TFRecord shard{'s' if len(damaged) > 1 else ''} in the {split!r} split: {listing}; "
                     f"{RECONVERT}")


def _reason(error: Exception) -> str:
    """TensorFlow's message without the op and function decoration around it."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    return message.split(" [Op:", 1)[0].strip()


def _augment(source: Any, target: Any, seed: Any, max_shift_pixels: int) -> tuple[Any, Any]:
    """The same random left-right flip and in-plane shift (≤ max_shift_pixels, filled with −1,
    i.e. background) for both images of a pair, from a stateless seed (reproducible)."""
    import tensorflow as tf

    channels = tf.shape(source)[-1]  # 1, or (2K+1)·C for a 2.5D / multi-source window
    pair = tf.concat([source, target], axis=-1)  # (S, S, channels + 1): one transform for both
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 0)
    shift_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    pair = tf.cond(flip, lambda: tf.reverse(pair, axis=[1]), lambda: pair)
    if max_shift_pixels > 0:
        size = tf.shape(pair)[0]
        shift = max_shift_pixels
        padded = tf.pad(pair, [[shift, shift], [shift, shift], [0, 0]], constant_values=-1.0)
        offsets = tf.random.stateless_uniform([2], shift_seed, minval=0, maxval=2 * shift + 1, dtype=tf.int32)
        pair = tf.slice(padded, tf.stack([offsets[0], offsets[1], 0]), tf.stack([size, size, channels + 1]))
    return pair[..., :channels], pair[..., channels:]


def _records(data_dir: str | Path, split: str, *, deterministic: bool, shuffle_files: bool, seed: int) -> Any:
    import tensorflow as tf

    files = shard_files(data_dir, split)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        dataset = dataset.shuffle(len(files), seed=seed)
    return dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def make_dataset(
    data_dir: str | Path,
    split: str,
    batch_size: int,
    *,
    augment: bool = False,
    shuffle: bool = True,
    repeat: bool = False,
    deterministic: bool = False,
    seed: int = 0,
    max_shift_pixels: int = 8,
    shuffle_buffer: int = 512,
    drop_remainder: bool = False,
    context_slices: int = 0,
    source_channels: int = 1,
) -> Any:
    """(source, target) float32 (B, S, S, 1) batches in [-1, 1] from DIR/split/*.tfrecord.gz.

    With `context_slices` K > 0 or `source_channels` C > 1, source is the (B, S, S, (2K+1)·C)
    window of `medgan_tf.data.context` (K ≤ the converted maximum, C ≤ the converted sources).

    Parallel interleaved reads → parse → shuffle → repeat → paired augmentation (flip, shift) →
    batch → prefetch. With `deterministic=True` the order and the augmentation are a function
    of `seed` only (augmentation seeds are stateless, derived from the element position).
    """
    import tensorflow as tf

    from medgan_tf.data.schema import parse_example

    dataset = _records(data_dir, split, deterministic=deterministic, shuffle_files=shuffle, seed=seed)
    if context_slices > 0 or source_channels > 1:
        dataset = dataset.map(_window_parser(data_dir, context_slices, source_channels),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        dataset = dataset.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        dataset = dataset.map(lambda record: (record["source"], record["target"]))
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if augment:
        dataset = dataset.enumerate()
        dataset = dataset.map(
            lambda index, pair: _augment(
                pair[0], pair[1], tf.stack([tf.cast(seed, tf.int64), index]), max_shift_pixels
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _window_parser(data_dir: str | Path, context_slices: int, source_channels: int) -> Any:
    """serialized record → (window (S, S, (2K+1)·C), target (S, S, 1)) for a converted 2.5D /
    multi-source dataset; a UserError when it holds fewer context slices or sources."""
    from medgan_tf.data import context
    from medgan_tf.data.schema import parse_stack

    stored_k, stored_c, _ = context.stored_context(read_manifest(data_dir))
    if context_slices > stored_k or source_channels > stored_c or not context.uses_stack(stored_k, stored_c):
        raise UserError(f"{data_dir} holds windows of --context-slices {stored_k} and {stored_c} source(s); a model "
                        f"with --context-slices {context_slices} and {source_channels} source(s) cannot read it: "
                        f"convert again with --context-slices {context_slices}")
    indices = context.select_channels(stored_k, stored_c, context_slices, source_channels)
    return lambda serialized: parse_stack(serialized, indices, (2 * stored_k + 1) * stored_c)


def iterate_records(data_dir: str | Path, split: str) -> Iterator[dict[str, Any]]:
    """Every record of `split` in file order as numpy: {"source", "target" (S, S, 1) float32 in
    [-1, 1], "patient_key", "slice_index", "spacing", "source_params", "target_params"} where
    *_params are the `normalization.denormalize` parameters of that slice's volume; plus "mask"
    (uint8 (S, S, 1), 1 inside) for records converted with a mask."""
    from medgan_tf.data.schema import parse_example_numpy

    for serialized in _serialized_records(data_dir, split):
        yield parse_example_numpy(serialized)


def _serialized_records(data_dir: str | Path, split: str) -> Iterator[bytes]:
    """Every serialized record of `split`, file by file; a damaged shard is a UserError naming
    it, and so is a split holding fewer or more records than its manifest counts."""
    import tensorflow as tf

    files = shard_files(data_dir, split)
    total = 0
    for path in files:
        try:
            for serialized in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator():
                total += 1
                yield serialized
        except tf.errors.DataLossError as error:
            raise UserError(f"{path} is damaged ({_reason(error)}); {RECONVERT}") from error
    expected = _manifest_slices(data_dir, split)
    if expected is not None and total != expected:
        raise UserError(f"the {split!r} split of {data_dir} holds {total} records but {MANIFEST} counts {expected}; "
                        f"a shard was truncated or replaced ({', '.join(files)}): {RECONVERT}")


def _manifest_slices(data_dir: str | Path, split: str) -> int | None:
    """The manifest's slice count of `split`, for converter manifests (the ones listing shards)."""
    if listed_shards(data_dir, split) is None:
        return None
    slices = read_manifest(data_dir)["counts"][split].get("slices")
    return int(slices) if isinstance(slices, int) else None


def records_by_patient(data_dir: str | Path, split: str) -> dict[str, list[dict[str, Any]]]:
    """`iterate_records` grouped by patient key, each list sorted by slice index (volume order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in iterate_records(data_dir, split):
        groups.setdefault(record["patient_key"], []).append(record)
    for records in groups.values():
        records.sort(key=lambda record: record["slice_index"])
    return dict(sorted(groups.items()))
