"""The paper's comparisons on one's own data: train every selected variant under one budget, score
all of them on one validation split, and write Table I/II, Fig. 4/5 and Fig. 6 lookalikes.

Protocol (paper §3.2): every variant sees the same data, seed, number of steps and batch size;
only its recipe (`medgan_tf.presets`: networks, generator depth and loss terms) differs. Each run lives
in OUT/runs/<name> as an ordinary run directory (`medgan-tf train` layout), so any of them can be
inspected with TensorBoard, exported or continued by hand.

Resumable: a run whose summary.json reports the full budget and whose evaluation is cached
(OUT/runs/<name>/evaluation/) is neither trained nor scored again; a run with checkpoints but
fewer steps continues from its latest checkpoint (the driver's exact resume). The settings that
define the comparison are pinned in OUT/reproduce.json; continuing with different ones is an error
(the comparison would no longer be under one budget).

All training happens in this process, one variant after another: the runtime (strategy, XLA,
precision policy — process-global in Keras) is set up once and is the same for every variant;
each variant builds fresh networks and its own tf.functions, and `keras.backend.clear_session()`
between variants frees the previous graph state.

The report (table.md, figure.png, results.json, ublocks.png) is written by
`medgan_tf.workflows.comparison`.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from pathlib import Path
from typing import Any, Sequence


from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.errors import UserError
from medgan_tf.evaluation.consistency import append_consistency_table, overall_consistency, write_consistency
from medgan_tf.evaluation.protocols import PROTOCOLS
from medgan_tf.metrics import minimum_slice_size
from medgan_tf.workflows.run_cache import (
    EVALUATION_DIR,
    EVALUATION_STATE,
    EXAMPLES_FILE,
    check_settings,
    evaluation_is_cached,
    load_evaluation,
    save_examples,
    trained_steps,
)

log = logging.getLogger(__name__)

# Every registered variant, in the paper's order (Table I's loss ablations, Table II, MedGAN last).
DEFAULT_MODELS = tuple(presets.MODELS.names())
# Fig. 6 trains pix2pix with CasNets of several depths (paper Appendix A).
SWEEP_MODEL = "pix2pix"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What makes runs comparable: every variant is trained and scored under these."""

    task: str
    budget_steps: int
    image_size: int
    base_filters: int
    seed: int = 0
    vgg_weights: str = "auto"
    batch_size: int = 1
    eval_split: str = "val"
    figure_slices: int = 4
    deterministic: bool = False  # op determinism: identical batches for every variant, slower
    context_slices: int = 0  # > 0: every model also trained as a 2.5D model with K context slices


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of the comparison: `name` (its folder under OUT/runs) trains registered `model`,
    optionally with the CasNet depth replaced (the U-block sweep)."""

    name: str
    model: str
    num_ublocks: int | None = None
    context_slices: int = 0  # the 2.5D twin of a model (`medgan_tf.data.context`)

    @property
    def label(self) -> str:
        if self.context_slices:
            return f"{presets.MODELS.get(self.model).display_name} 2.5D (K={self.context_slices})"
        if self.num_ublocks is not None:
            return f"{presets.MODELS.get(self.model).display_name} (CasNet-{self.num_ublocks})"
        return presets.MODELS.get(self.model).display_name


def parse_list(text: str | None, what: str) -> list[str]:
    """'a,b, c' → ['a', 'b', 'c'] (empty items dropped); None → []."""
    if text is None:
        return []
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"{what}: expected a comma-separated list; received {text!r}")
    return items


def plan(models: Sequence[str], ublocks_sweep: Sequence[int] = (), context_slices: int = 0) -> list[Entry]:
    """The runs to make: each model once, then pix2pix at each sweep depth (depth 1 *is* the
    registered pix2pix recipe, so it reuses that run when pix2pix is among the models), then each
    model again as a 2.5D model when `context_slices` K > 0 (2D vs 2.5D under one budget)."""
    known = presets.MODELS.names()
    unknown = [name for name in models if name not in known]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(known)}")
    if len(set(models)) != len(models):
        raise UserError(f"--models lists a model twice: {','.join(models)}")
    bad = [depth for depth in ublocks_sweep if depth < 1]
    if bad:
        raise UserError(f"--ublocks-sweep depths must be ≥ 1; received {list(ublocks_sweep)}")
    entries = [Entry(name, name) for name in models]
    names = {entry.name for entry in entries}
    recipe_depth = presets.MODELS.get(SWEEP_MODEL).num_ublocks
    for depth in dict.fromkeys(ublocks_sweep):
        if depth == recipe_depth and SWEEP_MODEL in names:
            continue
        entries.append(Entry(f"{SWEEP_MODEL}_ublocks{depth}", SWEEP_MODEL, depth))
    entries += [Entry(f"{name}_context{context_slices}", name, context_slices=context_slices) for name in models if context_slices > 0]
    return entries


def sweep_run_name(depth: int, entries: Sequence[Entry]) -> str:
    """The run that holds pix2pix at CasNet depth `depth`."""
    for entry in entries:
        if entry.model == SWEEP_MODEL and (entry.num_ublocks or presets.MODELS.get(SWEEP_MODEL).num_ublocks) == depth:
            return entry.name
    raise KeyError(depth)


def experiment_config(entry: Entry, settings: Settings) -> config_lib.ExperimentConfig:
    """The task preset trained as `entry`'s recipe under the shared budget.

    The budget is one "epoch" of `budget_steps` steps over the repeated training split shuffled
    with the shared seed; with `deterministic` the batches (order and augmentation) are exactly
    the same for every variant, otherwise TensorFlow's parallel reads may interleave them
    differently. Checkpoints every tenth of the budget (at most every 500 steps) make an
    interrupted comparison lose little.
    """
    config = presets.task_preset(settings.task, entry.model)
    updates: dict[str, Any] = {
        "data.image_size": settings.image_size,
        "generator.base_filters": settings.base_filters,
        "train.epochs": 1,
        "train.steps_per_epoch": settings.budget_steps,
        "train.batch_size": settings.batch_size,
        "train.seed": settings.seed,
        "train.vgg_weights": settings.vgg_weights,
        "train.checkpoint_every_steps": max(1, min(500, settings.budget_steps // 10)),
        "train.image_summary_every_steps": max(1, settings.budget_steps),
        "train.deterministic": settings.deterministic,
        "data.context_slices": entry.context_slices,
    }
    if entry.num_ublocks is not None:
        updates["generator.num_ublocks"] = entry.num_ublocks
    return config_lib.override(config, updates)


# --------------------------------------------------------------------------- training and scoring


def train_entry(entry: Entry, settings: Settings, run_dir: Path, data_dir: Path, runtime) -> dict:
    """Train `entry` to the budget in `run_dir` (fresh, or continued from its checkpoint)."""
    import keras

    from medgan_tf.training import checkpoints, train_experiment

    experiment = experiment_config(entry, settings)
    resume = (run_dir / checkpoints.CONFIG_FILE).is_file()
    try:
        return train_experiment(experiment, data_dir, run_dir, runtime=runtime, resume=resume, quiet=True,
                                log_every=max(1, settings.budget_steps // 10))
    finally:
        keras.backend.clear_session()
        gc.collect()


def evaluate_entry(run_dir: Path, data_dir: Path, settings: Settings, title: str):
    """Score the run's latest checkpoint on the validation split; cache the result (metrics.json,
    metrics.md, figure.png and the example slices) in run_dir/evaluation."""
    import keras

    from medgan_tf.evaluation.datasets import evaluate_dataset
    from medgan_tf.evaluation.reports import write_report
    from medgan_tf.serving.loading import load_model
    from medgan_tf.training.checkpoints import write_json_atomic

    model = load_model(run_dir)
    try:
        result = evaluate_dataset(model, data_dir, settings.eval_split, num_examples=settings.figure_slices)
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()
    out = run_dir / EVALUATION_DIR
    write_report(result, out, title=title, figure_slices=settings.figure_slices)
    write_consistency(result.slice_consistency, out)
    save_examples(out / EXAMPLES_FILE, result.examples)
    write_json_atomic(out / EVALUATION_STATE, {
        "step": trained_steps(run_dir),
        "split": settings.eval_split,
        "figure_slices": settings.figure_slices,
    })
    return load_evaluation(run_dir)


def run_entry(entry: Entry, settings: Settings, out_dir: Path, data_dir: Path, runtime, position: str) -> dict:
    """Bring one run to the budget and score it, skipping what is already done.

    Returns {"trained": bool, "train_seconds": float | None, "result": EvaluationResult}."""
    run_dir = out_dir / "runs" / entry.name
    steps = trained_steps(run_dir)
    started = time.perf_counter()
    trained = False
    if steps >= settings.budget_steps:
        log.info("%s %s: already trained (%d steps) — not training again", position, entry.name, steps)
    else:
        how = f"continuing from its checkpoint (summary says step {steps})" if (run_dir / "config.json").is_file() else "from scratch"
        log.info("%s %s: training %s, %s for %d steps", position, entry.name, entry.label, how, settings.budget_steps)
        summary = train_entry(entry, settings, run_dir, data_dir, runtime)
        trained = True
        log.info("%s %s: trained to step %d in %.0f s", position, entry.name, summary["step"], time.perf_counter() - started)
    if evaluation_is_cached(run_dir, settings.budget_steps, settings):
        log.info("%s %s: evaluation cached in %s", position, entry.name, run_dir / EVALUATION_DIR)
        result = load_evaluation(run_dir)
    else:
        log.info("%s %s: scoring on the %s split", position, entry.name, settings.eval_split)
        result = evaluate_entry(run_dir, data_dir, settings, title=f"{entry.label} — {settings.task}")
    return {"trained": trained, "train_seconds": time.perf_counter() - started if trained else None, "result": result}


def reproduce(
    settings: Settings,
    out_dir: Path,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    ublocks_sweep: Sequence[int] = (),
    data_dir: Path | None = None,
    runtime=None,
    protocol: str = "paper",
    pairs: Path | None = None,
) -> dict:
    """Train, score and report every selected variant (and the pix2pix depth sweep) into out_dir.

    runtime: a `training.runtime.Runtime` (set up once by the caller; default: the CPU/GPU auto
    settings). protocol: besides the paper's tables, the tables in a volume protocol
    (`medgan_tf.workflows.protocol_tables`) on the volumes of `pairs` (default: held-out synthetic
    patients). Returns the content of results.json.
    """
    from medgan_tf.workflows import comparison

    if settings.budget_steps < 1:
        raise UserError(f"--budget-steps must be ≥ 1; received {settings.budget_steps}")
    # Checked before any training, which would otherwise be lost when scoring fails.
    config_lib.check_image_size(settings.image_size, minimum=max(config_lib.MINIMUM_IMAGE_SIZE, minimum_slice_size()),
                                why="the paper's metrics need it: VIF needs slices of at least 41×41 for its four scales")
    if not models and not ublocks_sweep:
        raise UserError("nothing to do: give --models and/or --ublocks-sweep")
    entries = plan(models, ublocks_sweep, settings.context_slices)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_settings(out_dir, settings)

    if runtime is None:
        from medgan_tf.training import runtime as runtime_lib

        runtime = runtime_lib.setup("auto", "auto", "auto")
    data_given = data_dir is not None
    data_dir = _resolve_data(settings, data_dir)

    started = time.perf_counter()
    outcomes: dict[str, dict] = {}
    for index, entry in enumerate(entries, start=1):
        outcomes[entry.name] = run_entry(entry, settings, out_dir, data_dir, runtime, position=f"[{index}/{len(entries)}]")
    sweep_runs = {depth: sweep_run_name(depth, entries) for depth in dict.fromkeys(ublocks_sweep)}
    rows = {entry.name: _row(entry, settings, out_dir, outcomes[entry.name]) for entry in entries}
    payload = comparison.write_comparison(out_dir, settings, entries, rows, outcomes, sweep_runs, data_dir,
                                          wall_seconds=time.perf_counter() - started)
    if settings.context_slices:  # 2D vs 2.5D: how much each output jumps between slices
        append_consistency_table(out_dir / "table.md", {e.label: rows[e.name]["slice_consistency"] for e in entries})
    if not PROTOCOLS.get(protocol).records:
        from medgan_tf.workflows.protocol_tables import write_protocol_tables

        labels = {entry.name: entry.label for entry in entries if entry.num_ublocks is None}
        payload["files"].update(write_protocol_tables(out_dir, settings, labels, protocol, pairs, data_given))
    return payload


def _row(entry: Entry, settings: Settings, out_dir: Path, outcome: dict) -> dict:
    """One row of results.json: what was trained, how long, and every metric's summary."""
    experiment = experiment_config(entry, settings)
    return {
        "method": entry.label,
        "run": entry.name,
        "model": entry.model,
        "num_ublocks": experiment.generator.num_ublocks,
        "loss_terms": experiment.losses.active_terms(),
        "discriminator_loss": experiment.losses.discriminator_loss,
        "steps": trained_steps(out_dir / "runs" / entry.name),
        "trained_this_invocation": outcome["trained"],
        "train_seconds": outcome["train_seconds"],
        "num_slices": len(outcome["result"].slices),
        "metrics": outcome["result"].summary()["output"],
        "context_slices": experiment.data.context_slices,
        "slice_consistency": overall_consistency(outcome["result"].slice_consistency),
    }


def _resolve_data(settings: Settings, data_dir: Path | None) -> Path:
    from medgan_tf.data.manifest import check_compatible

    if data_dir is None:
        from medgan_tf.workflows.builtin import ensure_builtin_dataset

        data_dir = ensure_builtin_dataset(settings.task, settings.image_size, context_slices=settings.context_slices)
        log.info("no --data given: using the built-in synthetic %s dataset at %s", settings.task, data_dir)
    data_dir = Path(data_dir)
    # Every method is scored on the evaluation split: it must hold slices before anything trains.
    check_compatible(data_dir, task=settings.task, image_size=settings.image_size, split=settings.eval_split,
                     who="--image-size")
    return data_dir
