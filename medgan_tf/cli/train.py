"""Train a MedGAN variant (Algorithm 1) and write a run directory.

Task presets hold the paper's settings; every hyperparameter below overrides one field.
Without --data, the task's built-in synthetic dataset is made once (cached) through the real
conversion pipeline and used.

Examples:
  medgan-tf train --data data/sct --logdir runs/sct       # the task the data was converted for
  medgan-tf train --task my_task.toml --data data/mine --logdir runs/mine
  medgan-tf train --epochs 1 --steps-per-epoch 2 --image-size 64 \\
      --ublocks 1 --base-filters 8 --logdir runs/smoke   # the default task on its built-in data
  medgan-tf train --resume runs/pd --epochs 300        # continue, with a longer schedule
  medgan-tf train --resume runs/pd --data data/pd-v2 --data-changed   # continue on other data, on purpose
  medgan-tf train --resume runs/pd --restart           # its checkpoints all damaged: again from step 0
  medgan-tf train --folds 5 --data data/sct --logdir runs/sct5   # 5 runs on patient folds (again: continue)
  tensorboard --logdir runs/
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path

from medgan_tf import config as config_lib

from medgan_tf import presets, tasks

HELP = "train a model (Algorithm 1) into a run directory with checkpoints and TensorBoard logs"

log = logging.getLogger(__name__)

# flag dest → dotted config field. Flags default to None so only what the user typed overrides.
FIELD_FLAGS = {
    "epochs": "train.epochs",
    "steps_per_epoch": "train.steps_per_epoch",
    "batch_size": "train.batch_size",
    "generator_steps": "train.generator_steps",
    "lr_generator": "train.generator_learning_rate",
    "lr_discriminator": "train.discriminator_learning_rate",
    "beta1": "train.beta_1",
    "beta2": "train.beta_2",
    "seed": "train.seed",
    "xla": "train.xla",
    "mixed_precision": "train.mixed_precision",
    "strategy": "train.strategy",
    "vgg_weights": "train.vgg_weights",
    "checkpoint_every": "train.checkpoint_every_steps",
    "keep_checkpoints": "train.keep_checkpoints",
    "image_every": "train.image_summary_every_steps",
    "validation_steps": "train.validation_steps",
    "select_by": "train.select_by",
    "patience": "train.patience",
    "validate_every": "train.validate_every_steps",
    "deterministic": "train.deterministic",
    "image_size": "data.image_size",
    "augment": "data.augment",
    "context_slices": "data.context_slices",
    "ublocks": "generator.num_ublocks",
    "base_filters": "generator.base_filters",
    "normalization": "generator.normalization",
    "residual": "generator.residual",
    "discriminator_normalization": "discriminator.normalization",
    "lambda_cgan": "losses.cgan",
    "lambda_perceptual": "losses.perceptual",
    "lambda_style": "losses.style",
    "lambda_content": "losses.content",
    "lambda_l1": "losses.l1",
    "lambda_l2": "losses.l2",
    "lambda_tv": "losses.total_variation",
    "lambda_feature_matching": "losses.feature_matching",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_what_arguments(parser.add_argument_group("what to train"))
    size = parser.add_argument_group("model size (small values for smoke runs)")
    size.add_argument("--image-size", type=int, help="slice size S (S×S), a power of two; default 256")
    size.add_argument("--ublocks", type=int, help="CasNet depth N (U-blocks); default from the variant")
    size.add_argument("--base-filters", type=int, help="first-layer width of each U-block; default 64")
    size.add_argument("--normalization", choices=("instance", "batch"), help="generator normalization")
    size.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                      help="each U-block adds a correction to its input (identity at the start) instead of "
                           "drawing the image anew: for denoising, where the noise is small against the window; "
                           "default off (the paper's model)")
    size.add_argument("--discriminator-normalization", choices=("instance", "batch", "none"))

    schedule = parser.add_argument_group("Algorithm 1")
    schedule.add_argument("--epochs", type=int, help="default 200")
    schedule.add_argument("--steps-per-epoch", type=int, help="default: one pass over the training split")
    schedule.add_argument("--batch-size", type=int, help="per-replica batch size; default 1")
    schedule.add_argument("--generator-steps", type=int, help="N_G generator updates per discriminator update; default 3")
    schedule.add_argument("--lr-generator", type=float, help="Adam learning rate of G; default 2e-4")
    schedule.add_argument("--lr-discriminator", type=float, help="Adam learning rate of D; default 2e-4")
    schedule.add_argument("--beta1", type=float, help="Adam β1; default 0.5")
    schedule.add_argument("--beta2", type=float, help="Adam β2; default 0.999")
    schedule.add_argument("--seed", type=int)
    schedule.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                          help="paired random flips and shifts of the training slices (off by default, as in the paper)")

    losses = parser.add_argument_group("loss weights (eq. 12; 0 switches a term off)")
    losses.add_argument("--lambda-cgan", type=float)
    losses.add_argument("--lambda-perceptual", type=float, help="λ1, default 20")
    losses.add_argument("--lambda-style", type=float, help="λ2, default 1e-4")
    losses.add_argument("--lambda-content", type=float, help="λ3, default 1e-4")
    losses.add_argument("--lambda-l1", type=float)
    losses.add_argument("--lambda-l2", type=float)
    losses.add_argument("--lambda-tv", type=float)
    losses.add_argument("--lambda-feature-matching", type=float)
    losses.add_argument("--vgg-weights", help="auto (default: imagenet when cached/downloadable, else random with a warning), imagenet, a local .h5 file, or none (random: tests only)")

    run = parser.add_argument_group("execution")
    run.add_argument("--xla", choices=("auto", "on", "off"), help="XLA compilation; auto = on for GPU, off for CPU")
    run.add_argument("--mixed-precision", choices=("auto", "off", "float16", "bfloat16"), help="auto = bfloat16 where the device computes it natively (CPU avx512_bf16/amx_bf16, GPU compute "
                     "capability ≥ 8.0), float16 on older GPUs, off (float32) elsewhere; the log says what it chose and why")
    run.add_argument("--strategy", choices=("auto", "default", "mirrored", "multiworker"),
                     help="tf.distribute strategy; multiworker reads TF_CONFIG")
    run.add_argument("--logical-cpus", type=int, default=1, help="split the CPU into N logical devices (to try mirrored on a CPU)")
    run.add_argument("--deterministic", action="store_true", default=None, help="op determinism (slower; exact resume)")
    run.add_argument("--checkpoint-every", type=int, help="steps between checkpoints; default 500 (and every epoch end)")
    run.add_argument("--keep-checkpoints", type=int, help="how many checkpoints to keep; default 3")
    run.add_argument("--image-every", type=int, help="steps between TensorBoard image grids; default 200")
    run.add_argument("--validation-steps", type=int, help="validation batches per epoch; default 32")
    run.add_argument("--select-by", choices=("ssim", "psnr", "mse"),
                     help="validation metric (paper's 0–255 scale) that picks the `best` checkpoint; default ssim")
    run.add_argument("--patience", type=int,
                     help="stop after N validations without improvement of --select-by; default: never")
    run.add_argument("--validate-every", type=int, metavar="N",
                     help="score the val split every N training steps (and at the last step) instead of at each "
                          "epoch end; each validation feeds --select-by and --patience; default: every epoch")
    run.add_argument("--log-every", type=int, default=10, help="steps between scalar summaries / quiet log lines")
    run.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")


def _add_what_arguments(what) -> None:
    """The "what to train" group: task, model, data, run directory, resuming and folds."""
    what.add_argument("--task", metavar="NAME|FILE.toml",
                      help=tasks.flag_help() + f"; default: the task --data was converted for, else {tasks.DEFAULT_TASK} "
                      "(a resumed run keeps its own)")
    what.add_argument("--model", help="registered variant (default medgan); see `medgan-tf summary --help`")
    what.add_argument("--data", type=Path, help="converted dataset directory (medgan-tf convert); default: built-in "
                      "synthetic data, or with --resume the run's own dataset")
    what.add_argument("--logdir", type=Path, help="run directory to create (default runs/<task>-<model>-<time>)")
    what.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN from its newest intact checkpoint (a damaged "
                      "newer one is named and skipped; none intact is an error)")
    what.add_argument("--restart", action="store_true",
                      help="with --resume: train RUN again from step 0 on purpose (its config and dataset kept; its "
                      "checkpoints are replaced as new ones are saved)")
    what.add_argument("--folds", type=int, metavar="K",
                      help="K-fold ensemble training: the training split's patients are dealt into K folds and K runs "
                      "are trained into LOGDIR/fold-1 … fold-K, each validated on its own held-out patients (the "
                      "dataset's val split is not used); run the same command again to continue (finished folds are "
                      "kept). `medgan-tf export --ensemble LOGDIR` makes one SavedModel of them")
    what.add_argument("--data-changed", action="store_true",
                      help="with --resume: continue on purpose on a --data other than the run's own, or on its "
                      "dataset converted again since (refused otherwise); the change is recorded in RUN/data.json")

    what.add_argument("--context-slices", type=int, metavar="K",
                      help="2.5D: the generator and the discriminator's condition see the 2K+1 adjacent source slices "
                      "(edge slices repeat) and G still outputs the centre slice; K ≤ the K the data was converted "
                      "with; default 0 (the paper's 2D model). Every source of a multi-source dataset (source_2, …) "
                      "is used, each as 2K+1 channels")


def resolve_config(args: argparse.Namespace) -> tuple[config_lib.ExperimentConfig, config_lib.ExperimentConfig | None]:
    """(config to train, the resumed run's saved config or None)."""
    from medgan_tf.training import checkpoints

    overrides = {field: getattr(args, dest) for dest, field in FIELD_FLAGS.items() if getattr(args, dest) is not None}
    saved = checkpoints.read_config(args.resume) if args.resume else None
    if saved is not None:
        base = saved
        if args.task and args.task != saved.task:
            overrides["task"] = args.task
        if args.model and args.model != saved.model:
            overrides["model"] = args.model
    else:
        base = presets.task_preset(args.task or _dataset_task(args.data) or tasks.DEFAULT_TASK, args.model or "medgan")
    try:
        return config_lib.override(base, overrides), saved
    except ValueError as error:
        from medgan_tf.errors import UserError

        raise UserError(str(error)) from error


def _dataset_task(data_dir: Path | None) -> tasks.Task | None:
    """The task a converted dataset was made for (its manifest's name and data config), or None."""
    if data_dir is None:
        return None
    from medgan_tf.data.manifest import manifest_data_config, manifest_task, read_manifest

    manifest = read_manifest(data_dir)
    name, data = manifest_task(manifest), manifest_data_config(manifest)
    if name is None or data is None:
        return None
    log.info("task %s, as %s was converted", name, data_dir)
    return tasks.from_experiment(name, data)


def run(args: argparse.Namespace) -> int:
    from medgan_tf.config import validate
    from medgan_tf.training import runtime, train_experiment

    experiment, saved = resolve_config(args)
    validate(experiment)
    if args.data_changed and saved is None:
        from medgan_tf.errors import UserError

        raise UserError("--data-changed only applies with --resume RUN (continuing a run on changed data)")
    if args.restart and saved is None:
        from medgan_tf.errors import UserError

        raise UserError("--restart only applies with --resume RUN (training that run again from step 0)")
    if saved is not None:
        run_dir = Path(args.resume)
    else:
        run_dir = args.logdir or Path("runs") / f"{experiment.task}-{experiment.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    rt = runtime.setup(experiment.train.strategy, experiment.train.xla, experiment.train.mixed_precision, args.logical_cpus)
    data_dir = args.data
    if data_dir is None and saved is None:
        from medgan_tf.workflows.builtin import ensure_builtin_dataset

        data_dir = ensure_builtin_dataset(experiment.task, experiment.data.image_size,
                                          context_slices=experiment.data.context_slices)
        log.info("no --data given: using the built-in synthetic %s dataset at %s (made by `medgan-tf synth` + "
                 "`medgan-tf convert`)", experiment.task, data_dir)

    # SIGTERM (a cluster scheduler's stop) saves a checkpoint like Ctrl-C does.
    previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if args.folds is not None:
        try:
            _train_folds(args, experiment, data_dir, run_dir, rt)
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
        return 0
    try:
        summary = train_experiment(experiment, data_dir, run_dir, runtime=rt, resume=saved is not None,
                                   restart=args.restart, data_changed=args.data_changed, quiet=args.quiet, log_every=args.log_every)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    log.info("done: step %d, %d generator and %d discriminator updates; summary in %s",
             summary["step"], summary["generator_updates"], summary["discriminator_updates"], run_dir / "summary.json")
    return 0


def _train_folds(args: argparse.Namespace, experiment, data_dir: Path, run_dir: Path, rt) -> None:
    from medgan_tf.errors import UserError
    from medgan_tf.training.folds import train_folds

    if args.resume is not None or args.restart or args.data_changed:
        raise UserError("--folds continues by itself: run the same command again with the same --logdir (not "
                        "--resume/--restart/--data-changed)")
    if args.logdir is None:
        raise UserError("--folds needs --logdir RUN (the folds go to RUN/fold-1 … RUN/fold-K)")
    if data_dir is None:
        raise UserError("--folds needs a dataset: give --data")
    summaries = train_folds(experiment, data_dir, run_dir, args.folds, runtime=rt, quiet=args.quiet,
                            log_every=args.log_every)
    for fold, summary in enumerate(summaries, start=1):
        log.info("fold %d: step %d, best %s", fold, summary["step"], summary.get("best"))
    log.info("done: %d folds in %s; `medgan-tf export --ensemble %s` makes one SavedModel of them", len(summaries),
             run_dir, run_dir)


def _raise_keyboard_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt
