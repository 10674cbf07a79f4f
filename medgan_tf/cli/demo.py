"""Run the whole product on built-in synthetic data and write a report folder.

synth → convert (Apache Beam) → train the task's small demo preset (`Task.demo` over
`workflows.demo.DEMO_PRESET`) → export a TF Serving SavedModel → translate one held-out volume →
evaluate on the held-out test patients against the untouched input and the task's classical
baselines. A few minutes on two CPU cores. Open OUT/README.md afterwards. The exit status is 1,
with a message naming each comparison lost, unless the model beats the untouched input on both
SSIM and PSNR (where source and target share a unit; otherwise every classical baseline); when
it passes but does not also beat every baseline, it says so (the report is written either way).
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
    parser.add_argument("--steps", type=int, help="training iterations (default: the task's demo preset; fewer for a quick look)")
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")


def run(args: argparse.Namespace) -> int:
    from medgan_tf.workflows.demo import demo_preset, run_demo
    from medgan_tf.errors import UserError

    task = tasks.get(args.task)
    preset = demo_preset(task)
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be at least 1, got {args.steps}")
        every = preset.validate_every_steps
        preset = dataclasses.replace(preset, steps=args.steps,
                                     validate_every_steps=every if every is None or every <= args.steps else None)
    out = args.out or Path("reports") / f"demo-{task.name}"
    verdict = run_demo(task.name, out, preset, quiet=args.quiet)
    model, given = verdict["model_metrics"], verdict["input_metrics"]
    print("\nheld-out test patients, mean over slices (0–255 scale):")
    print(f"  {'':14} {'SSIM':>8} {'PSNR':>8}")
    rows = {"model": model, "input": given, **verdict["baseline_metrics"]}
    for name, values in rows.items():
        note = "  (not comparable: source and target differ in unit)" if name == "input" and not verdict["input_comparable"] else ""
        print(f"  {name:14} {values['ssim']:8.4f} {values['psnr']:8.2f}{note}")
    beats = verdict["beats_input"]
    if beats is not None:
        print(f"model beats the untouched input: SSIM {'yes' if beats['ssim'] else 'NO'}, "
              f"PSNR {'yes' if beats['psnr'] else 'NO'}")
    for name, against in verdict["beats_baselines"].items():
        print(f"model beats the classical baseline {name}: SSIM {'yes' if against['ssim'] else 'NO'}, "
              f"PSNR {'yes' if against['psnr'] else 'NO'}")
    print(f"report: {out / 'README.md'}")
    if not verdict["passed"]:
        print("error: the demo model did not beat " + "; ".join(verdict["failed"]), file=sys.stderr)
        return 1
    if not verdict["wins"]:
        print("note: the demo model does not win yet: it did not beat " + "; ".join(verdict["failed"]), file=sys.stderr)
    return 0
