"""Command-line options of the conversion pipeline, without importing Apache Beam (so that
`medgan-tf --help` stays instant); shared by `python -m pipelines.convert` and `medgan-tf convert`."""

from __future__ import annotations

import argparse

from medgan_tf.config import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The converter's own options (shared by `python -m pipelines.convert` and `medgan-tf convert`)."""
    parser.add_argument("--pairs", required=True, help="CSV with header patient_id,source,target (NIfTI file or DICOM folder paths; relative paths are relative to the CSV)")
    parser.add_argument("--task", required=True, choices=TASKS, help="task preset: spacing, normalization, modalities")
    parser.add_argument("--out", required=True, help="output directory (train/, val/, manifest.json)")
    parser.add_argument("--image-size", type=int, default=None, help="slice size S of the records (default: the task preset's, 256)")
    parser.add_argument("--strict", action="store_true", help="fail (exit 1, no output) if any pair is rejected")
    parser.add_argument("--salt", default=None, help="secret for the patient pseudonyms (default: $MEDGAN_TF_SALT or a per-user secret file)")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    parser.add_argument("--num-shards", type=int, default=None, help="train shards (val gets half; default from the task preset)")
    parser.add_argument("--runner", default="DirectRunner", help="Beam runner (DirectRunner, DataflowRunner, FlinkRunner, ...)")
    parser.add_argument("--num-workers", type=int, default=None, help="DirectRunner: N local worker processes (multi_processing)")
    parser.add_argument("--context-slices", type=int, default=0, metavar="K",
                        help="2.5D: store with every slice its K neighbours on each side (edge slices repeat), so a "
                        "model can be trained on any K' ≤ K (train --context-slices); default 0, the paper's 2D slices")
    parser.add_argument("--extra-source-modalities", default=None, metavar="M2,M3,...",
                        help="modality (CT, PT or MR) of each extra source column source_2, source_3, … of the pairs "
                        "CSV; picks its normalization; default: the task's source modality for each")
    return parser
