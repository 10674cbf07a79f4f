"""CasNet generator (MedGAN paper §2.4.1–2.4.2): pix2pix `unet_256` U-blocks chained end to end.

At 256² with the default `GeneratorConfig` one U-block has exactly 54,407,809 trainable
parameters and CasNet-6 has 326,446,854 (pinned in tests/test_models.py).
"""

from __future__ import annotations

import math

import keras

from medgan_tf.config import GeneratorConfig
from medgan_tf.models.blocks import (
    apply_down_block,
    apply_output_block,
    apply_up_block,
    check_normalization,
)


def encoder_widths(generator: GeneratorConfig, image_size: int) -> list[int]:
    """Filters of the log2(image_size) encoder convs: min(base_filters·2^k, max_filters).

    256² with the defaults → [64, 128, 256, 512, 512, 512, 512, 512] (bottleneck 1×1)."""
    num_down = _num_down_convs(image_size)
    return [min(generator.base_filters * 2**level, generator.max_filters) for level in range(num_down)]


def _num_down_convs(image_size: int) -> int:
    if image_size < 4 or image_size & (image_size - 1):
        raise ValueError(
            f"image_size must be a power of two ≥ 4 (the U-block halves it down to a 1×1 bottleneck); "
            f"received {image_size}"
        )
    return int(math.log2(image_size))


def build_ublock(
    generator: GeneratorConfig, image_size: int, name: str = "ublock", input_channels: int | None = None,
    centre_channel: int = 0,
) -> keras.Model:
    """One U-block: the pix2pix `unet_256` generator generalised to `image_size`.

    Input (B, image_size, image_size, input_channels) (default `generator.channels`), output
    (B, image_size, image_size, channels) in [-1, 1] (tanh, float32).

    Encoder (n = log2(image_size) convs, k4 s2): conv → [LeakyReLU 0.2 → conv → norm] × (n−2)
    → LeakyReLU → conv (innermost, no norm). Decoder: [ReLU → transposed conv → norm → concat with
    the mirrored encoder output] × (n−1), then ReLU → transposed conv to `channels` with bias → tanh.
    The paper's decoder widths 512, 1024, …, 128 are the widths after each concatenation.
    With `generator.residual` the output is the input's channels `centre_channel` … +channels
    plus the tanh correction (`apply_output_block`).
    """
    check_normalization(generator.normalization, ("instance", "batch"))
    # ---- arguments → graph
    widths = encoder_widths(generator, image_size)
    num_down = len(widths)
    inputs = keras.Input((image_size, image_size, input_channels or generator.channels), name=f"{name}_input")

    skips = []
    x = inputs
    for level, filters in enumerate(widths):
        outermost, innermost = level == 0, level == num_down - 1
        x = apply_down_block(
            x,
            filters,
            name=f"{name}_down{level + 1}",
            normalization=generator.normalization,
            use_activation=not outermost,
            use_normalization=not (outermost or innermost),
        )
        skips.append(x)

    # The decoder mirrors the encoder: up step k restores the resolution of encoder output
    # n−1−k and concatenates with it, so its width is that encoder output's width.
    for step, level in enumerate(range(num_down - 2, -1, -1)):
        x = apply_up_block(
            x,
            skips[level],
            widths[level],
            name=f"{name}_up{step + 1}",
            normalization=generator.normalization,
        )
    centre = inputs[..., centre_channel:centre_channel + generator.channels] if generator.residual else None
    outputs = apply_output_block(x, generator.channels, name=f"{name}_output", residual_of=centre)
    return keras.Model(inputs, outputs, name=name)


def build_casnet(
    generator: GeneratorConfig, image_size: int, name: str = "casnet", input_channels: int | None = None,
    centre_channel: int = 0,
) -> keras.Model:
    """CasNet(N): `generator.num_ublocks` U-blocks chained, the output image of block k being the
    input of block k+1 (paper §2.4.2, Fig. 2).

    Input (B, S, S, input_channels) in [-1, 1] → output (B, S, S, channels) in [-1, 1], float32.
    `input_channels` defaults to `generator.channels` (the paper's model); a 2.5D / multi-source
    model ((2K+1)·C channels, `medgan_tf.data.context`) widens only the first conv of the first
    U-block, the later blocks refine its one-channel output as in the paper; `centre_channel` is
    the input channel a residual first block (`generator.residual`) corrects. Each U-block is a nested `keras.Model` named `ublock_<k>`.
    """
    if generator.num_ublocks < 1:
        raise ValueError(f"num_ublocks must be ≥ 1; received {generator.num_ublocks}")
    inputs = keras.Input((image_size, image_size, input_channels or generator.channels), name="source_image")
    x = inputs
    for index in range(1, generator.num_ublocks + 1):
        x = build_ublock(generator, image_size, name=f"ublock_{index}",
                         input_channels=input_channels if index == 1 else None,
                         centre_channel=centre_channel if index == 1 else 0)(x)
    return keras.Model(inputs, x, name=name)


def ublock_trainable_params(generator: GeneratorConfig, image_size: int, input_channels: int | None = None) -> int:
    """Trainable parameter count of one U-block by arithmetic, without building it.

    Mirrors `build_ublock` layer by layer; `tests/test_models.py` checks the two agree.
    """
    widths = encoder_widths(generator, image_size)
    channels = generator.channels
    kernel = 4 * 4
    norm = 2  # gamma + beta per channel (instance and batch norm alike)
    total = 0
    previous = input_channels or channels
    for level, filters in enumerate(widths):
        total += kernel * previous * filters
        if 0 < level < len(widths) - 1:
            total += norm * filters
        previous = filters
    for level in range(len(widths) - 2, -1, -1):
        filters = widths[level]
        total += kernel * previous * filters + norm * filters
        previous = 2 * filters  # after concatenation with the mirrored encoder output
    total += kernel * previous * channels + channels  # output transposed conv with bias
    return total
