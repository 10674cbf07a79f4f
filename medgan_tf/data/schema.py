"""The one TFRecord schema of medgan-tf: `encode_example` (converter) and `parse_example` (tf.data).

One record = one axial slice pair on the model grid:

| feature              | type          | meaning                                              |
|----------------------|---------------|------------------------------------------------------|
| source, target       | bytes         | float32 little-endian, (S, S) in [-1, 1]             |
| height, width        | int64         | S, S                                                 |
| patient_key          | bytes         | salted pseudonym (hex), never a header value         |
| slice_index          | int64         | k of the slice on the model grid                     |
| spacing              | float × 3     | model-grid voxel size in mm (i, j, k)                |
| {source,target}_low  | float         | physical value that maps to −1                       |
| {source,target}_high | float         | physical value that maps to +1                       |
| {source,target}_unit | bytes         | "HU" / "SUV" / "Bq/ml" / "a.u."                      |
| {source,target}_kind | bytes         | normalization kind ("window", "scale", "percentile") |
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

SCHEMA_VERSION = 1


def encode_example(
    source_slice: np.ndarray,
    target_slice: np.ndarray,
    patient_key: str,
    slice_index: int,
    spacing: tuple[float, float, float],
    source_norm_params: Mapping[str, Any],
    target_norm_params: Mapping[str, Any],
) -> bytes:
    """Serialize one normalized slice pair, each float32 (S, S) or (S, S, 1), to a tf.train.Example."""
    from tensorflow.core.example import example_pb2, feature_pb2

    source = np.asarray(source_slice, dtype="<f4")
    target = np.asarray(target_slice, dtype="<f4")
    # (S, S, 1) channel-last slices are accepted too.
    source = source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source
    target = target[..., 0] if target.ndim == 3 and target.shape[-1] == 1 else target
    if source.ndim != 2 or source.shape != target.shape or source.shape[0] != source.shape[1]:
        raise ValueError(f"expected two square slices of one shape (S, S); got {source.shape} and {target.shape}")

    def _bytes(value: bytes) -> feature_pb2.Feature:
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    def _floats(values: Any) -> feature_pb2.Feature:
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[float(v) for v in values]))

    def _int(value: int) -> feature_pb2.Feature:
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(value)]))

    features = {
        "source": _bytes(np.ascontiguousarray(source).tobytes()),
        "target": _bytes(np.ascontiguousarray(target).tobytes()),
        "height": _int(source.shape[0]),
        "width": _int(source.shape[1]),
        "patient_key": _bytes(str(patient_key).encode()),
        "slice_index": _int(slice_index),
        "spacing": _floats(spacing),
    }
    for side, params in (("source", source_norm_params), ("target", target_norm_params)):
        features[f"{side}_low"] = _floats([params["low"]])
        features[f"{side}_high"] = _floats([params["high"]])
        features[f"{side}_unit"] = _bytes(str(params["unit"]).encode())
        features[f"{side}_kind"] = _bytes(str(params["kind"]).encode())
    example = example_pb2.Example(features=feature_pb2.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def feature_spec() -> dict[str, Any]:
    import tensorflow as tf

    spec = {
        "source": tf.io.FixedLenFeature([], tf.string),
        "target": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "patient_key": tf.io.FixedLenFeature([], tf.string),
        "slice_index": tf.io.FixedLenFeature([], tf.int64),
        "spacing": tf.io.FixedLenFeature([3], tf.float32),
    }
    for side in ("source", "target"):
        spec[f"{side}_low"] = tf.io.FixedLenFeature([], tf.float32)
        spec[f"{side}_high"] = tf.io.FixedLenFeature([], tf.float32)
        spec[f"{side}_unit"] = tf.io.FixedLenFeature([], tf.string)
        spec[f"{side}_kind"] = tf.io.FixedLenFeature([], tf.string)
    return spec


def parse_example(serialized: Any) -> dict[str, Any]:
    """One serialized record (scalar string tensor) → dict of tensors; `source` and `target`
    are float32 (S, S, 1), the other features as in the table of the module docstring."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    height = tf.cast(parsed["height"], tf.int32)
    width = tf.cast(parsed["width"], tf.int32)
    for side in ("source", "target"):
        pixels = tf.io.decode_raw(parsed[side], tf.float32, little_endian=True)
        parsed[side] = tf.reshape(pixels, tf.stack([height, width, 1]))
    return parsed


def parse_example_numpy(serialized: bytes) -> dict[str, Any]:
    """Pure-python/numpy parse (no graph): for tests and tools that inspect records."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    feature = example.features.feature
    size = (int(feature["height"].int64_list.value[0]), int(feature["width"].int64_list.value[0]))
    out: dict[str, Any] = {
        "patient_key": feature["patient_key"].bytes_list.value[0].decode(),
        "slice_index": int(feature["slice_index"].int64_list.value[0]),
        "spacing": tuple(feature["spacing"].float_list.value),
    }
    for side in ("source", "target"):
        out[side] = np.frombuffer(feature[side].bytes_list.value[0], dtype="<f4").reshape(size + (1,))
        out[f"{side}_params"] = {
            "kind": feature[f"{side}_kind"].bytes_list.value[0].decode(),
            "unit": feature[f"{side}_unit"].bytes_list.value[0].decode(),
            "low": float(feature[f"{side}_low"].float_list.value[0]),
            "high": float(feature[f"{side}_high"].float_list.value[0]),
        }
    return out
