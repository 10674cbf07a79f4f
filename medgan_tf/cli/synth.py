"""Write the built-in synthetic dataset of a task that has one (`medgan-tf tasks`): NIfTI volume
pairs from anatomical phantoms (a head, a trunk or a pelvis) with physically sensible simulation (PET
Poisson counts at 100 % vs 25 % time reconstructed by FBP; MR rigid motion in k-space; CT photon
counts at full vs quarter dose, CBCT with scatter, fewer photons and a truncated field of view;
every modality of a patient from one tissue map) and DIR/pairs.csv, ready for `medgan-tf convert --pairs DIR/pairs.csv`. Deterministic
per --seed. With --preview, also a PNG of the three orthogonal planes of each pair in
DIR/preview/<patient>.png.
"""

from __future__ import annotations

import argparse
import logging
import time

from medgan_tf import tasks

HELP = "write synthetic phantom NIfTI pairs + pairs.csv for a task"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, metavar="NAME",
                        help=tasks.flag_help(phantom_only=True, what="a task with built-in data"))
    parser.add_argument("--out", required=True, help="output directory (NIfTI pairs and pairs.csv)")
    parser.add_argument("--patients", type=int, default=8, help="number of synthetic patients (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed → identical volumes)")
    parser.add_argument(
        "--image-size", type=int, default=256,
        help="size the phantom to fill an S×S slice at the task spacing (default 256)",
    )
    parser.add_argument(
        "--misalign", type=misalign_bounds, default=None, metavar="MM,DEG",
        help="move each target by a random rigid transform: up to MM mm and DEG degrees (e.g. 6,4); the "
        "transform is written to pairs.csv (misalign_* columns) as the ground truth for `convert --register`",
    )
    parser.add_argument(
        "--preview", action="store_true",
        help="also write OUT/preview/<patient>.png: axial, coronal and sagittal planes of source and target",
    )


def misalign_bounds(text: str) -> tuple[float, float]:
    """"MM,DEG" → (mm, degrees), both ≥ 0 and finite; argparse shows the error."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or not all(0 <= value < 1e3 for value in values):
        raise argparse.ArgumentTypeError(f"expected MM,DEG (two numbers ≥ 0, e.g. 6,4); received {text!r}")
    return values  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    from medgan_tf.data.synthetic import write_task_pairs
    from medgan_tf.errors import UserError

    if args.patients < 1:
        raise UserError(f"--patients {args.patients}; expected at least 1")
    started = time.monotonic()
    csv_path = write_task_pairs(args.task, args.out, args.image_size, patients=args.patients, seed=args.seed,
                                misalign=getattr(args, "misalign", None))
    logging.info("wrote %d synthetic %s pairs and %s in %.1f s", args.patients, args.task, csv_path, time.monotonic() - started)
    if args.preview:
        from medgan_tf.workflows.previews import write_previews

        previews = write_previews(csv_path)
        logging.info("wrote %d preview pictures in %s", len(previews), previews[0].parent)
    print(csv_path)
    return 0
