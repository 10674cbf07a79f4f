"""Conditional spectral-normalized patch discriminator (MedGAN paper §2.2 eq. 8, §2.4.3).

The discriminator doubles as MedGAN's trainable feature extractor: besides the patch
probability map it returns the features [raw input pair, hidden 1, hidden 2] used by the
perceptual loss (eq. 6–7; i = 0 is the raw pair, the pixel term).
"""

from __future__ import annotations

import keras

from medgan_tf.config import DiscriminatorConfig
from medgan_tf.models.blocks import apply_normalization, apply_spectral_conv, check_normalization

# Output structure of `build_discriminator`, spelled once so callers index by name.
PROBABILITY = "probability"
FEATURES = "features"


def build_discriminator(
    discriminator: DiscriminatorConfig, image_size: int, channels: int = 1, name: str = "discriminator"
) -> keras.Model:
    """The conditional PatchGAN with spectral normalization on every conv.

    Inputs: `[candidate, source]`, each (B, S, S, channels); candidate is the real target x or
    the generator output G(y), source is y. Graph: concat(candidate, source) → for each of
    `discriminator.filters` (64, 128): SN-Conv(k4, s2) → norm → LeakyReLU(0.2); then
    SN-Conv(1, k4, s1, same) → sigmoid.

    Output: a dict
      - "probability": (B, S/4, S/4, 1) float32 patch probabilities D(·, y) in (0, 1);
      - "features": list [raw pair (B, S, S, 2·channels), hidden 1 (B, S/2, S/2, 64),
        hidden 2 (B, S/4, S/4, 128)] — the D_i of eq. 6, hidden layers after their activation.

    Convs followed by a normalization carry no bias (the norm's beta replaces it).
    """
    check_normalization(discriminator.normalization)
    if not discriminator.filters:
        raise ValueError("discriminator.filters must list at least one hidden conv width; received ()")
    # ---- arguments → graph
    candidate = keras.Input((image_size, image_size, channels), name="candidate_image")
    source = keras.Input((image_size, image_size, channels), name="source_image")
    pair = keras.layers.Concatenate(axis=-1, name="input_pair")([candidate, source])

    features = [pair]
    x = pair
    use_bias = discriminator.normalization == "none"
    for index, filters in enumerate(discriminator.filters, start=1):
        block = f"hidden{index}"
        x = apply_spectral_conv(
            x, filters, name=block, strides=2, use_bias=use_bias,
            power_iterations=discriminator.spectral_power_iterations,
        )
        x = apply_normalization(x, discriminator.normalization, name=f"{block}_norm")
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{block}_leaky_relu")(x)
        features.append(x)

    x = apply_spectral_conv(
        x, 1, name="patch", strides=1, use_bias=True,
        power_iterations=discriminator.spectral_power_iterations,
    )
    probability = keras.layers.Activation("sigmoid", dtype="float32", name="patch_probability")(x)
    return keras.Model([candidate, source], {PROBABILITY: probability, FEATURES: features}, name=name)


def spectral_normalization_layers(model: keras.Model) -> list[keras.layers.SpectralNormalization]:
    """Every `SpectralNormalization` wrapper of `model` (searched recursively)."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.SpectralNormalization)]


def renormalize_spectral_kernels(model: keras.Model) -> None:
    """Algorithm 1 line 12: θ_D,i ← θ_D,i / δ(θ_D,i) for each spectral-normalized layer.

    Runs one more power iteration per layer (what `SpectralNormalization` does when called
    with `training=True`) without a forward pass, so the stored kernels — used for evaluation,
    checkpoints and the next generator step — are spectrally normalized after each D update.
    """
    for layer in spectral_normalization_layers(model):
        vector_u, kernel = layer.normalized_weights()
        layer.vector_u.assign(vector_u)
        layer.kernel.assign(kernel)
