"""Export a run's generator as a SavedModel for TF Serving.

Writes OUT/<version>/ (saved_model.pb, variables/, assets/config.json, assets/normalization.json);
OUT defaults to savedmodels/<task>, the version to the next free number. Signatures:
`serving_default` (normalized slices `source` → `output`, float32 (B, S, S, 1) in [-1, 1]),
`physical` (the same in HU / SUV / MR units; per-volume normalizations take the volume's
`source_low`/`source_high` per slice) and, for per-volume normalizations,
`fit_source_normalization` (a whole volume → its `source_low`/`source_high`).

Examples:
  medgan-tf export runs/pd                         # → savedmodels/pet_denoise/1
  medgan-tf export runs/pd --out /models/medgan --version 7
  saved_model_cli show --dir savedmodels/pet_denoise/1 --all
  docker run -p 8501:8501 -v $PWD/savedmodels/pet_denoise:/models/medgan \\
      -e MODEL_NAME=medgan tensorflow/serving
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a run's generator as a TF Serving SavedModel (normalized and physical-unit signatures)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, metavar="RUN", help="run directory written by `medgan-tf train`")
    parser.add_argument("--out", type=Path, help="model base folder (default savedmodels/<task>)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--checkpoint", help="a specific checkpoint prefix of RUN (default: the latest)")


def run(args: argparse.Namespace) -> int:
    from medgan_tf.serving.export import export_run
    from medgan_tf.serving.signatures import normalization_description
    from medgan_tf.training import checkpoints

    version_dir = export_run(args.run, args.out, args.version, checkpoint=args.checkpoint)
    experiment = checkpoints.read_config(args.run)
    description = normalization_description(experiment)
    size = experiment.data.image_size
    print(f"exported {version_dir}")
    print(f"  serving_default: source float32 (-1, {size}, {size}, 1) in [-1, 1] → output (same shape)")
    print(f"  physical:        {', '.join(description['physical_inputs'])} → output in {description['target']['unit']}")
    return 0
