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
| mask (optional)      | bytes         | uint8 (S, S), 1 inside the body/evaluation mask      |

`mask` is present only in records of pairs converted with a mask (the pairs CSV's `mask` column);
records without it are byte for byte what they were before masks existed.

2.5D / multi-source records (`medgan_tf.data.context`; only when K_max > 0 or C > 1) add:

| feature              | type          | meaning                                              |
|----------------------|---------------|------------------------------------------------------|
| source_stack         | bytes         | float32 (S, S, (2·K_max+1)·C), channel order of `context.channel_layout` |
| context_slices       | int64         | K_max                                                |
| source_channels      | int64         | C (source, source_2, … of the pairs CSV)             |
| channel_low/high     | float × C     | each source's normalization parameters               |
| channel_units/kinds  | bytes         | each source's unit / normalization kind, comma-separated |
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
    extra_features: Mapping[str, tuple[str, Any]] | None = None,
    mask_slice: np.ndarray | None = None,
) -> bytes:
    """Serialize one normalized slice pair, each float32 (S, S) or (S, S, 1), to a tf.train.Example.

    The protobuf wire format is written directly (see `_example_bytes`) rather than through
    TensorFlow's generated classes: the converter's Beam workers then never import TensorFlow,
    which cost each worker process ~3 s of CPU at start-up . The bytes parse to the same
    message as `tf.train.Example(...)` built with TensorFlow (tests/test_bench.py checks it).
    """
    source = np.asarray(source_slice, dtype="<f4")
    target = np.asarray(target_slice, dtype="<f4")
    # (S, S, 1) channel-last slices are accepted too.
    source = source[..., 0] if source.ndim == 3 and source.shape[-1] == 1 else source
    target = target[..., 0] if target.ndim == 3 and target.shape[-1] == 1 else target
    if source.ndim != 2 or source.shape != target.shape or source.shape[0] != source.shape[1]:
        raise ValueError(f"expected two square slices of one shape (S, S); got {source.shape} and {target.shape}")

    features: dict[str, tuple[str, Any]] = {
        "source": ("bytes", np.ascontiguousarray(source).tobytes()),
        "target": ("bytes", np.ascontiguousarray(target).tobytes()),
        "height": ("int64", [source.shape[0]]),
        "width": ("int64", [source.shape[1]]),
        "patient_key": ("bytes", str(patient_key).encode()),
        "slice_index": ("int64", [slice_index]),
        "spacing": ("float", list(spacing)),
    }
    for side, params in (("source", source_norm_params), ("target", target_norm_params)):
        features[f"{side}_low"] = ("float", [params["low"]])
        features[f"{side}_high"] = ("float", [params["high"]])
        features[f"{side}_unit"] = ("bytes", str(params["unit"]).encode())
        features[f"{side}_kind"] = ("bytes", str(params["kind"]).encode())
    features.update(extra_features or {})  # e.g. `stack_features`
    if mask_slice is not None:
        features["mask"] = ("bytes", encode_mask(mask_slice, source.shape))
    return _example_bytes(features)


def encode_mask(mask_slice: np.ndarray, shape: tuple[int, ...]) -> bytes:
    """A mask slice (S, S) or (S, S, 1), non-zero inside → uint8 0/1 bytes of `shape`."""
    mask = np.asarray(mask_slice)
    mask = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
    if mask.shape != tuple(shape):
        raise ValueError(f"mask slice of shape {mask.shape}; expected the image slices' {tuple(shape)}")
    return np.ascontiguousarray(mask != 0, dtype=np.uint8).tobytes()


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 as its 64-bit two's complement (10 bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _example_bytes(features: Mapping[str, tuple[str, Any]]) -> bytes:
    """tf.train.Example wire bytes of {name: ("bytes", b"..") | ("float", [..]) | ("int64", [..])}.

    example.proto: Example{1: Features}; Features{1: map<string, Feature>} (each entry a message
    {1: key, 2: value}, written in sorted key order; a parser accepts any order);
    Feature{1: BytesList | 2: FloatList | 3: Int64List}, each {1: values} (floats and ints packed).
    """
    entries = b""
    for name in sorted(features):
        kind, values = features[name]
        if kind == "bytes":
            feature = _length_delimited(1, _length_delimited(1, bytes(values)))
        elif kind == "float":
            feature = _length_delimited(2, _length_delimited(1, np.asarray(values, dtype="<f4").tobytes()))
        elif kind == "int64":
            feature = _length_delimited(3, _length_delimited(1, b"".join(_varint(int(v)) for v in values)))
        else:
            raise ValueError(f"feature {name!r}: unknown kind {kind!r}; expected bytes, float or int64")
        entries += _length_delimited(1, _length_delimited(1, name.encode()) + _length_delimited(2, feature))
    return _length_delimited(1, entries)


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


def parse_example_with_mask(serialized: Any) -> dict[str, Any]:
    """`parse_example` plus "mask": uint8 (S, S, 1), all ones for a record without a mask (the
    whole slice counts), for readers that use masks."""
    import tensorflow as tf

    parsed = parse_example(serialized)
    raw = tf.io.parse_single_example(serialized, {"mask": tf.io.FixedLenFeature([], tf.string, default_value="")})["mask"]
    shape = tf.shape(parsed["source"])
    parsed["mask"] = tf.cond(
        tf.equal(tf.strings.length(raw), 0),
        lambda: tf.ones(shape, tf.uint8),
        lambda: tf.reshape(tf.io.decode_raw(raw, tf.uint8), shape),
    )
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
    out.update(_stack_numpy(feature, size))
    if "mask" in feature:  # only records converted with a mask carry one
        out["mask"] = np.frombuffer(feature["mask"].bytes_list.value[0], dtype=np.uint8).reshape(size + (1,))
    return out


# --------------------------------------------------------------------------- 2.5D / multi-source window

STACK_FEATURE = "source_stack"


def stack_features(
    window: np.ndarray, context_slices: int, channel_params: list[Mapping[str, Any]]
) -> dict[str, tuple[str, Any]]:
    """The extra features of a 2.5D / multi-source record: `window` float32 (S, S, (2K+1)·C)
    (`context.stack_windows` at one slice) and each source's normalization parameters."""
    window = np.asarray(window, dtype="<f4")
    width = 2 * int(context_slices) + 1
    if window.ndim != 3 or window.shape[-1] != width * len(channel_params):
        raise ValueError(f"expected a window (S, S, {width}·{len(channel_params)}); got {window.shape}")
    return {
        STACK_FEATURE: ("bytes", np.ascontiguousarray(window).tobytes()),
        "context_slices": ("int64", [int(context_slices)]),
        "source_channels": ("int64", [len(channel_params)]),
        "channel_low": ("float", [float(p["low"]) for p in channel_params]),
        "channel_high": ("float", [float(p["high"]) for p in channel_params]),
        "channel_units": ("bytes", ",".join(str(p["unit"]) for p in channel_params).encode()),
        "channel_kinds": ("bytes", ",".join(str(p["kind"]) for p in channel_params).encode()),
    }


def parse_stack(serialized: Any, channel_indices: list[int], channels_stored: int) -> tuple[Any, Any]:
    """One serialized 2.5D / multi-source record → (window (S, S, len(channel_indices)), target
    (S, S, 1)), the window's channels picked from the stored (S, S, `channels_stored`) stack."""
    import tensorflow as tf

    spec = {
        STACK_FEATURE: tf.io.FixedLenFeature([], tf.string),
        "target": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    height, width = tf.cast(parsed["height"], tf.int32), tf.cast(parsed["width"], tf.int32)
    stack = tf.reshape(tf.io.decode_raw(parsed[STACK_FEATURE], tf.float32, little_endian=True),
                       tf.stack([height, width, channels_stored]))
    target = tf.reshape(tf.io.decode_raw(parsed["target"], tf.float32, little_endian=True), tf.stack([height, width, 1]))
    return tf.gather(stack, channel_indices, axis=-1), target


def _stack_numpy(feature: Any, size: tuple[int, int]) -> dict[str, Any]:
    """The 2.5D / multi-source fields of a record for `parse_example_numpy` ({} for a 2D record)."""
    if STACK_FEATURE not in feature:
        return {}
    channels = int(feature["source_channels"].int64_list.value[0])
    context_slices = int(feature["context_slices"].int64_list.value[0])
    units = feature["channel_units"].bytes_list.value[0].decode().split(",")
    kinds = feature["channel_kinds"].bytes_list.value[0].decode().split(",")
    return {
        STACK_FEATURE: np.frombuffer(feature[STACK_FEATURE].bytes_list.value[0], dtype="<f4").reshape(size + (-1,)),
        "context_slices": context_slices,
        "source_channels": channels,
        "channel_params": [
            {"kind": kinds[c], "unit": units[c], "low": float(feature["channel_low"].float_list.value[c]),
             "high": float(feature["channel_high"].float_list.value[c])}
            for c in range(channels)
        ],
    }
