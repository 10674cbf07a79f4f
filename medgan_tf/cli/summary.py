"""Show a model variant's networks and losses: trainable parameters, output shapes, loss weights.

Only the generator and the discriminator are built (VGG-19 is listed by layer name, not built),
so even CasNet-6 at 256² takes seconds.

Examples:
  medgan-tf summary --model medgan                 # CasNet-6: 326,446,854 generator parameters
  medgan-tf summary --model medgan_1g --json       # one U-block: 54,407,809
  medgan-tf summary --model medgan --image-size 64 --ublocks 2 --base-filters 8
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "show a model variant's parameter counts, output shapes and loss weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="medgan", help="registered variant name (default: medgan)")
    parser.add_argument("--task", default="pet_ct", help="task preset (default: pet_ct)")
    parser.add_argument("--image-size", type=int, default=None, help="slice size S (default: the task's, 256)")
    parser.add_argument("--ublocks", type=int, default=None, help="CasNet depth (default: the variant's)")
    parser.add_argument("--base-filters", type=int, default=None, help="first encoder width (default: 64)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def resolve_config(args: argparse.Namespace):
    """The ExperimentConfig the flags describe (task preset × registered variant × overrides)."""
    from medgan_tf import config as config_lib
    from medgan_tf import presets
    from medgan_tf.errors import UserError

    if args.task not in config_lib.TASKS:
        raise UserError(f"unknown task {args.task!r}; expected one of {', '.join(config_lib.TASKS)}")
    if args.model not in presets.MODELS:
        raise UserError(f"unknown model {args.model!r}; registered: {', '.join(presets.MODELS.names())}")
    config = presets.task_preset(args.task, args.model)
    updates = {
        "data.image_size": args.image_size,
        "generator.num_ublocks": args.ublocks,
        "generator.base_filters": args.base_filters,
    }
    return config_lib.override(config, {key: value for key, value in updates.items() if value is not None})


def summarize(config) -> dict[str, Any]:
    """JSON-ready facts about `config`'s networks; builds generator and discriminator only."""
    import numpy as np

    from medgan_tf.errors import UserError
    from medgan_tf.models import (
        FEATURES,
        PROBABILITY,
        build_casnet,
        build_discriminator,
        feature_extractor_layers,
    )

    def trainable(model) -> int:
        return int(sum(np.prod(variable.shape) for variable in model.trainable_variables))

    image_size = config.data.image_size
    try:
        generator = build_casnet(config.generator, image_size)
        discriminator = build_discriminator(config.discriminator, image_size, channels=config.generator.channels)
    except ValueError as error:
        raise UserError(str(error)) from error
    outputs = discriminator.output
    return {
        "model": config.model,
        "task": config.task,
        "image_size": image_size,
        "num_ublocks": config.generator.num_ublocks,
        "base_filters": config.generator.base_filters,
        "generator_trainable_params": trainable(generator),
        "discriminator_trainable_params": trainable(discriminator),
        "generator_output_shape": list(generator.output.shape),
        "discriminator_output_shape": list(outputs[PROBABILITY].shape),
        "discriminator_feature_shapes": [list(feature.shape) for feature in outputs[FEATURES]],
        "loss_terms": config.losses.active_terms(),
        "discriminator_loss": config.losses.discriminator_loss,
        "generator_steps": config.train.generator_steps,
        "vgg_layers": list(feature_extractor_layers(config.losses)),
    }


def run(args: argparse.Namespace) -> int:
    summary = summarize(resolve_config(args))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    shape = lambda dims: "×".join("B" if d is None else str(d) for d in dims)  # noqa: E731
    print(f"model {summary['model']} · task {summary['task']} · {summary['image_size']}² slices")
    print(f"  generator      CasNet-{summary['num_ublocks']} (base {summary['base_filters']} filters)  "
          f"{summary['generator_trainable_params']:>13,} trainable params  → {shape(summary['generator_output_shape'])}")
    print(f"  discriminator  spectral-normalized PatchGAN        "
          f"{summary['discriminator_trainable_params']:>13,} trainable params  → {shape(summary['discriminator_output_shape'])}")
    print("                 features: " + ", ".join(shape(s) for s in summary["discriminator_feature_shapes"]))
    print(f"  losses (generator, {summary['generator_steps']} updates per batch): "
          + ", ".join(f"{name} × {weight:g}" for name, weight in summary["loss_terms"].items()))
    print(f"  discriminator loss: {summary['discriminator_loss']}")
    if summary["vgg_layers"]:
        print("  VGG-19 layers: " + ", ".join(summary["vgg_layers"]))
    return 0
