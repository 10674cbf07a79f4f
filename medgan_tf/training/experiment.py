"""The library entry point for training: `train_experiment(config, data, run_dir, …)`.

The command line, the demo and the paper-comparison workflow all train through this one
function; it resolves the data (a converted dataset, or the task's built-in synthetic one),
checks a resumed run's configuration and dataset, and hands over to the training loop in
`medgan_tf.training.driver`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.models import build_networks
from medgan_tf.training.medgan_model import MedGAN

log = logging.getLogger(__name__)


def build_model(config: config_lib.ExperimentConfig, vgg_weights: str | None = None, jit_compile: bool = False) -> MedGAN:
    """Build the networks of `config` (with its recipe's builders) and a compiled `MedGAN` with
    the paper's two Adam optimizers (`config.train`: lr 2e-4, β1 0.5, β2 0.999). Call inside
    `strategy.scope()` when distributing. vgg_weights overrides `config.train.vgg_weights`."""
    recipe = presets.recipe_of(config)
    networks = build_networks(
        config, vgg_weights=vgg_weights, generator_builder=recipe.generator, discriminator_builder=recipe.discriminator
    )
    model = MedGAN(
        networks.generator,
        networks.discriminator,
        networks.feature_extractor,
        losses=config.losses,
        generator_steps=config.train.generator_steps,
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
