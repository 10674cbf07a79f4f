"""Conditional spectral-normalized 16×16 PatchGAN (MedGAN paper §2.2 eq. 8, §2.4.3).

The discriminator doubles as MedGAN's trainable feature extractor: besides the patch
probability map it returns the features [raw input pair, hidden 1, hidden 2] used by the
perceptual loss (eq. 6–7; i = 0 is the raw pair, the pixel term), and the pre-sigmoid logits the
adversarial losses are computed from.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from medgan_tf.config import DiscriminatorConfig
from medgan_tf.models.blocks import apply_normalization, apply_spectral_conv, check_normalization

# Output structure of `build_discriminator`, spelled once so callers index by name.
PROBABILITY = "probability"
LOGITS = "logits"
FEATURES = "features"


def build_discriminator(
    discriminator: DiscriminatorConfig,
    image_size: int,
    channels: int = 1,
    name: str = "discriminator",
    source_channels: int | None = None,
    source_centre: int = 0,
) -> keras.Model:
    """The conditional PatchGAN of pix2pix (`NLayerDiscriminator`, n_layers = 1) with spectral
    normalization on every conv (paper §2.4.3, eq. 8).

    Inputs: `[candidate, source]`, each (B, S, S, channels); candidate is the real target x or
    the generator output G(y), source is y. Graph for the default `filters` (64, 128):
    concat(candidate, source) → SN-Conv(64, k4, s2) → LeakyReLU(0.2) → SN-Conv(128, k4, s1) →
    norm → LeakyReLU(0.2) → SN-Conv(1, k4, s1) → sigmoid. Longer `filters` insert further
    SN-Conv(k4, s2) → norm → LeakyReLU blocks before the last hidden conv, as pix2pix's n_layers.

    The patch: each output pixel sees a 16×16 window of the input pair (receptive field
    k₁ + (k₂ − 1)·s₁ + (k₃ − 1)·s₁·s₂ = 4 + 3·2 + 3·2·1 = 16; `receptive_field` computes it from
    the built layers). Padding is "same", so output pixel (i, j) sees input rows 2i − 5 … 2i + 10
    and the same columns: overlapping patches at stride 2, a (S/2)×(S/2) map, border patches
    partly on the zero padding. ("same" rather than pix2pix's padding 1 keeps the map S/2 wide.)

    Output: a dict
      - "probability": (B, S/2, S/2, 1) float32 patch probabilities D(·, y) in (0, 1);
      - "logits": (B, S/2, S/2, 1) float32 pre-sigmoid patch scores, for the losses;
      - "features": list [raw pair (B, S, S, 2·channels), hidden 1 (B, S/2, S/2, 64),
        hidden 2 (B, S/2, S/2, 128)] — the D_i of eq. 6, hidden layers after their activation.

    Convs followed by a normalization carry no bias (the norm's beta replaces it); the first
    conv, like pix2pix's, has no normalization and so keeps its bias.

    2.5D / multi-source condition (`source_channels` ≠ `channels`, `medgan_tf.data.context`): the
    source input has `source_channels` channels and the convs see all of them; the raw-pair
    feature (i = 0, the perceptual loss's pixel term) stays the pair the paper means, candidate
    and the centre slice `source_centre` of the first source, so the term keeps its scale.
    The kernels start
    spectrally normalized (`initialize_spectral_normalization`); afterwards only
    `renormalize_spectral_kernels` (Algorithm 1 line 12) rescales them, never a forward pass.
    """
    check_normalization(discriminator.normalization)
    if not discriminator.filters:
        raise ValueError("discriminator.filters must list at least one hidden conv width; received ()")
    # ---- arguments → graph
    candidate = keras.Input((image_size, image_size, channels), name="candidate_image")
    source = keras.Input((image_size, image_size, source_channels or channels), name="source_image")
    pair = keras.layers.Concatenate(axis=-1, name="input_pair")([candidate, source])

    features = [pair]
    if source_channels not in (None, channels):
        centre = keras.layers.Lambda(lambda s: s[..., source_centre : source_centre + channels], name="source_centre")(source)
        features = [keras.layers.Concatenate(axis=-1, name="raw_pair")([candidate, centre])]
    x = pair
    count = len(discriminator.filters)
    for index, filters in enumerate(discriminator.filters, start=1):
        block = f"hidden{index}"
        normalized = index > 1 and discriminator.normalization != "none"
        # pix2pix n_layers = count − 1: stride 2 down to the last hidden conv, which has stride 1.
        strides = 1 if index == count and count > 1 else 2
        x = apply_spectral_conv(
            x, filters, name=block, strides=strides, use_bias=not normalized,
            power_iterations=discriminator.spectral_power_iterations,
        )
        if normalized:
            x = apply_normalization(x, discriminator.normalization, name=f"{block}_norm")
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{block}_leaky_relu")(x)
        features.append(x)

    x = apply_spectral_conv(
        x, 1, name="patch", strides=1, use_bias=True,
        power_iterations=discriminator.spectral_power_iterations,
    )
    logits = keras.layers.Activation("linear", dtype="float32", name="patch_logits")(x)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name="patch_probability")(logits)
    model = keras.Model(
        [candidate, source], {PROBABILITY: probability, LOGITS: logits, FEATURES: features}, name=name
    )
    initialize_spectral_normalization(model)
    return model


def spectral_normalization_layers(model: keras.Model) -> list[keras.layers.SpectralNormalization]:
    """Every `SpectralNormalization` wrapper of `model` (searched recursively)."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.SpectralNormalization)]


def initialize_spectral_normalization(model: keras.Model) -> None:
    """Start θ_D spectrally normalized (eq. 8): divide each wrapped kernel, reshaped to
    (k·k·C_in, C_out), by its exact largest singular value and store the matching right singular
    vector as the power iteration's u.

    A random u would make the first power-iteration estimates of δ poor (the top singular values
    of a random kernel lie close together); from the exact vector, the one iteration per step of
    Algorithm 1 line 12 tracks δ as the kernel moves (Miyato et al. 2018 reuse u across steps)."""
    for layer in spectral_normalization_layers(model):
        matrix = tf.reshape(tf.cast(layer.kernel, tf.float32), (-1, layer.kernel.shape[-1]))
        singular_values, _, right_vectors = tf.linalg.svd(matrix)
        layer.vector_u.assign(tf.cast(right_vectors[:, :1], layer.vector_u.dtype)[None, :, 0])
        layer.kernel.assign(tf.cast(layer.kernel / singular_values[0], layer.kernel.dtype))


def renormalize_spectral_kernels(model: keras.Model) -> None:
    """Algorithm 1 line 12: θ_D,i ← θ_D,i / δ(θ_D,i) for each spectral-normalized layer (eq. 8).

    δ is the power-iteration estimate of the largest singular value of the kernel reshaped to
    (k·k·C_in, C_out) (Miyato et al. 2018): the layer's `power_iterations` from the stored vector
    u; the new u is stored and the kernel divided by δ. No forward pass is involved.
    """
    for layer in spectral_normalization_layers(model):
        vector_u, kernel = layer.normalized_weights()
        layer.vector_u.assign(vector_u)
        layer.kernel.assign(kernel)


def receptive_field(model: keras.Model) -> int:
    """Side, in input pixels, of the window one output pixel of `model` sees: r ← (r − 1)·s + k
    over its conv layers from the output back to the input (square kernels and strides, a
    single conv chain as in `build_discriminator`)."""
    convs = [layer for layer in model._flatten_layers() if type(layer) is keras.layers.Conv2D]
    field = 1
    for conv in reversed(convs):
        kernel, stride = conv.kernel_size[0], conv.strides[0]
        if conv.kernel_size[1] != kernel or conv.strides[1] != stride or conv.dilation_rate != (1, 1):
            raise ValueError(f"{conv.name}: receptive_field expects square, undilated kernels and strides")
        field = (field - 1) * stride + kernel
    return field
