"""The library entry point for training: `train_experiment(config, data, run_dir, …)`.

The command line, the demo and the paper-comparison workflow all train through this one
function; it resolves the data (a converted dataset, or the task's built-in synthetic one),
checks a resumed run's configuration and dataset, and hands over to the training loop in
`medgan_tf.training.driver`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from medgan_tf import config as config_lib
from medgan_tf.errors import UserError
from medgan_tf.training.runtime import Runtime

log = logging.getLogger(__name__)


# Fields that may change between a run and its resumption without changing what is trained.
RESUMABLE_FIELDS = (
    "train.epochs",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.image_summary_every_steps",
    "train.validation_steps",
    "train.xla",
    "train.mixed_precision",
    "train.strategy",
)
DATA_FILE = "data.json"  # RUN/data.json: the dataset a run trains on


def incompatible_fields(saved: config_lib.ExperimentConfig, requested: config_lib.ExperimentConfig) -> dict:
    """Dotted field → (run's value, requested value) for differences that forbid resuming."""
    return {k: v for k, v in config_lib.diff(saved, requested).items() if k not in RESUMABLE_FIELDS}


def run_dataset(run_dir: str | Path) -> Path | None:
    """The dataset directory a run was trained on (None for runs that did not record one)."""
    path = Path(run_dir) / DATA_FILE
    if not path.is_file():
        return None
    try:
        return Path(json.loads(path.read_text())["data_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def train_experiment(
    config: config_lib.ExperimentConfig,
    data_dir: str | Path | None,
    run_dir: str | Path,
    *,
    runtime: Runtime,
    resume: bool = False,
    quiet: bool = False,
    log_every: int = 10,
) -> dict:
    """Train `config` on the converted dataset `data_dir` into `run_dir`; returns summary.json.

    resume=False: `run_dir` must not hold a run yet. resume=True: continue `run_dir` from its last
    complete checkpoint; `config` may differ from the run's only in `RESUMABLE_FIELDS`, and
    `data_dir` may be None (the run's own dataset, recorded in RUN/data.json) or that same
    dataset. Every mismatch is a UserError that names it; nothing is written before the checks.
    `runtime` comes from `medgan_tf.training.runtime.setup` (strategy, XLA, precision).
    """
    from medgan_tf.data.manifest import check_compatible
    from medgan_tf.training import checkpoints, driver

    config_lib.validate(config)
    run_dir = Path(run_dir)
    data_dir = _resolve_run_data(run_dir, data_dir, resume)
    if resume:
        saved = checkpoints.read_config(run_dir)
        differing = incompatible_fields(saved, config)
        if differing:
            lines = "; ".join(f"{k}: run has {a!r}, requested {b!r}" for k, (a, b) in differing.items())
            raise UserError(f"cannot resume {run_dir} with a different configuration ({lines})")
    elif (run_dir / checkpoints.CONFIG_FILE).exists():
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --logdir")
    check_compatible(data_dir, task=config.task, image_size=config.data.image_size, split="train")
    if runtime.is_chief:
        checkpoints.write_json_atomic(run_dir / DATA_FILE, {"data_dir": str(data_dir.resolve())})
    log.info("training %s on %s into %s", config.model, config.task, run_dir)
    return driver.train(config, run_dir, data_dir=data_dir, runtime=runtime, resume=resume, quiet=quiet,
                        log_every=log_every)


def _resolve_run_data(run_dir: Path, data_dir: str | Path | None, resume: bool) -> Path:
    recorded = run_dataset(run_dir) if resume else None
    if data_dir is None:
        if recorded is None:
            raise UserError(f"{run_dir} does not record its dataset; pass --data with the dataset it was trained on")
        log.info("resuming on the run's own dataset %s", recorded)
        return recorded
    data_dir = Path(data_dir)
    if recorded is not None and data_dir.resolve() != recorded.resolve():
        raise UserError(f"{run_dir} was trained on {recorded}, not {data_dir}; resume without --data (or with "
                        f"--data {recorded}), or start a new run")
    return data_dir
