"""Evaluate a model on a converted dataset with the paper's metrics.

SSIM, PSNR, MSE, VIF (pixel domain) and UQI on the paper's 0–255 scale, plus MAE in the target's
physical unit (from each record's normalization parameters); LPIPS when its pretrained weights can
be loaded, else listed as unavailable with the reason. Every metric is computed for the model
output *and* for the untouched input, per slice and per patient (mean ± sd).

Writes REPORT_DIR/metrics.json, metrics.md (a table like the paper's Table II) and figure.png
(K slices: input | output | target | error). `--json` prints the summary as JSON on stdout.

Examples:
  medgan-tf evaluate --model savedmodels/pet_denoise --data data/pet_denoise --out reports/pd
  medgan-tf evaluate --model runs/pd --data data/pet_denoise --split train --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "score a model (export or run) on a converted dataset: SSIM, PSNR, MSE, VIF, UQI, MAE → report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="SAVEDMODEL|RUN",
                        help="export folder (version or base folder) or a run directory (latest checkpoint)")
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="converted dataset (medgan-tf convert)")
    parser.add_argument("--split", default="val", choices=("train", "val"), help="split to score (default val)")
    parser.add_argument("--out", type=Path, metavar="REPORT_DIR",
                        help="report folder (default reports/<task>-<split>)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default 8)")
    parser.add_argument("--figure-slices", type=int, default=4, metavar="K", help="slices in figure.png (default 4)")
    parser.add_argument("--max-slices", type=int, help="score only the first N slices (quick checks)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument("--precision", choices=("export", "auto", "float32", "bfloat16"), default="export",
                        help="compute precision: export (default) = what the model carries (an export's own, float32 "
                             "for a run directory); for a run directory auto|float32|bfloat16 (auto = bfloat16 where "
                             "this processor computes it natively); an export refuses a precision it was not written in")


def run(args: argparse.Namespace) -> int:
    from medgan_tf.errors import UserError
    from medgan_tf.evaluation.consistency import consistency_line, write_consistency
    from medgan_tf.evaluation.datasets import evaluate_dataset
    from medgan_tf.evaluation.reports import report_markdown, write_report
    from medgan_tf.serving.loading import load_model

    if args.figure_slices < 0:
        raise UserError(f"--figure-slices must be ≥ 0; received {args.figure_slices}")
    model = load_model(args.model, precision=args.precision)
    result = evaluate_dataset(
        model,
        args.data,
        args.split,
        batch_size=args.batch_size,
        num_examples=max(args.figure_slices, 1),
        max_slices=args.max_slices,
    )
    out_dir = args.out if args.out is not None else Path("reports") / f"{model.config.task}-{args.split}"
    title = f"{model.config.model} on {model.config.task} ({args.split} split of {args.data.name or args.data})"
    paths = write_report(result, out_dir, title=title, figure_slices=args.figure_slices)
    paths.update(write_consistency(getattr(result, "slice_consistency", None), out_dir))
    summary = result.to_dict()
    if args.json:
        payload = {
            "model": str(args.model),
            "data": str(args.data),
            "split": args.split,
            "report": {key: str(value) for key, value in paths.items()},
            **{key: summary[key] for key in ("unit", "num_slices", "num_patients", "lpips", "summary")},
            "slice_consistency": getattr(result, "slice_consistency", None),
        }
        json.dump(payload, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print(report_markdown(result, title=title))
        print(consistency_line(getattr(result, "slice_consistency", None)))
        print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0
