"""Convert a pairs CSV (patient_id,source,target; NIfTI files or DICOM series folders) into
sharded GZIP TFRecords of normalized axial slice pairs plus manifest.json, with the Apache Beam
pipeline of `pipelines/convert.py` (same code as `python -m pipelines.convert`).

Rejected pairs are listed on stderr and in the manifest; the exit status is non-zero only when
nothing converted or with --strict. Options this command does not know are passed to Beam as
pipeline options (e.g. --direct_running_mode=multi_threading, or a Dataflow project/region).
"""

from __future__ import annotations

import argparse

HELP = "pairs CSV of DICOM/NIfTI volumes → TFRecord shards + manifest (Apache Beam)"
PASS_THROUGH_UNKNOWN_ARGS = True  # Beam pipeline options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.options import add_arguments as add_converter_arguments

    add_converter_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from medgan_tf.cli import import_tensorflow_quietly
    from pipelines.convert import run_with_args

    import_tensorflow_quietly()
    return run_with_args(args, list(getattr(args, "extra_args", []) or []))
