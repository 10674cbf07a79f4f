"""Network builders: CasNet generator, spectral-normalized patch discriminator, VGG-19 features.

Builders are pure functions of config objects: `build_networks(config)` builds all three networks
of one `ExperimentConfig`, with the paper's CasNet and PatchGAN unless a recipe names its own.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import keras

from medgan_tf.config import ExperimentConfig, LossConfig
from medgan_tf.models.discriminator import (
    FEATURES,
    LOGITS,
    PROBABILITY,
    build_discriminator,
    receptive_field,
    renormalize_spectral_kernels,
    spectral_normalization_layers,
)
from medgan_tf.models.feature_extractor import build_feature_extractor
from medgan_tf.models.generator import build_casnet, build_ublock, encoder_widths, ublock_trainable_params

__all__ = [
    "FEATURES",
    "LOGITS",
    "PROBABILITY",
    "Networks",
    "build_casnet",
    "build_discriminator",
    "build_feature_extractor",
    "build_networks",
    "build_ublock",
    "encoder_widths",
    "feature_extractor_layers",
    "receptive_field",
    "renormalize_spectral_kernels",
    "spectral_normalization_layers",
    "ublock_trainable_params",
]


class Networks(NamedTuple):
    """The three networks of MedGAN (paper Fig. 1)."""

    generator: keras.Model
    discriminator: keras.Model
    feature_extractor: keras.Model | None


def feature_extractor_layers(losses: LossConfig) -> tuple[str, ...]:
    """VGG-19 layers the recipe's style/content terms need, in first-use order; () when neither
    term is weighted (then no VGG is built at all)."""
    names: list[str] = []
    if losses.style:
        names += losses.style_layers
    if losses.content:
        names += losses.content_layers
    return tuple(dict.fromkeys(names))


def build_networks(
    config: ExperimentConfig,
    vgg_weights: str | None = None,
    generator_builder: Callable[[ExperimentConfig], keras.Model] | None = None,
    discriminator_builder: Callable[[ExperimentConfig], keras.Model] | None = None,
) -> Networks:
    """Generator (CasNet of `config.generator.num_ublocks`), discriminator and — only when the
    recipe weights style or content — the frozen VGG-19 feature extractor, all for slices of
    `config.data.image_size`². vgg_weights overrides `config.train.vgg_weights`; the builders
    (config → keras.Model) replace the paper's CasNet / PatchGAN for recipes with their own."""
    image_size = config.data.image_size
    if generator_builder is not None:
        generator = generator_builder(config)
    else:
        generator = build_casnet(config.generator, image_size, input_channels=config.data.input_channels,
                                 centre_channel=config.data.centre_channel)
    if discriminator_builder is not None:
        discriminator = discriminator_builder(config)
    else:
        discriminator = build_discriminator(config.discriminator, image_size, channels=config.generator.channels,
                                            source_channels=config.data.input_channels,
                                            source_centre=config.data.centre_channel)
    layers = feature_extractor_layers(config.losses)
    feature_extractor = None
    if layers:
        weights = vgg_weights if vgg_weights is not None else config.train.vgg_weights
        feature_extractor = build_feature_extractor(layers, weights=weights, image_size=image_size)
    return Networks(generator, discriminator, feature_extractor)
