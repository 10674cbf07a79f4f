"""K-fold training for ensembles (`medgan-tf train --folds K`): K runs on patient folds.

RUN/folds.json records the dataset and which patients each fold holds out; RUN/data/fold-k/ is
fold k's dataset (`medgan_tf.data.folds`: the other folds' patients to train on, its own to
validate on); RUN/fold-k/ is an ordinary run directory (config, checkpoints, summary.json), trained
with seed + k − 1. The folds are trained one after another; run the same command again and the
finished folds are left as they are (their summary.json says they reached their last step), the
interrupted one continues from its newest checkpoint and the rest start. `medgan-tf export
--ensemble RUN` turns RUN/fold-*/ into one SavedModel.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from medgan_tf import config as config_lib
from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

FOLDS_FILE = "folds.json"
FOLDS_FORMAT = "medgan-tf-folds-v1"


def fold_plan(data_dir: Path, run_dir: Path, count: int) -> dict[str, Any]:
    """RUN/folds.json's content: the dataset and each fold's held-out patients; the recorded one
    when RUN has it (UserError if it was made for another dataset or fold count)."""
    from medgan_tf.data.folds import assign_folds, training_patients
    from medgan_tf.training.experiment import manifest_fingerprint

    plan_file = run_dir / FOLDS_FILE
    fingerprint = manifest_fingerprint(data_dir)
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
        if plan["folds"] != count or plan["manifest_sha256"] != fingerprint:
            raise UserError(f"{run_dir} holds {plan['folds']} folds of {plan['data_dir']}; continue it with --folds "
                            f"{plan['folds']} on that dataset, or pick another --logdir")
        return plan
    folds = assign_folds(training_patients(data_dir), count)
    return {"format": FOLDS_FORMAT, "folds": count, "data_dir": str(Path(data_dir).resolve()),
            "manifest_sha256": fingerprint, "held_out": folds}


def fold_finished(fold_dir: Path) -> bool:
    """Whether the run `fold_dir` reached its last step or stopped early (its summary.json says so;
    it is written when training ends, not when it is interrupted)."""
    from medgan_tf.training import checkpoints

    summary = fold_dir / checkpoints.SUMMARY_FILE
    if not summary.is_file():
        return False
    content = json.loads(summary.read_text())
    return bool(content.get("stopped_early")) or int(content.get("step", 0)) >= int(content.get("total_steps", 1 << 62))


def train_folds(config: config_lib.ExperimentConfig, data_dir: str | Path, run_dir: str | Path, count: int, *,
                runtime: Any, quiet: bool = False, log_every: int = 10) -> list[dict]:
    """Train `count` fold runs of `config` on `data_dir` into RUN/fold-1 … RUN/fold-K (see the
    module doc); returns their summaries."""
    from medgan_tf.data.folds import write_fold_dataset
    from medgan_tf.training import checkpoints
    from medgan_tf.training.experiment import train_experiment

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if (run_dir / checkpoints.CONFIG_FILE).exists():
        raise UserError(f"{run_dir} holds a single run; --folds writes RUN/fold-1 … and needs a new --logdir")
    plan = fold_plan(data_dir, run_dir, count)
    if runtime.is_chief:
        checkpoints.write_json_atomic(run_dir / FOLDS_FILE, plan)
    summaries = []
    for fold, held_out in enumerate(plan["held_out"], start=1):
        fold_dir, fold_data = run_dir / f"fold-{fold}", run_dir / "data" / f"fold-{fold}"
        if fold_finished(fold_dir):
            log.info("fold %d/%d: %s is finished; left as it is", fold, count, fold_dir)
            summaries.append(json.loads((fold_dir / checkpoints.SUMMARY_FILE).read_text()))
            continue
        if not (fold_data / "manifest.json").is_file():
            log.info("fold %d/%d: writing its dataset %s (%d patient(s) held out for validation)", fold, count,
                     fold_data, len(held_out))
            write_fold_dataset(data_dir, fold_data, held_out, fold, count)
        resume = (fold_dir / checkpoints.CONFIG_FILE).exists()
        log.info("fold %d/%d: %s %s", fold, count, "continuing" if resume else "training", fold_dir)
        fold_config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=config.train.seed + fold - 1))
        summaries.append(train_experiment(fold_config, fold_data, fold_dir, runtime=runtime, resume=resume,
                                          quiet=quiet, log_every=log_every))
    return summaries
