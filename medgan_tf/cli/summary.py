"""Show a model variant's networks and losses: trainable parameters, output shapes, loss weights.

The facts come from `medgan_tf.training.summary.describe`; this module only parses and prints.

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
    from medgan_tf import tasks

    parser.add_argument("--task", default=tasks.REFERENCE_TASK, metavar="NAME|FILE.toml",
                        help=tasks.flag_help(tasks.REFERENCE_TASK))
    parser.add_argument("--image-size", type=int, default=None, help="slice size S (default: the task's, 256)")
    parser.add_argument("--ublocks", type=int, default=None, help="CasNet depth (default: the variant's)")
    parser.add_argument("--base-filters", type=int, default=None, help="first encoder width (default: 64)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def resolve_config(args: argparse.Namespace):
    """The ExperimentConfig the flags describe (task preset × registered variant × overrides)."""
    from medgan_tf import config as config_lib
    from medgan_tf import presets
    from medgan_tf.errors import UserError

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
    """`medgan_tf.training.summary.describe`, with the builders' complaints as one-line errors."""
    from medgan_tf.errors import UserError
    from medgan_tf.training.summary import describe

    try:
        return describe(config)
    except ValueError as error:
        raise UserError(str(error)) from error


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
    print(f"                 {summary['discriminator_receptive_field']}×{summary['discriminator_receptive_field']} "
          f"patches, a {'×'.join(map(str, summary['discriminator_patch_shape']))} probability map")
    print("                 features: " + ", ".join(shape(s) for s in summary["discriminator_feature_shapes"]))
    print(f"  losses (generator, {summary['generator_steps']} updates per batch): "
          + ", ".join(f"{name} × {weight:g}" for name, weight in summary["loss_terms"].items()))
    print(f"  discriminator loss: {summary['discriminator_loss']}")
    if summary["vgg_layers"]:
        print("  VGG-19 layers: " + ", ".join(summary["vgg_layers"]))
    return 0
