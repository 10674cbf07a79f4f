"""The serving graph of an export: its signatures and the normalization description they follow.

Signatures (S = the run's `data.image_size`; every image is float32 (B, S, S, 1), any B ≥ 0; a
2.5D / multi-source model's `source` is (B, S, S, C_in) with C_in = (2K+1)·C channels in the order
of `medgan_tf.data.context`, stated in the signature and in the assets, each source normalized with
its own window: `source_{i}_low`/`source_{i}_high` for a per-volume extra source i ≥ 2):

- `serving_default`: input `source` = normalized source slices in [-1, 1] → output `output` =
  the generator's normalized output in [-1, 1] (CasNet forward pass, inference mode). An ensemble
  export (`medgan_tf.serving.ensemble`) returns the members' mean as `output` and their
  (population) standard deviation as `uncertainty`, both (B, S, S, 1).
- `physical`: the same in physical units (HU / SUV / Bq/ml / MR a.u.). Inputs:
    `source`                    source slices in the source unit;
    `source_low`, `source_high` (B,) — only when the source normalization is per volume
                                (PET "scale", MR "percentile"): the source *volume's* parameters,
                                the same value for every slice of one volume (fit them on the whole
                                volume with the `fit_source_normalization` signature, not per slice);
    `target_low`, `target_high` (B,) — only when the target normalization is per volume and not
                                shared with the source (no built-in task needs this).
  Output `output` in the target unit (an ensemble's `uncertainty` too: the spread scaled by the
  half window, no offset). Fixed windows (CT in HU) are constants of the graph; a target
  that shares the source's parameters (PET denoising, MR motion correction) reuses
  `source_low`/`source_high`.
- `fit_source_normalization` (only for per-volume source normalization): input `volume` = all
  voxels of one source volume (float32, any shape, physical units; ideally already on the model
  grid) → `source_low`, `source_high` (scalars), numpy-percentile compatible ("linear").

Normalization (medgan_tf.data.normalization): y = 2·(clip(x, low, high) − low)/(high − low) − 1 and
back x = low + (y + 1)/2·(high − low).

Guards. Inside the graph (so TF Serving's REST/gRPC clients get them too), assertions refuse a
wrong rank or size (naming the expected (batch, S, S, 1)), NaN/inf values ("source: expected
finite values; received N NaN/inf values in slices [...]"; one NaN voxel would otherwise turn
its whole output slice into NaN through instance normalization), parameters that are not finite
with high > low, and an empty volume to fit. A batch of 0 slices returns an empty (0, S, S, 1)
output. The dtype cannot be checked in the graph, whose placeholders are float32: TensorFlow
refuses a tf.Tensor (or a gRPC TensorProto) of another dtype itself, without the shape, and its
Python binding silently casts numpy arrays; `medgan_tf.serving.loading` (ExportedModel, its
`signatures`, RunModel) therefore refuses non-float32 inputs before calling the graph.
"""

from __future__ import annotations

from typing import Any, Mapping

from medgan_tf import config as config_lib
from medgan_tf.data.context import extra_normalization
from medgan_tf.serving.channels import channel_windows, serving_input

CONFIG_ASSET = "config.json"
NORMALIZATION_ASSET = "normalization.json"
SERVING_SIGNATURE = "serving_default"
PHYSICAL_SIGNATURE = "physical"
FIT_SIGNATURE = "fit_source_normalization"
INPUT_NAME = "source"
FIT_INPUT_NAME = "volume"
OUTPUT_NAME = "output"
UNCERTAINTY_NAME = "uncertainty"  # an ensemble's extra output: the members' standard deviation
PER_VOLUME_KINDS = ("scale", "percentile")
NORMALIZATION_FORMAT = 1


# --------------------------------------------------------------------------- normalization description


def normalization_description(experiment: config_lib.ExperimentConfig) -> dict[str, Any]:
    """What a serving client needs to go between physical units and the model's [-1, 1].

    Returns a JSON-ready dict (the content of assets/normalization.json):
    {"format", "image_size", "spacing_mm", "formula",
     "source": {"modality", "unit", "kind", "per_volume", "low", "high", "percentile_low",
                "percentile"},
     "target": {... same ..., "share_source"},
     "physical_inputs": [names of the `physical` signature's inputs]}
    `low`/`high` are numbers for a fixed window and null for per-volume kinds.
    """
    data = experiment.data

    def side(norm: config_lib.NormalizationConfig, modality: str) -> dict[str, Any]:
        per_volume = norm.kind in PER_VOLUME_KINDS
        return {
            "modality": modality,
            "unit": norm.unit,
            "kind": norm.kind,
            "per_volume": per_volume,
            "low": None if per_volume else float(norm.low),
            "high": None if per_volume else float(norm.high),
            "percentile_low": float(norm.percentile_low) if norm.kind == "percentile" else (0.0 if norm.kind == "scale" else None),
            "percentile": float(norm.percentile) if per_volume else None,
        }

    source = side(data.source_normalization, data.source_modality)
    target = side(data.target_normalization, data.target_modality)
    target["share_source"] = bool(data.target_normalization.share_source)
    extras = [side(extra_normalization(modality), modality) for modality in data.extra_source_modalities]
    return {
        "format": NORMALIZATION_FORMAT,
        "task": experiment.task,
        "image_size": int(data.image_size),
        "spacing_mm": [float(v) for v in data.spacing_mm],
        "formula": "normalized = 2*(clip(x, low, high) - low)/(high - low) - 1; "
        "physical = low + (normalized + 1)/2*(high - low)",
        "source": source,
        "target": target,
        "physical_inputs": physical_input_names(source, target, extras),
        **serving_input(data),
        "extra_sources": extras,
    }


def _target_needs_own_parameters(target: Mapping[str, Any]) -> bool:
    return bool(target["per_volume"]) and not bool(target.get("share_source"))


def physical_input_names(
    source: Mapping[str, Any], target: Mapping[str, Any], extras: list[Mapping[str, Any]] | tuple = ()
) -> list[str]:
    """Input names of the `physical` signature for these source/target (and extra source) descriptions."""
    names = [INPUT_NAME]
    if source["per_volume"]:
        names += ["source_low", "source_high"]
    for index, extra in enumerate(extras, start=2):
        if extra["per_volume"]:
            names += [f"source_{index}_low", f"source_{index}_high"]
    if _target_needs_own_parameters(target):
        names += ["target_low", "target_high"]
    return names


# --------------------------------------------------------------------------- the served module


def _percentile(values, q: float):
    """numpy.percentile(values, q) with the default "linear" method, in TensorFlow (float32)."""
    import tensorflow as tf

    flat = tf.sort(tf.reshape(values, [-1]))
    count = tf.size(flat)
    position = (q / 100.0) * tf.cast(count - 1, tf.float32)
    below = tf.cast(tf.floor(position), tf.int32)
    above = tf.minimum(below + 1, count - 1)
    fraction = position - tf.cast(below, tf.float32)
    return flat[below] + fraction * (flat[above] - flat[below])


def _image_spec(name: str, size: int, channels: int = 1):
    """The TensorSpec of an image input: float32 (None, size, size, channels) named `name`."""
    import tensorflow as tf

    return tf.TensorSpec([None, size, size, channels], tf.float32, name=name)


def _parameter_spec(name: str):
    """The TensorSpec of a per-slice normalization parameter: float32 (None,) named `name`."""
    import tensorflow as tf

    return tf.TensorSpec([None], tf.float32, name=name)


def _check_images(images, name: str, size: int, channels: int = 1):
    """`images` as (B, size, size, channels), after assertions that it is.

    The input_signature fixes the rank for Python callers that pass numpy arrays (and casts
    their dtype silently, hence the dtype checks in loading.py), but a loaded signature given a
    tf.Tensor, or TF Serving feeding the graph, skips that check; a
    wrong rank would then abort the whole process inside a convolution kernel. The network
    therefore runs only after this check passes. It cannot use tf.rank: the signature makes the
    rank statically 4, so Grappler folds it to a constant; the rank is counted from the
    runtime shape instead.
    """
    import tensorflow as tf

    expected = f"float32 (batch, {size}, {size}, {channels})"
    if channels > 1:
        expected += f" ({channels} channels: the 2.5D / multi-source window, see assets/normalization.json)"
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]  # rank < 4 → zeros
    runtime_rank = tf.reduce_sum(tf.sign(shape + 1))  # data-dependent, so never constant-folded
    valid = tf.logical_and(
        tf.equal(runtime_rank, 4), tf.reduce_all(tf.equal(padded[1:], tf.constant([size, size, channels])))
    )
    check = tf.debugging.Assert(valid, [f"{name}: expected {expected}; received shape", shape], summarize=8)
    with tf.control_dependencies([check]):
        # Identity carries the dependency (Grappler may drop a reshape it deems a no-op).
        return tf.identity(images)


def _check_source(images, size: int, channels: int = 1):
    """The `source` input (B, size, size, channels) after the shape assertion, then the finiteness one."""
    return _check_finite(_check_images(images, INPUT_NAME, size, channels), INPUT_NAME)


def _check_parameters(images, values, what: str):
    """`values` as (B,) after asserting one value per slice of `images` (see _check_images)."""
    import tensorflow as tf

    check = tf.debugging.Assert(
        tf.equal(tf.size(values), tf.shape(images)[0]),
        [f"{what}: expected float32 (batch,), one value per slice; received shape", tf.shape(values)],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        return tf.identity(values)


def _check_finite(values, name: str, per_slice: bool = True):
    """`values` after asserting that every element is finite; the message counts the NaN/inf
    values and, if `per_slice` (values batch-first, (B, ...)), lists the slices holding them."""
    import tensorflow as tf

    finite = tf.math.is_finite(values)
    message = [f"{name}: expected finite values; received", tf.reduce_sum(tf.cast(~finite, tf.int32)), "NaN/inf values"]
    if per_slice:
        finite_slices = tf.reduce_all(tf.reshape(finite, [tf.shape(values)[0], -1]), axis=1)
        message += ["in slices", tf.reshape(tf.where(~finite_slices), [-1])]
    check = tf.debugging.Assert(tf.reduce_all(finite), message, summarize=16)
    with tf.control_dependencies([check]):
        return tf.identity(values)


def _check_window(low, high, name: str):
    """(`low`, `high`), each (B,), after asserting both are finite and high > low for every slice."""
    import tensorflow as tf

    valid = tf.reduce_all(tf.math.is_finite(low) & tf.math.is_finite(high) & (high > low))
    check = tf.debugging.Assert(
        valid, [f"{name}_high must be greater than {name}_low and both finite; received", low, high]
    )
    with tf.control_dependencies([check]):
        return tf.identity(low), tf.identity(high)


def _checked_window(images, low, high, name: str):
    """The per-volume window (`low`, `high`) of side `name`, checked and shaped (B, 1, 1, 1) for broadcasting."""
    import tensorflow as tf

    low, high = _check_window(
        _check_parameters(images, low, f"{name}_low"),
        _check_parameters(images, high, f"{name}_high"),
        name,
    )
    return tf.reshape(low, [-1, 1, 1, 1]), tf.reshape(high, [-1, 1, 1, 1])


def _fixed_window(side: Mapping[str, Any]):
    """The fixed window of a normalization description as float32 scalar constants (low, high)."""
    import tensorflow as tf

    return tf.constant(side["low"], tf.float32), tf.constant(side["high"], tf.float32)


def _to_normalized(images, low, high):
    """Physical `images` clipped to [low, high] and mapped to [-1, 1] (same shape)."""
    import tensorflow as tf

    return 2.0 * (tf.clip_by_value(images, low, high) - low) / (high - low) - 1.0


def _to_physical(images, low, high):
    """Normalized `images` in [-1, 1] mapped back to [low, high] physical units (same shape)."""
    return (images + 1.0) * (0.5 * (high - low)) + low


def _serving_module(generator, size: int, channels: int = 1, members: list | None = None):
    """A tf.Module named "medgan" tracking `generator`, with the `serve` (serving_default) tf.function;
    its input has `channels` channels (1, or the (2K+1)·C of a 2.5D / multi-source model).

    `members` (an ensemble; then `generator` is None): (tracked object, callable normalized →
    (B, S, S, 1)) pairs; the outputs are their mean (`output`) and standard deviation (`uncertainty`)."""
    import tensorflow as tf

    class ServingModule(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="medgan")
            if members is None:
                self.generator = generator
            else:
                self.members = [tracked for tracked, _ in members]

        def forward(self, normalized):
            """(B, S, S, C_in) → {"output": (B, S, S, 1) float32[, "uncertainty": the same]}; B = 0
            gives an empty batch (the network itself fails on one, with a message about filter depths)."""

            def run():
                if members is None:
                    return {OUTPUT_NAME: tf.cast(self.generator(normalized, training=False), tf.float32)}
                stacked = tf.stack([tf.cast(call(normalized), tf.float32) for _, call in members])
                return {OUTPUT_NAME: tf.reduce_mean(stacked, axis=0), UNCERTAINTY_NAME: tf.math.reduce_std(stacked, axis=0)}

            empty = tf.zeros([0, size, size, 1], tf.float32)
            names = [OUTPUT_NAME] + ([] if members is None else [UNCERTAINTY_NAME])
            return tf.cond(tf.shape(normalized)[0] > 0, run, lambda: {name: empty for name in names})

        @tf.function(input_signature=[_image_spec(INPUT_NAME, size, channels)])
        def serve(self, source_images):
            """Normalized (B, S, S, C_in) source in [-1, 1] → normalized output (B, S, S, 1) in [-1, 1]."""
            return self.forward(_check_source(source_images, size, channels))

    return ServingModule()


def _physical_function(module, description: Mapping[str, Any]):
    """The `physical` tf.function: (B, S, S, C_in) source [source unit] (+ (B,) windows) → {"output": target unit}."""
    import tensorflow as tf

    size = int(description["image_size"])
    source, target = description["source"], description["target"]
    extras = description.get("extra_sources", [])
    channels = int(description.get("input_channels", 1))

    def physical(source_images, source_low=None, source_high=None, target_low=None, target_high=None, **extra):
        source_images = _check_source(source_images, size, channels)
        if source["per_volume"]:
            low_in, high_in = _checked_window(source_images, source_low, source_high, "source")
        else:
            low_in, high_in = _fixed_window(source)
        if channels == 1:
            normalized = _to_normalized(source_images, low_in, high_in)
        else:
            windows = [(low_in, high_in)] + [
                _checked_window(source_images, extra[f"source_{i}_low"], extra[f"source_{i}_high"], f"source_{i}")
                if side["per_volume"] else _fixed_window(side) for i, side in enumerate(extras, start=2)]
            normalized = _to_normalized(source_images, *channel_windows(source_images, windows, channels))
        outputs = module.forward(normalized)
        if not target["per_volume"]:
            low_out, high_out = _fixed_window(target)
        elif target.get("share_source"):
            low_out, high_out = low_in, high_in
        else:
            low_out, high_out = _checked_window(source_images, target_low, target_high, "target")
        physical_outputs = {OUTPUT_NAME: _to_physical(outputs[OUTPUT_NAME], low_out, high_out)}
        if UNCERTAINTY_NAME in outputs:
            physical_outputs[UNCERTAINTY_NAME] = outputs[UNCERTAINTY_NAME] * (0.5 * (high_out - low_out))
        return physical_outputs

    names = physical_input_names(source, target, extras)
    specs = [_image_spec(INPUT_NAME, size, channels)] + [_parameter_spec(name) for name in names[1:]]
    # The signature's input keys are the TensorSpec names, so `*inputs` keeps exactly `names`.
    return tf.function(
        lambda *inputs: physical(**dict(zip(["source_images"] + names[1:], inputs))), input_signature=specs
    )


def _fit_function(source: Mapping[str, Any]):
    """The `fit_source_normalization` tf.function: one source volume (any shape) → scalar source_low/high."""
    import tensorflow as tf

    percentile_low = float(source["percentile_low"])
    percentile_high = float(source["percentile"])
    kind = source["kind"]

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name=FIT_INPUT_NAME)])
    def fit_source_normalization(volume):
        check = tf.debugging.Assert(
            tf.size(volume) > 0, [f"{FIT_INPUT_NAME}: expected at least one voxel; received shape", tf.shape(volume)]
        )
        with tf.control_dependencies([check]):
            volume = tf.identity(volume)
        # Percentiles of a volume with NaN/inf are meaningless (NaN sorts anywhere): refuse it.
        volume = _check_finite(volume, FIT_INPUT_NAME, per_slice=False)
        high = _percentile(volume, percentile_high)
        low = tf.constant(0.0) if kind == "scale" else _percentile(volume, percentile_low)
        # A constant volume keeps the map invertible (as normalization.fit does).
        high = tf.where(high > low, high, low + 1.0)
        return {"source_low": low, "source_high": high}

    return fit_source_normalization


def build_module(generator, description: Mapping[str, Any], members: list | None = None):
    """A tf.Module holding `generator` (or the ensemble `members`, see `_serving_module`) and the
    tf.functions of the three signatures.

    Returns (module, signatures): signatures maps each signature name to its tf.function, which is
    also an attribute of the module so that tf.saved_model.save tracks it.
    """
    module = _serving_module(generator, int(description["image_size"]), int(description.get("input_channels", 1)),
                             members)
    module.physical = _physical_function(module, description)
    signatures = {SERVING_SIGNATURE: module.serve, PHYSICAL_SIGNATURE: module.physical}
    if description["source"]["per_volume"]:
        module.fit_source_normalization = _fit_function(description["source"])
        signatures[FIT_SIGNATURE] = module.fit_source_normalization
    return module, signatures
