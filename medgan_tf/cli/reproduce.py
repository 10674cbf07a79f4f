"""Reproduce the paper's comparisons on your data: Table I (loss ablations), Table II (pix2pix, PAN,
ID-CGAN, Fila-sGAN vs MedGAN), Fig. 4/5 (the same slices by every method) and, with
--ublocks-sweep, Fig. 6 (pix2pix vs CasNet depth).

Every variant is trained for the same --budget-steps with the same seed, data and batch size, then
scored on the same validation split. Runs live in OUT/runs/<name>; a second invocation skips
finished runs and continues interrupted ones from their checkpoints. Report files in OUT:
table.md, figure.png, results.json (and ublocks.png with a sweep).

Examples:
  medgan-tf reproduce --budget-steps 2000 --out reports/default   # all 9 methods, the default task
  medgan-tf reproduce --models pix2pix,medgan_1g --budget-steps 2 \\
      --image-size 64 --base-filters 8 --out /tmp/smoke
  medgan-tf reproduce --task my_task.toml --data data/mine --models pix2pix --ublocks-sweep 1,2,3,4,5,6,7
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "train every variant under one budget and write the paper's comparison tables and figures"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from medgan_tf.evaluation.protocols import PROTOCOLS, records_protocol, volume_protocols
    from medgan_tf import tasks

    parser.add_argument("--task", default=tasks.DEFAULT_TASK, metavar="NAME|FILE.toml",
                        help=tasks.flag_help(tasks.DEFAULT_TASK) + " (without --data: a task with built-in data)")
    parser.add_argument("--data", type=Path, help="converted dataset (medgan-tf convert); default: the built-in synthetic data")
    parser.add_argument("--models", help="comma-separated registered variants (default: all nine of Tables I and II)")
    parser.add_argument("--budget-steps", type=int, default=200,
                        help="training steps per method (one step = N_G generator + 1 discriminator update); default 200")
    parser.add_argument("--image-size", type=int, help="slice size S, a power of two (default: the task's, 256)")
    parser.add_argument("--base-filters", type=int, help="first-layer width of each U-block (default 64)")
    parser.add_argument("--ublocks-sweep", help="comma-separated CasNet depths to train pix2pix with (Fig. 6), e.g. 1,2,3")
    parser.add_argument("--context-slices", type=int, default=0, metavar="K",
                        help="also train every model as a 2.5D model seeing K neighbouring slices per side, under the "
                        "same budget, and report both with their slice-to-slice consistency (default 0: 2D only); "
                        "--data must be converted with --context-slices ≥ K (the built-in data is made so)")
    parser.add_argument("--out", type=Path, help="report folder (default reports/reproduce-<task>)")
    parser.add_argument("--protocol", choices=PROTOCOLS.names(), default=records_protocol().name,
                        help=f"{records_protocol().name} (default): Tables I/II on the paper's per-slice metrics; "
                             f"{'|'.join(volume_protocols())}: also table-<protocol>.md, every method scored on whole "
                             "volumes in physical units, with the input and the classical baselines as rows")
    parser.add_argument("--pairs", type=Path, metavar="CSV",
                        help="with a volume --protocol: the volumes to score (medgan-tf evaluate --pairs columns); "
                             "default: held-out synthetic patients (needed with --data)")
    parser.add_argument("--seed", type=int, default=0, help="one seed for every method (default 0)")
    parser.add_argument("--vgg-weights", default="auto",
                        help="auto (default: imagenet when cached/downloadable, else random with a warning), imagenet, "
                             "a local .h5 file, or none (random)")
    parser.add_argument("--figure-slices", type=int, default=4, help="validation slices shown in figure.png (default 4)")
    parser.add_argument("--deterministic", action="store_true",
                        help="op determinism: every variant sees exactly the same batches (slower)")
    parser.add_argument("--xla", choices=("auto", "on", "off"), default="auto", help="auto = on for GPU, off for CPU")
    parser.add_argument("--mixed-precision", choices=("auto", "off", "float16", "bfloat16"), default="auto",
                        help="auto = bfloat16 where the processor computes it natively (CPU avx512_bf16/amx_bf16, "
                             "GPU ≥ 8.0), float16 on older GPUs, off elsewhere; the log says which and why")


def run(args: argparse.Namespace) -> int:
    from medgan_tf import presets
    from medgan_tf.evaluation.protocols import PROTOCOLS, volume_protocols
    from medgan_tf.workflows import reproduce
    from medgan_tf.errors import UserError
    from medgan_tf.training import runtime

    preset = presets.task_preset(args.task, "medgan")
    models = reproduce.parse_list(args.models, "--models") if args.models is not None else list(reproduce.DEFAULT_MODELS)
    sweep_text = reproduce.parse_list(args.ublocks_sweep, "--ublocks-sweep")
    try:
        sweep = [int(depth) for depth in sweep_text]
    except ValueError as error:
        raise UserError(f"--ublocks-sweep: expected integers like 1,2,3; received {args.ublocks_sweep!r}") from error
    if args.context_slices < 0:
        raise UserError(f"--context-slices must be ≥ 0; received {args.context_slices}")
    if args.figure_slices < 1:
        raise UserError(f"--figure-slices must be ≥ 1; received {args.figure_slices}")
    settings = reproduce.Settings(
        task=args.task,
        budget_steps=args.budget_steps,
        image_size=args.image_size or preset.data.image_size,
        base_filters=args.base_filters or preset.generator.base_filters,
        seed=args.seed,
        vgg_weights=args.vgg_weights,
        figure_slices=args.figure_slices,
        deterministic=args.deterministic,
        context_slices=args.context_slices,
    )
    # Validate everything cheap before the runtime (and TensorFlow's devices) are set up.
    reproduce.plan(models, sweep, args.context_slices)
    out_dir = args.out or Path("reports") / f"reproduce-{args.task}"
    rt = runtime.setup("auto", args.xla, args.mixed_precision)
    if args.pairs is not None and PROTOCOLS.get(args.protocol).records:
        raise UserError(f"--pairs needs a volume --protocol ({', '.join(volume_protocols())})")
    payload = reproduce.reproduce(settings, out_dir, models=models, ublocks_sweep=sweep, data_dir=args.data, runtime=rt,
                                  protocol=args.protocol, pairs=args.pairs)
    print((Path(out_dir) / "table.md").read_text(encoding="utf-8"))
    if not PROTOCOLS.get(args.protocol).records:
        print(Path(payload["files"][f"table_{args.protocol}"]).read_text(encoding="utf-8"))
    log.info("results: %s", payload["files"])
    return 0
