"""Run the whole product on built-in synthetic data and write a report folder.

synth → convert (Apache Beam) → train a small MedGAN-1G preset → export a TF Serving SavedModel
→ translate one held-out volume → evaluate on the validation split (model vs untouched input).
About 5–10 minutes on two CPU cores. Open OUT/README.md afterwards. The exit status is 1 when the
trained model does not beat the untouched input on SSIM (the report is written either way).
"""

from __future__ import annotations

import argparse
import sys
import dataclasses
import logging
from pathlib import Path

from medgan_tf import tasks

HELP = "end-to-end demo on synthetic data: synth → convert → train → export → translate → evaluate"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=tasks.DEFAULT_TASK, metavar="NAME",
                        help=tasks.flag_help(tasks.DEFAULT_TASK, phantom_only=True, what="a task with built-in data"))
    parser.add_argument("--out", type=Path, help="report folder (default reports/demo-<task>; replaced if present)")
    parser.add_argument("--steps", type=int, help="training iterations (default 200; fewer for a quick look)")
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")


def run(args: argparse.Namespace) -> int:
    from medgan_tf.workflows.demo import DEMO_PRESET, run_demo
    from medgan_tf.errors import UserError

    preset = DEMO_PRESET
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be at least 1, got {args.steps}")
        preset = dataclasses.replace(preset, steps=args.steps)
    out = args.out or Path("reports") / f"demo-{args.task}"
    verdict = run_demo(args.task, out, preset, quiet=args.quiet)
    model, given = verdict["model_metrics"], verdict["input_metrics"]
    print("\nheld-out test patients, mean over slices (0–255 scale):")
    print(f"  {'':14} {'SSIM':>8} {'PSNR':>8}")
    rows = {"model": model, "input": given, **verdict["baseline_metrics"]}
    for name, values in rows.items():
        print(f"  {name:14} {values['ssim']:8.4f} {values['psnr']:8.2f}")
    beats = verdict["beats_input"]
    print(f"model beats the untouched input: SSIM {'yes' if beats['ssim'] else 'NO'}, PSNR {'yes' if beats['psnr'] else 'NO'}")
    for name, against in verdict["beats_baselines"].items():
        print(f"model beats the classical baseline {name}: SSIM {'yes' if against['ssim'] else 'no'}, "
              f"PSNR {'yes' if against['psnr'] else 'no'}")
    print(f"report: {out / 'README.md'}")
    if not verdict["passed"]:
        print("error: the demo model did not beat the untouched input on both SSIM and PSNR", file=sys.stderr)
        return 1
    return 0
