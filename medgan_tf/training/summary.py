"""Facts about one configuration's networks, for `medgan-tf summary` and for reports.

`describe(config)` builds the generator and the discriminator with the recipe's own builders
(`presets.recipe_of(config)`) — VGG-19 is listed by layer name, not built — so even CasNet-6 at
256² takes seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medgan_tf import presets
from medgan_tf.config import ExperimentConfig


def trainable_parameters(model) -> int:
    """Number of trainable scalars of a built keras model."""
    return int(sum(np.prod(variable.shape) for variable in model.trainable_variables))


def describe(config: ExperimentConfig) -> dict[str, Any]:
    """JSON-ready facts about `config`'s networks and losses.

    Shapes are lists with None for the batch axis. `discriminator_receptive_field` is the side,
    in pixels, of the input window one output pixel of D sees, computed from the built network's
    conv kernels and strides (16 for the paper's PatchGAN, §2.4.3); `discriminator_patch_shape` is
    the spatial shape of D's probability map ([S/2, S/2] for slices of S²). Raises ValueError for
    a configuration the builders reject (e.g. a slice size that is not a power of two).
    """
    from medgan_tf.models import feature_extractor_layers
    from medgan_tf.models.discriminator import FEATURES, PROBABILITY, receptive_field

    recipe = presets.recipe_of(config)
    generator = recipe.generator(config)
    discriminator = recipe.discriminator(config)
    outputs = discriminator.output
    return {
        "model": config.model,
        "task": config.task,
        "image_size": config.data.image_size,
        "num_ublocks": config.generator.num_ublocks,
        "base_filters": config.generator.base_filters,
        "generator_trainable_params": trainable_parameters(generator),
        "discriminator_trainable_params": trainable_parameters(discriminator),
        "generator_output_shape": list(generator.output.shape),
        "discriminator_output_shape": list(outputs[PROBABILITY].shape),
        "discriminator_patch_shape": list(outputs[PROBABILITY].shape[1:3]),
        "discriminator_receptive_field": receptive_field(discriminator),
        "discriminator_feature_shapes": [list(feature.shape) for feature in outputs[FEATURES]],
        "loss_terms": config.losses.active_terms(),
        "discriminator_loss": config.losses.discriminator_loss,
        "generator_steps": config.train.generator_steps,
        "vgg_layers": list(feature_extractor_layers(config.losses)),
    }
