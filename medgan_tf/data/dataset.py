"""tf.data input pipeline over the converter's output.

On-disk layout written by `pipelines.convert`:

    DIR/manifest.json                 written last: its presence means the conversion completed
    DIR/train/data-SSSSS-of-NNNNN.tfrecord.gz   GZIP TFRecords, schema in `medgan_tf.data.schema`
    DIR/val/data-SSSSS-of-NNNNN.tfrecord.gz

`make_dataset` yields (source, target) float32 batches (B, S, S, 1) in [-1, 1];
`iterate_records` yields every record of a split with its patient key and normalization
parameters (evaluation groups by patient and maps back to physical units).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from medgan_tf.data.pairs import SPLITS
from medgan_tf.errors import UserError


def shard_files(data_dir: str | Path, split: str) -> list[str]:
    """Sorted shard paths of `split`; raises UserError when there are none."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    import tensorflow as tf

    pattern = str(Path(data_dir) / split / "*.tfrecord.gz")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise UserError(f"no TFRecord shards match {pattern}")
    return files


def _augment(source: Any, target: Any, seed: Any, max_shift_pixels: int) -> tuple[Any, Any]:
    """The same random left-right flip and in-plane shift (≤ max_shift_pixels, filled with −1,
    i.e. background) for both images of a pair, from a stateless seed (reproducible)."""
    import tensorflow as tf

    pair = tf.concat([source, target], axis=-1)  # (S, S, 2): one transform for both
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 0)
    shift_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    pair = tf.cond(flip, lambda: tf.reverse(pair, axis=[1]), lambda: pair)
    if max_shift_pixels > 0:
        size = tf.shape(pair)[0]
        shift = max_shift_pixels
        padded = tf.pad(pair, [[shift, shift], [shift, shift], [0, 0]], constant_values=-1.0)
        offsets = tf.random.stateless_uniform([2], shift_seed, minval=0, maxval=2 * shift + 1, dtype=tf.int32)
        pair = tf.slice(padded, tf.stack([offsets[0], offsets[1], 0]), tf.stack([size, size, 2]))
    return pair[..., :1], pair[..., 1:]


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
) -> Any:
    """(source, target) float32 (B, S, S, 1) batches in [-1, 1] from DIR/split/*.tfrecord.gz.

    Parallel interleaved reads → parse → shuffle → repeat → paired augmentation (flip, shift) →
    batch → prefetch. With `deterministic=True` the order and the augmentation are a function
    of `seed` only (augmentation seeds are stateless, derived from the element position).
    """
    import tensorflow as tf

    from medgan_tf.data.schema import parse_example

    dataset = _records(data_dir, split, deterministic=deterministic, shuffle_files=shuffle, seed=seed)
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


def iterate_records(data_dir: str | Path, split: str) -> Iterator[dict[str, Any]]:
    """Every record of `split` in file order as numpy: {"source", "target" (S, S, 1) float32 in
    [-1, 1], "patient_key", "slice_index", "spacing", "source_params", "target_params"} where
    *_params are the `normalization.denormalize` parameters of that slice's volume."""
    import tensorflow as tf

    from medgan_tf.data.schema import parse_example_numpy

    for path in shard_files(data_dir, split):
        for serialized in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator():
            yield parse_example_numpy(serialized)


def records_by_patient(data_dir: str | Path, split: str) -> dict[str, list[dict[str, Any]]]:
    """`iterate_records` grouped by patient key, each list sorted by slice index (volume order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in iterate_records(data_dir, split):
        groups.setdefault(record["patient_key"], []).append(record)
    for records in groups.values():
        records.sort(key=lambda record: record["slice_index"])
    return dict(sorted(groups.items()))


def count_records(data_dir: str | Path, split: str) -> int:
    """Number of records in `split` (reads the shards)."""
    import tensorflow as tf

    total = 0
    for path in shard_files(data_dir, split):
        for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            total += 1
    return total
