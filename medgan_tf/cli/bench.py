"""Measure the project's performance figures in one run and compare them with the targets.

Reports the machine's fp32 and bf16 GEMM GFLOP/s (the same-run references), CasNet-6 SavedModel
inference at batch 1 and 8 (slices/s, GFLOP/s), `translate` of a 64-slice volume — each for a
float32 and a bfloat16 export of the same weights — CasNet-6 batch-8 inference on every other
runtime an export can target (OpenVINO, LiteRT; ONNX Runtime where tf2onnx can convert it) in
float32, bfloat16 where native and post-training int8 (with its accuracy against float32), one
MedGAN iteration (3 G + 1 D updates with VGG losses) at 256²/CasNet-6 and at the demo preset in
float32 and mixed_bfloat16, input-pipeline slices/s, conversion slices/s with 1 and 2 Beam
workers (and with registration), and a whole archive's translation in volumes per minute with 1
and 2 Beam workers. Every figure is a median over timed repeats after an untimed warm-up (the Beam
figures: one run each). Other work on the machine skews the figures: the report states the load
average before and after, and whether this processor computes bfloat16 natively (elsewhere the
bf16 figures measure emulation).

A full run took 37 minutes on 2 cores (10 of them the int8 exports); its int8 exports need up to about 16 GB of memory
(LiteRT's converter on CasNet-6). --quick uses fewer repeats and smaller problems and skips the
bf16 256² iteration, whose first call alone is about a minute of tracing and graph optimization.
Results and what bounds each target: benchmarks/README.md.

Examples:
  medgan-tf bench --quick
  medgan-tf bench --json > bench.json
"""

from __future__ import annotations

import argparse
import sys

HELP = "measure inference, translate, training (float32 and bfloat16), input-pipeline and conversion speed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller problems, no bfloat16 256² iteration")


def run(args: argparse.Namespace) -> int:
    import json

    from medgan_tf.workflows import bench

    def progress(message: str) -> None:
        print(f"bench: {message} …", file=sys.stderr, flush=True)

    report = bench.run_bench(quick=args.quick, progress=progress)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(bench.format_table(report))
    return 0
