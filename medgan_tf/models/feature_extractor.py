"""Frozen VGG-19 feature extractor for the style and content losses (MedGAN paper §2.3, §2.5)."""

from __future__ import annotations

import logging
import os
from typing import Sequence

import keras

from medgan_tf.errors import UserError

logger = logging.getLogger(__name__)

VGG_MINIMUM_SIZE = 32  # keras.applications.VGG19 refuses smaller inputs
# Channel means of `keras.applications.vgg19.preprocess_input` ("caffe" mode), in BGR order.
# A grayscale image tiled to 3 channels is its own BGR flip, so only the means matter.
VGG_BGR_MEANS = (103.939, 116.779, 123.68)
# The file `keras.applications.VGG19(include_top=False, weights="imagenet")` downloads and caches.
VGG_NOTOP_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG_WEIGHT_CHOICES = (
    "'auto' (ImageNet when obtainable, else random with a warning), 'imagenet' (downloaded once into "
    "~/.keras/models), a local .h5 path, or 'none'"
)


def keras_cache_dir() -> str:
    """The folder Keras caches downloads in (`keras.utils.get_file`): $KERAS_HOME, else ~/.keras,
    else /tmp/.keras when the home folder is not writable — Keras' own rule."""
    if "KERAS_HOME" in os.environ:
        base = os.path.expanduser(os.environ["KERAS_HOME"])
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    if not os.access(base, os.W_OK):  # importing Keras creates it; get_file falls back when it cannot write
        base = os.path.join("/tmp", ".keras")
    return base


def imagenet_weights_file() -> str:
    """Where the VGG-19 ImageNet (no-top) weights are, or would be, cached by Keras."""
    return os.path.join(keras_cache_dir(), "models", VGG_NOTOP_FILE)


@keras.saving.register_keras_serializable(package="medgan_tf")
class GrayscaleToVGGInput(keras.layers.Layer):
    """(B, S, S, 1) grayscale in [-1, 1] → (B, S, S, 3) in VGG's convention: 0..255, tiled to
    3 channels, then `keras.applications.vgg19.preprocess_input` (BGR, ImageNet means removed)."""

    def call(self, images):
        pixels = (images + 1.0) * 127.5
        rgb = keras.ops.concatenate([pixels, pixels, pixels], axis=-1)
        return keras.applications.vgg19.preprocess_input(rgb)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


def build_feature_extractor(
    layer_names: Sequence[str], weights: str = "imagenet", image_size: int = 256
) -> keras.Model:
    """Frozen `keras.applications.VGG19(include_top=False)` returning a dict layer name → features.

    Input (B, S, S, 1) grayscale in [-1, 1]; output {name: (B, h_j, w_j, d_j)} for each of
    `layer_names` (e.g. "block1_conv1" → (B, S, S, 64)).

    weights: "imagenet" (Keras cache; downloaded once when online), a path to a local `.h5`
    file of VGG-19 no-top weights, "none" (random init — for tests only; logged loudly), or
    "auto": "imagenet" when the weights are cached or downloadable, otherwise "none" with a
    warning that says how to get the real weights (so a first run on an offline machine works).
    """
    if not layer_names:
        raise ValueError("layer_names must name at least one VGG-19 layer; received none")
    if image_size < VGG_MINIMUM_SIZE:  # Keras' own error would blame the weights
        raise UserError(f"the VGG-19 style and content losses need slices of at least {VGG_MINIMUM_SIZE}×"
                        f"{VGG_MINIMUM_SIZE} (VGG-19 halves them five times); received image size {image_size}: use "
                        f"--image-size {VGG_MINIMUM_SIZE} or more, or switch the losses off with --lambda-style 0 "
                        "--lambda-content 0 (or a recipe without them, e.g. --model pix2pix)")
    if weights == "auto":
        try:
            return build_feature_extractor(layer_names, "imagenet", image_size)
        except UserError as error:
            cause = error.__cause__ or error
            logger.warning(
                "VGG-19 ImageNet weights are unavailable (%s: %s). Falling back to RANDOM VGG-19 weights: "
                "the style and content losses are not the paper's. For real training, connect once so Keras "
                "caches them in ~/.keras/models, or pass --vgg-weights /path/"
                "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5.",
                type(cause).__name__, str(cause).split(" -- ")[-1],
            )
            return _build(layer_names, None, image_size)
    return _build(layer_names, weights, image_size)


def _build(layer_names: Sequence[str], weights: str | None, image_size: int) -> keras.Model:
    keras_weights = _resolve_weights(weights) if weights is not None else None
    try:
        vgg = keras.applications.VGG19(
            include_top=False, weights=keras_weights, input_shape=(image_size, image_size, 3)
        )
    except Exception as error:  # the download or the .h5 read failed
        if weights == "imagenet":
            raise UserError(
                f"could not load the VGG-19 ImageNet weights ({type(error).__name__}: {error}). "
                f"Options: (1) connect once to the internet so Keras downloads them into ~/.keras/models; "
                f"(2) pass a local file: --vgg-weights /path/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5; "
                f"(3) --vgg-weights none (random weights: style/content losses become meaningless)"
            ) from error
        raise UserError(f"could not load VGG-19 weights from {weights!r}: {error}") from error
    vgg.trainable = False

    available = {layer.name for layer in vgg.layers}
    unknown = [name for name in layer_names if name not in available]
    if unknown:
        raise ValueError(f"unknown VGG-19 layers {unknown}; available: {sorted(available)}")

    inputs = keras.Input((image_size, image_size, 1), name="grayscale_image")
    vgg_inputs = GrayscaleToVGGInput(name="to_vgg_input")(inputs)
    features = keras.Model(vgg.input, {name: vgg.get_layer(name).output for name in layer_names}, name="vgg19")
    extractor = keras.Model(inputs, features(vgg_inputs), name="vgg19_feature_extractor")
    extractor.trainable = False
    return extractor


def _resolve_weights(weights: str) -> str | None:
    if weights == "imagenet":
        return "imagenet"
    if weights in ("none", None):
        logger.warning(
            "VGG-19 feature extractor has RANDOM weights (vgg_weights='none'): the style and content "
            "losses are meaningless. Use this only for tests; train with 'imagenet' or a local .h5 file."
        )
        return None
    if not weights.endswith(".h5"):
        raise UserError(f"vgg weights must be {VGG_WEIGHT_CHOICES}; received {weights!r}")
    if not os.path.isfile(weights):
        raise UserError(f"VGG-19 weights file not found: {weights} (expected {VGG_WEIGHT_CHOICES})")
    return weights
