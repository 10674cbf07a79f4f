"""Building the adversarial model of a config: its recipe's networks, the paper's optimizers."""

from __future__ import annotations

import keras

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.errors import UserError
from medgan_tf.models import build_networks
from medgan_tf.training.medgan_model import MedGAN


def build_model(config: config_lib.ExperimentConfig, vgg_weights: str | None = None, jit_compile: bool = False) -> MedGAN:
    """Build the networks of `config` (with its recipe's builders) and a compiled `MedGAN` with
    the paper's two Adam optimizers (`config.train`: lr 2e-4, β1 0.5, β2 0.999). Call inside
    `strategy.scope()` when distributing. vgg_weights overrides `config.train.vgg_weights`."""
    try:
        recipe = presets.recipe_of(config)
    except KeyError as error:
        raise UserError(str(error).strip("'\"")) from None
    networks = build_networks(
        config, vgg_weights=vgg_weights, generator_builder=recipe.generator, discriminator_builder=recipe.discriminator
    )
    model = MedGAN(
        networks.generator,
        networks.discriminator,
        networks.feature_extractor,
        losses=config.losses,
        generator_steps=config.train.generator_steps,
        source_centre=config.data.centre_channel,
        name=f"{config.model}_gan",
    )
    train = config.train
    model.compile(
        generator_optimizer=keras.optimizers.Adam(
            train.generator_learning_rate, beta_1=train.beta_1, beta_2=train.beta_2, name="generator_adam"),
        discriminator_optimizer=keras.optimizers.Adam(
            train.discriminator_learning_rate, beta_1=train.beta_1, beta_2=train.beta_2, name="discriminator_adam"),
        jit_compile=jit_compile,
    )
    return model
