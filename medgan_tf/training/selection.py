"""Model selection: which checkpoint is the best, and when to stop (early stopping).

After each epoch's validation the loop asks `BestModel.update`: the selection metric (one of the
validation metrics of `medgan_tf.metrics`, on the paper's 0–255 scale; its better direction from
the metric table) is compared with the best so far. An improvement means "save the `best`
checkpoint"; `patience` validations in a row without one means "stop". The curve and the best
point are kept in `RUN/selection.json`, so a resumed run continues the same bookkeeping.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from medgan_tf.errors import UserError
from medgan_tf.metrics import METRICS, metric_names

SELECTION_FILE = "selection.json"


def check_selection_metric(name: str) -> str:
    """`name` when it is a validation metric; a UserError listing them otherwise."""
    allowed = metric_names(validation=True)
    if name not in allowed:
        raise UserError(f"--select-by must be one of {', '.join(allowed)} (the validation metrics); received {name!r}")
    return name


@dataclass
class BestModel:
    """The selection metric's curve, the best point on it, and the early-stopping count."""

    metric: str
    patience: int | None = None
    curve: list[dict] = field(default_factory=list)
    best: dict | None = None
    since_best: int = 0

    def __post_init__(self) -> None:
        check_selection_metric(self.metric)
        if self.patience is not None and self.patience < 1:
            raise UserError(f"--patience must be a positive number of validations; received {self.patience}")

    def update(self, epoch: int, step: int, values: dict[str, float]) -> tuple[bool, str | None]:
        """Record one validation; returns (improved, why to stop or None)."""
        value = float(values[self.metric])
        self.curve.append({"epoch": epoch, "step": step, **{k: float(v) for k, v in values.items()}})
        improved = math.isfinite(value) and (self.best is None or self._better(value, self.best["value"]))
        if improved:
            self.best = {"epoch": epoch, "step": step, "metric": self.metric, "value": value}
            self.since_best = 0
        else:
            self.since_best += 1
        if self.patience is not None and self.since_best >= self.patience:
            return improved, (f"early stop: validation {self.metric} has not improved for {self.since_best} "
                              f"validation(s) (--patience {self.patience}); best {self.best_text()}")
        return improved, None

    def _better(self, value: float, best: float) -> bool:
        return value > best if METRICS.get(self.metric).higher_is_better else value < best

    def best_text(self) -> str:
        if self.best is None:
            return "none yet"
        return f"{self.metric}={self.best['value']:.4f} at step {self.best['step']} (epoch {self.best['epoch']})"

    def to_dict(self) -> dict:
        return {"metric": self.metric, "patience": self.patience, "best": self.best,
                "since_best": self.since_best, "curve": self.curve}

    @classmethod
    def load(cls, run_dir: Path, metric: str, patience: int | None) -> "BestModel":
        """The bookkeeping of a resumed run (same metric), or a fresh one."""
        path = Path(run_dir) / SELECTION_FILE
        try:
            saved = json.loads(path.read_text())
        except OSError:
            return cls(metric, patience)
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError alike
            raise UserError(f"{path}: the model-selection state is garbled ({type(error).__name__}); restore it, "
                            f"or delete it to start the best-checkpoint bookkeeping afresh") from None
        if saved.get("metric") != metric:
            return cls(metric, patience)
        return cls(metric, patience, list(saved.get("curve", [])), saved.get("best"), int(saved.get("since_best", 0)))
