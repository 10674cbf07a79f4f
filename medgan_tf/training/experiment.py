"""The library entry point for training: `train_experiment(config, data, run_dir, …)`.

The command line, the demo and the paper-comparison workflow all train through this one
function; it resolves the data (a converted dataset, or the task's built-in synthetic one),
checks a resumed run's configuration and dataset, and hands over to the training loop in
`medgan_tf.training.driver`.

RUN/data.json records the dataset's identity: its path and the SHA-256 of its manifest.json (the
converter rewrites the manifest on every conversion, so a reconverted dataset has a new one).
Resuming on another path or a changed manifest is refused unless the user says so with
`data_changed=True` (`medgan-tf train --data-changed`); the change is then logged and appended to
the file's "history".
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
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
    "train.select_by",
    "train.patience",
)
DATA_FILE = "data.json"  # RUN/data.json: the dataset a run trains on


def incompatible_fields(saved: config_lib.ExperimentConfig, requested: config_lib.ExperimentConfig) -> dict:
    """Dotted field → (run's value, requested value) for differences that forbid resuming."""
    return {k: v for k, v in config_lib.diff(saved, requested).items() if k not in RESUMABLE_FIELDS}


def manifest_fingerprint(data_dir: str | Path) -> str | None:
    """SHA-256 (hex) of DIR/manifest.json; None when there is none to read."""
    from medgan_tf.data.manifest import MANIFEST

    try:
        return hashlib.sha256((Path(data_dir) / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def _read_record(run_dir: str | Path) -> dict | None:
    """RUN/data.json as a dict holding at least "data_dir"; None for runs that did not record one."""
    path = Path(run_dir) / DATA_FILE
    try:
        record = json.loads(path.read_text())
    except OSError:
        return None
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError alike
        raise UserError(f"{path}: the run's dataset record is garbled ({type(error).__name__}); restore it, or "
                        f"delete it and resume with --data naming the run's dataset") from None
    return record if isinstance(record, dict) and isinstance(record.get("data_dir"), str) else None


def train_experiment(
    config: config_lib.ExperimentConfig,
    data_dir: str | Path | None,
    run_dir: str | Path,
    *,
    runtime: Runtime,
    resume: bool = False,
    restart: bool = False,
    data_changed: bool = False,
    quiet: bool = False,
    log_every: int = 10,
) -> dict:
    """Train `config` on the converted dataset `data_dir` into `run_dir`; returns summary.json.

    resume=False: `run_dir` must not hold a run yet. resume=True: continue `run_dir` from its last
    complete checkpoint; `config` may differ from the run's only in `RESUMABLE_FIELDS`, and
    `data_dir` may be None (the run's own dataset, recorded in RUN/data.json) or that same
    dataset, unchanged since (same manifest fingerprint); `data_changed=True` accepts another or a
    reconverted dataset and records the change. A damaged newest checkpoint is named and the run
    continues from the newest intact one; none intact is a UserError unless `restart=True`, which
    trains the run again from step 0 (its config and data checks as for resume).
    Every mismatch is a UserError that names it; nothing is written before the checks.
    `runtime` comes from `medgan_tf.training.runtime.setup` (strategy, XLA, precision).
    """
    from medgan_tf.data.context import adopt_dataset_sources, check_context
    from medgan_tf.data.manifest import check_compatible
    from medgan_tf.training import checkpoints, driver

    from medgan_tf.training.selection import check_selection_metric

    config_lib.validate(config)
    check_selection_metric(config.train.select_by)
    run_dir = Path(run_dir)
    if restart and not resume:
        raise UserError("--restart only applies with --resume RUN (training that run again from step 0)")
    if data_changed and not resume:
        raise UserError("--data-changed only applies when resuming a run (--resume RUN); a new run records "
                        "its dataset itself")
    record = _read_record(run_dir) if resume else None
    data_dir = _resolve_run_data(run_dir, data_dir, record, data_changed)
    if resume:
        saved = checkpoints.read_config(run_dir)
        differing = incompatible_fields(saved, config)
        if differing:
            lines = "; ".join(f"{k}: run has {a!r}, requested {b!r}" for k, (a, b) in differing.items())
            raise UserError(f"cannot resume {run_dir} with a different configuration ({lines})")
    elif (run_dir / checkpoints.CONFIG_FILE).exists():
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --logdir")
    manifest = check_compatible(data_dir, task=config.task, image_size=config.data.image_size, split="train")
    config = follow_dataset_grid(config, manifest, data_dir)
    if not resume:  # a model trained on a multi-source dataset uses every source it holds
        config = adopt_dataset_sources(config, manifest)
    check_context(manifest, config.data, data_dir)
    if runtime.is_chief:
        checkpoints.write_json_atomic(run_dir / DATA_FILE, _data_record(record, data_dir, data_changed, resume))
    log.info("training %s on %s into %s", config.model, config.task, run_dir)
    return driver.train(config, run_dir, data_dir=data_dir, runtime=runtime, resume=resume, restart=restart, quiet=quiet,
                        log_every=log_every)


def follow_dataset_grid(config: config_lib.ExperimentConfig, manifest: dict, data_dir: str | Path) -> config_lib.ExperimentConfig:
    """`config` with the model-grid spacing the dataset was converted at (its manifest's
    `spacing_mm`, e.g. from `convert --spacing`), so that the run, its export and `translate`
    resample to the grid the network learnt; a manifest without one leaves `config` as it is."""
    import dataclasses

    from medgan_tf.data.manifest import manifest_spacing

    spacing = manifest_spacing(manifest)
    if spacing is None or spacing == tuple(float(v) for v in config.data.spacing_mm):
        return config
    log.info("model grid: %s mm, as %s was converted (the task preset says %s mm)", "×".join(f"{v:g}" for v in spacing),
             data_dir, "×".join(f"{v:g}" for v in config.data.spacing_mm))
    return dataclasses.replace(config, data=dataclasses.replace(config.data, spacing_mm=spacing))


def _resolve_run_data(run_dir: Path, data_dir: str | Path | None, record: dict | None, data_changed: bool) -> Path:
    """The dataset to train on, after checking it against the run's record (None: a new run,
    or an old run that recorded nothing). UserError naming the field that differs."""
    recorded = Path(record["data_dir"]) if record else None
    if data_dir is None:
        if recorded is None:
            raise UserError(f"{run_dir} does not record its dataset; pass --data with the dataset it was trained on")
        log.info("resuming on the run's own dataset %s", recorded)
        data_dir = recorded
    data_dir = Path(data_dir)
    if recorded is None:
        return data_dir
    data_file = run_dir / DATA_FILE
    if data_dir.resolve() != recorded.resolve():
        if not data_changed:
            raise UserError(f"data_dir: {run_dir} was trained on {recorded}, not {data_dir} (see {data_file}); resume "
                            f"without --data (or with --data {recorded}), add --data-changed to continue on "
                            f"{data_dir} on purpose, or start a new run")
        log.warning("data_dir: continuing %s on %s instead of %s (--data-changed)", run_dir, data_dir, recorded)
        return data_dir
    saved, current = record.get("manifest_sha256"), manifest_fingerprint(data_dir)
    if saved and current and saved != current:
        if not data_changed:
            raise UserError(f"manifest_sha256: {data_dir / 'manifest.json'} changed since {run_dir} recorded it "
                            f"(run has {saved[:12]}…, the dataset now has {current[:12]}…): the dataset was converted "
                            f"again. Add --data-changed to continue on it on purpose, or start a new run")
        log.warning("manifest_sha256: %s changed since %s recorded it; continuing on it (--data-changed)", data_dir,
                    run_dir)
    return data_dir


def _data_record(record: dict | None, data_dir: Path, data_changed: bool, resume: bool) -> dict:
    """The new content of RUN/data.json: the dataset's identity, and its history ("started", or
    "recorded" for a run that had no record, then one "changed (--data-changed)" per accepted change)."""
    identity = {"data_dir": str(data_dir.resolve()), "manifest_sha256": manifest_fingerprint(data_dir)}
    history = list(record.get("history", [])) if record else []
    if record and not history:  # written before data.json kept a history
        history.append({k: record.get(k) for k in identity} | {"event": "recorded", "time": _now()})
    if not history:
        history.append({**identity, "event": "recorded" if resume else "started", "time": _now()})
    elif data_changed and any(record.get(k) != v for k, v in identity.items()):
        history.append({**identity, "event": "changed (--data-changed)", "time": _now(),
                        "previous": {k: record.get(k) for k in identity}})
    return {**identity, "history": history}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
