"""Building the adversarial model of a config: its recipe's networks, the paper's optimizers."""

from __future__ import annotations

import keras

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.errors import UserError
from medgan_tf.models import build_networks
from medgan_tf.training.medgan_model import MedGAN

# Keras dtype policy of a generator that computes in each precision an export or a loaded run offers.
EXPORT_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


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


def generator_in_precision(generator, experiment: config_lib.ExperimentConfig, compute_dtype: str):
    """`generator` itself when it already computes in `compute_dtype` ("float32" | "bfloat16"),
    else the same network rebuilt under that dtype policy with `generator`'s weights (the global
    policy is restored afterwards)."""
    from medgan_tf.training.runtime import dtype_policy

    if compute_dtype not in EXPORT_POLICIES:
        raise UserError(f"precision must be one of {sorted(EXPORT_POLICIES)}; received {compute_dtype!r}")
    if generator.compute_dtype == compute_dtype:
        return generator
    with dtype_policy(EXPORT_POLICIES[compute_dtype]):
        rebuilt = presets.recipe_of(experiment).generator(experiment)
    source_shapes = [tuple(w.shape) for w in generator.weights]
    if [tuple(w.shape) for w in rebuilt.weights] != source_shapes:
        raise UserError(
            f"the generator does not match the network the config describes ({len(source_shapes)} weights vs "
            f"{len(rebuilt.weights)}); export it at its own precision (--precision {generator.compute_dtype})"
        )
    rebuilt.set_weights(generator.get_weights())
    return rebuilt
