"""Building blocks shared by the generator and the discriminator (keras-hub style).

Each `apply_*` function maps a tensor to a tensor and names every layer it creates from `name`,
so a built network reads like the paper's figure in `model.summary()` and checkpoints keep stable
variable paths. Blocks follow the pix2pix (Isola et al. 2017) `UnetSkipConnectionBlock` ordering:
activation *before* the (transposed) convolution, normalization *after* it.
"""

from __future__ import annotations

import keras

NORMALIZATIONS = ("instance", "batch", "none")

# pix2pix initializes every conv with N(0, 0.02) and normalization scales with N(1, 0.02)
# (`networks.init_weights(init_type="normal", init_gain=0.02)`).
CONV_INITIALIZER_STDDEV = 0.02


def conv_initializer() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(mean=0.0, stddev=CONV_INITIALIZER_STDDEV)


def check_normalization(normalization: str, allowed: tuple[str, ...] = NORMALIZATIONS) -> None:
    if normalization not in allowed:
        raise ValueError(f"normalization must be one of {', '.join(allowed)}; received {normalization!r}")


def apply_normalization(x, normalization: str, name: str):
    """Instance norm (`GroupNormalization(groups=-1)`: one group per channel, statistics over
    H×W of each sample; paper §2.5), batch norm, or identity for "none". Shape is unchanged."""
    check_normalization(normalization)
    gamma = keras.initializers.RandomNormal(mean=1.0, stddev=CONV_INITIALIZER_STDDEV)
    if normalization == "instance":
        return keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, gamma_initializer=gamma, name=name)(x)
    if normalization == "batch":
        return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, gamma_initializer=gamma, name=name)(x)
    return x


def apply_down_block(
    x,
    filters: int,
    name: str,
    normalization: str = "instance",
    use_activation: bool = True,
    use_normalization: bool = True,
):
    """pix2pix encoder step: [LeakyReLU(0.2)] → Conv2D(k4, s2, same, no bias) → [norm].

    (B, H, W, C) → (B, H/2, W/2, filters). The outermost block has no activation (it sees the
    image) and the innermost no normalization (its output is 1×1 at 256², where instance
    normalization would zero it).
    """
    if use_activation:
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{name}_leaky_relu")(x)
    x = keras.layers.Conv2D(
        filters,
        kernel_size=4,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=f"{name}_conv",
    )(x)
    if use_normalization:
        x = apply_normalization(x, normalization, name=f"{name}_norm")
    return x


def apply_up_block(x, skip, filters: int, name: str, normalization: str = "instance"):
    """pix2pix decoder step: ReLU → Conv2DTranspose(k4, s2, same, no bias) → norm → concat.

    (B, H, W, C) → (B, 2H, 2W, skip_channels + filters). As in pix2pix
    (`torch.cat([x, model(x)], 1)`), the mirrored encoder output comes first.
    """
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.Conv2DTranspose(
        filters,
        kernel_size=4,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=f"{name}_conv_transpose",
    )(x)
    x = apply_normalization(x, normalization, name=f"{name}_norm")
    return keras.layers.Concatenate(axis=-1, name=f"{name}_skip_concat")([skip, x])


def apply_output_block(x, channels: int, name: str, residual_of=None):
    """pix2pix outermost decoder step: ReLU → Conv2DTranspose(k4, s2, with bias) → tanh.

    (B, H, W, C) → (B, 2H, 2W, channels) in [-1, 1]. The tanh runs in float32 so a
    mixed-precision generator still returns float32 images. With `residual_of` (the image
    the block corrects, (B, 2H, 2W, channels)) the transposed conv starts at zero and the output
    is `residual_of + tanh(…)`: the identity until training moves it.
    """
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.Conv2DTranspose(
        channels,
        kernel_size=4,
        strides=2,
        padding="same",
        use_bias=True,
        kernel_initializer="zeros" if residual_of is not None else conv_initializer(),
        name=f"{name}_conv_transpose",
    )(x)
    x = keras.layers.Activation("tanh", dtype="float32", name=f"{name}_tanh")(x)
    if residual_of is None:
        return x
    return keras.layers.Add(dtype="float32", name=f"{name}_residual")([residual_of, x])


@keras.saving.register_keras_serializable(package="medgan_tf")
class ExplicitSpectralNormalization(keras.layers.SpectralNormalization):
    """`keras.layers.SpectralNormalization` whose forward pass never renormalizes the kernel.

    Keras' wrapper, called with `training=True`, runs a power iteration and divides the stored
    kernel by its spectral-norm estimate *before* every forward pass (and does not differentiate
    through that estimate). MedGAN normalizes once per iteration, after the discriminator update
    (Algorithm 1 line 12, `models.renormalize_spectral_kernels`), so here `training` reaches only
    the normalization layers: the discriminator update may run them on batch statistics
    (`normalization="batch"`) without a second and third power iteration, and calls during the
    generator updates leave every discriminator variable unchanged.
    """

    def call(self, inputs, training=False):
        return super().call(inputs, training=False)


def apply_spectral_conv(
    x,
    filters: int,
    name: str,
    strides: int,
    use_bias: bool,
    power_iterations: int = 1,
):
    """Conv2D(k4, same) wrapped in `ExplicitSpectralNormalization` (Miyato et al. 2018; MedGAN
    eq. 8). (B, H, W, C) → (B, H/strides, W/strides, filters). The kernel is used as stored; it
    is rescaled to unit spectral norm only by `models.renormalize_spectral_kernels`."""
    conv = keras.layers.Conv2D(
        filters,
        kernel_size=4,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=conv_initializer(),
        name=f"{name}_conv",
    )
    return ExplicitSpectralNormalization(conv, power_iterations=power_iterations, name=f"{name}_spectral")(x)
