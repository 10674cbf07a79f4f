"""Convert a pairs CSV (patient_id,source,target; NIfTI files or DICOM series folders) into
sharded GZIP TFRecords of normalized axial slice pairs plus manifest.json, with the Apache Beam
pipeline of `pipelines/convert.py` (same code as `python -m pipelines.convert`).

Rejected pairs are listed on stderr (with their paths) and in the manifest (by CSV line, without
paths); the exit status is non-zero only when nothing converted or with --strict. One conversion
at a time writes DIR (a second one is refused); an interrupted or failed run (disk full, SIGTERM,
SIGKILL) leaves the previous DIR, or none, never a half-written one. Options this command does not know are passed to Beam as
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
    import signal
    import threading

    from medgan_tf.cli import import_tensorflow_quietly
    from pipelines.convert import run_with_args, terminate

    import_tensorflow_quietly()
    if threading.current_thread() is not threading.main_thread():
        return run_with_args(args, list(getattr(args, "extra_args", []) or []))
    previous = signal.signal(signal.SIGTERM, terminate)  # SIGTERM unwinds: lock released, partial removed
    try:
        return run_with_args(args, list(getattr(args, "extra_args", []) or []))
    finally:
        signal.signal(signal.SIGTERM, previous)
