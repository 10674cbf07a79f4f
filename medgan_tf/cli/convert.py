"""Convert a pairs CSV (patient_id,source,target[,split][,mask]; NIfTI files or DICOM series
folders) into sharded GZIP TFRecords of normalized axial slice pairs plus manifest.json, with the
Apache Beam pipeline of `pipelines/convert.py` (same code as `python -m pipelines.convert`).

The CSV's optional `split` column (train|val|test, any case) places a patient; the others are
hashed into val and test by --val-fraction and --test-fraction. The optional `mask` column names a
mask volume on the source's frame, carried into the records. --spacing and --image-size choose the
model grid, stored in the manifest and followed by train, export and translate. Paths may be local
or on any scheme Beam's FileSystems knows (gs://, s3://, ...); such inputs are staged to a local
temporary copy, and such an output is complete once its manifest.json (written last) exists.

Pairs that are not aligned: --register rigid|affine|deformable registers each target to its
source first (correlation within a modality, mutual information across); the manifest and one log
line per pair report the rotation, translation and similarity before/after, and a pair whose
similarity gets worse or stays low, whose optimizer does not converge, or that moved more than
--max-rotation / --max-translation is rejected with that reason.

Examples:
  medgan-tf convert --pairs pairs.csv --task NAME --out data/sct --spacing 2,2,3 --test-fraction 0.1
  medgan-tf convert --pairs pairs.csv --task my_task.toml --out data/mine     # a task of your own
  medgan-tf convert --pairs pairs.csv --task NAME --out data/reg --register rigid --max-rotation 10
  medgan-tf convert --pairs gs://bucket/pairs.csv --task NAME --out gs://bucket/sct --runner DataflowRunner ...
(NAME: a task of `medgan-tf tasks`.)

Rejected pairs are listed on stderr (with their paths) and in the manifest (by CSV line, without
paths); the exit status is non-zero only when nothing converted or with --strict. One conversion
at a time writes DIR (a second one is refused); an interrupted or failed run (disk full, SIGTERM,
SIGKILL) leaves the previous DIR, or none, never a half-written one. Options this command does not know are passed to Beam as
pipeline options (e.g. --direct_running_mode=multi_threading, or a Dataflow project/region); an
option neither knows is an error naming the nearest known one (a typo is not silently dropped).
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
    from pipelines.convert import convert, terminate
    from pipelines.options import options_from_namespace

    import_tensorflow_quietly()
    options, beam_args = options_from_namespace(args), list(getattr(args, "extra_args", []) or [])
    if threading.current_thread() is not threading.main_thread():
        return convert(options, beam_args)
    previous = signal.signal(signal.SIGTERM, terminate)  # SIGTERM unwinds: lock released, partial removed
    try:
        return convert(options, beam_args)
    finally:
        signal.signal(signal.SIGTERM, previous)
