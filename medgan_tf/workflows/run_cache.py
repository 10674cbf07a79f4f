"""What a comparison (`medgan_tf.workflows.reproduce`) keeps between invocations: its pinned
settings (OUT/reproduce.json), how far each run trained (its summary.json), and each run's cached
evaluation (OUT/runs/<name>/evaluation/: metrics.json, the example slices, the state it was made in)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf.errors import UserError

SETTINGS_FILE = "reproduce.json"
EVALUATION_DIR = "evaluation"
EVALUATION_STATE = "state.json"
EXAMPLES_FILE = "examples.npz"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trained_steps(run_dir: Path) -> int:
    """Steps recorded by the run's summary.json (0 when the run never finished a session)."""
    summary = read_json(run_dir / "summary.json")
    return int(summary.get("step", 0)) if summary else 0


def evaluation_is_cached(run_dir: Path, budget_steps: int, settings: Any) -> bool:
    state = read_json(run_dir / EVALUATION_DIR / EVALUATION_STATE)
    return bool(
        state
        and state.get("step") == budget_steps
        and state.get("split") == settings.eval_split
        and state.get("figure_slices") == settings.figure_slices
        and (run_dir / EVALUATION_DIR / "metrics.json").is_file()
        and (run_dir / EVALUATION_DIR / EXAMPLES_FILE).is_file()
    )


def check_settings(out_dir: Path, settings: Any) -> None:
    """Pin the comparison's settings in OUT/reproduce.json; refuse to mix budgets."""
    path = out_dir / SETTINGS_FILE
    current = dataclasses.asdict(settings)
    saved = read_json(path)
    if saved is not None:
        # Settings added after a folder was made count as their defaults there.
        defaults = {f.name: f.default for f in dataclasses.fields(type(settings)) if f.default is not dataclasses.MISSING}
        previous = {key: saved.get(key, defaults.get(key)) for key in current}
        differing = {key: (previous[key], value) for key, value in current.items() if previous[key] != value}
        if differing:
            text = "; ".join(f"{key}: {a!r} there, {b!r} now" for key, (a, b) in differing.items())
            raise UserError(
                f"{out_dir} holds a comparison made with other settings ({text}); every variant of one "
                "comparison must share them. Use another --out, or repeat the original settings."
            )
    from medgan_tf.training.checkpoints import write_json_atomic

    write_json_atomic(path, current)


def save_examples(path: Path, examples) -> None:
    np.savez_compressed(
        path,
        patient_keys=np.array([example.patient_key for example in examples], dtype=str),
        slice_indices=np.array([example.slice_index for example in examples], dtype=np.int64),
        sources=np.stack([example.source for example in examples]) if examples else np.zeros((0, 1, 1), np.float32),
        outputs=np.stack([example.output for example in examples]) if examples else np.zeros((0, 1, 1), np.float32),
        targets=np.stack([example.target for example in examples]) if examples else np.zeros((0, 1, 1), np.float32),
    )


def load_evaluation(run_dir: Path):
    """The cached EvaluationResult of a run, with its example slices."""
    from medgan_tf.evaluation.consistency import read_consistency
    from medgan_tf.evaluation.scoring import EvaluationResult, ExampleSlice

    directory = run_dir / EVALUATION_DIR
    result = EvaluationResult.from_dict(json.loads((directory / "metrics.json").read_text()))
    result.slice_consistency = read_consistency(directory)
    with np.load(directory / EXAMPLES_FILE) as arrays:
        result.examples = [
            ExampleSlice(str(key), int(index), source, output, target)
            for key, index, source, output, target in zip(
                arrays["patient_keys"], arrays["slice_indices"], arrays["sources"], arrays["outputs"], arrays["targets"]
            )
        ]
    return result
