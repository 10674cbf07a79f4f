"""Check what this machine gives medgan-tf, before training or serving on it.

Prints the devices TensorFlow sees (GPUs with their compute capability), what `auto` chooses here
and why — `train --xla auto`, `train --mixed-precision auto`, `export --precision auto`, decided by
the same functions those commands use —, whether this TensorFlow has CUDA, the versions of the
key packages (MISSING when not installed), and the cache folders: Keras' (where the VGG-19
ImageNet weights of the style/content losses are stored, and whether they are there) and the
built-in datasets'. Nothing is downloaded or written.

Examples:
  medgan-tf doctor
  medgan-tf doctor --json > doctor.json      # one JSON object, e.g. for a support request
"""

from __future__ import annotations

import argparse

HELP = "check this machine: devices, what auto chooses (XLA, precision), package versions, caches"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")


def run(args: argparse.Namespace) -> int:
    import json

    from medgan_tf.workflows.doctor import report, report_lines

    result = report()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(report_lines(result)))
    return 0
