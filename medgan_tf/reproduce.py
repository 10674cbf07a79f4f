"""The paper's comparisons on one's own data: train every selected variant under one budget, score
all of them on one validation split, and write Table I/II, Fig. 4/5 and Fig. 6 lookalikes.

Protocol (paper §3.2): every variant sees the same data, seed, number of steps and batch size;
only its recipe (`medgan_tf/variants.py`: generator depth and loss terms) differs. Each run lives
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

Outputs in OUT:
  table.md      — Table I (loss ablations) and Table II (state of the art) layout: SSIM, PSNR,
                  MSE, VIF, UQI, LPIPS per method (mean over validation slices; LPIPS "n/a" when
                  its weights are unavailable), the untouched input as a reference row;
  figure.png    — Fig. 4/5 layout: rows input, each method, target; columns the same slices;
  results.json  — one row per method (every metric's mean, sd, n), the settings, the sweep;
  ublocks.png   — with an U-block sweep: Fig. 6, pix2pix metrics vs CasNet depth (and ublocks in
                  table.md / results.json).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgan_tf import config as config_lib

from medgan_tf import presets
from medgan_tf import registry
from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

# Paper order: Table I's loss ablations, then Table II's state of the art, MedGAN last.
TABLE_I = ("cgan", "perceptual", "style_content", "medgan_1g", "medgan")
TABLE_II = ("pix2pix", "pan", "id_cgan", "fila_sgan", "medgan")
DEFAULT_MODELS = ("cgan", "perceptual", "style_content", "medgan_1g", "pix2pix", "pan", "id_cgan", "fila_sgan", "medgan")
DISPLAY_NAMES = {
    "cgan": "cGAN",
    "perceptual": "Perceptual",
    "style_content": "Style-content",
    "medgan_1g": "MedGAN-1G",
    "medgan": "MedGAN",
    "pix2pix": "pix2pix",
    "pan": "PAN",
    "id_cgan": "ID-CGAN",
    "fila_sgan": "Fila-sGAN",
}
# Fig. 6 trains pix2pix with CasNets of several depths (paper Appendix A).
SWEEP_MODEL = "pix2pix"
TABLE_METRICS = ("ssim", "psnr", "mse", "vif", "uqi", "lpips")
MINIMUM_IMAGE_SIZE = 41  # metrics.vif: its four Gaussian-window scales need at least 41×41 slices

SETTINGS_FILE = "reproduce.json"
EVALUATION_DIR = "evaluation"
EVALUATION_STATE = "state.json"
EXAMPLES_FILE = "examples.npz"


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


@dataclasses.dataclass(frozen=True)
class Entry:
    """One run of the comparison: `name` (its folder under OUT/runs) trains registered `model`,
    optionally with the CasNet depth replaced (the U-block sweep)."""

    name: str
    model: str
    num_ublocks: int | None = None

    @property
    def label(self) -> str:
        if self.num_ublocks is not None:
            return f"{DISPLAY_NAMES.get(self.model, self.model)} (CasNet-{self.num_ublocks})"
        return DISPLAY_NAMES.get(self.model, self.model)


def parse_list(text: str | None, what: str) -> list[str]:
    """'a,b, c' → ['a', 'b', 'c'] (empty items dropped); None → []."""
    if text is None:
        return []
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"{what}: expected a comma-separated list; received {text!r}")
    return items


def plan(models: Sequence[str], ublocks_sweep: Sequence[int] = ()) -> list[Entry]:
    """The runs to make: each model once, then pix2pix at each sweep depth (depth 1 *is* the
    registered pix2pix recipe, so it reuses that run when pix2pix is among the models)."""
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
    }
    if entry.num_ublocks is not None:
        updates["generator.num_ublocks"] = entry.num_ublocks
    return config_lib.override(config, updates)


# --------------------------------------------------------------------------- run state


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trained_steps(run_dir: Path) -> int:
    """Steps recorded by the run's summary.json (0 when the run never finished a session)."""
    summary = _read_json(run_dir / "summary.json")
    return int(summary.get("step", 0)) if summary else 0


def evaluation_is_cached(run_dir: Path, budget_steps: int, settings: Settings) -> bool:
    state = _read_json(run_dir / EVALUATION_DIR / EVALUATION_STATE)
    return bool(
        state
        and state.get("step") == budget_steps
        and state.get("split") == settings.eval_split
        and state.get("figure_slices") == settings.figure_slices
        and (run_dir / EVALUATION_DIR / "metrics.json").is_file()
        and (run_dir / EVALUATION_DIR / EXAMPLES_FILE).is_file()
    )


def _check_settings(out_dir: Path, settings: Settings) -> None:
    """Pin the comparison's settings in OUT/reproduce.json; refuse to mix budgets."""
    path = out_dir / SETTINGS_FILE
    current = dataclasses.asdict(settings)
    saved = _read_json(path)
    if saved is not None:
        # Settings added after a folder was made count as their defaults there.
        defaults = {f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING}
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


# --------------------------------------------------------------------------- training and scoring


def train_entry(entry: Entry, settings: Settings, run_dir: Path, data_dir: Path, runtime) -> dict:
    """Train `entry` to the budget in `run_dir` (fresh, or continued from its checkpoint)."""
    import keras

    from medgan_tf.training import checkpoints, driver

    experiment = experiment_config(entry, settings)
    resume = (run_dir / checkpoints.CONFIG_FILE).is_file()
    if resume:
        saved = checkpoints.read_config(run_dir)
        differing = driver.incompatible_fields(saved, experiment)
        if differing:
            text = "; ".join(f"{k}: run has {a!r}, comparison needs {b!r}" for k, (a, b) in differing.items())
            raise UserError(f"{run_dir} was trained with a different configuration ({text}); remove it or use another --out")
    try:
        return driver.train(experiment, run_dir, data_dir=data_dir, runtime=runtime, resume=resume, quiet=True,
                            log_every=max(1, settings.budget_steps // 10))
    finally:
        keras.backend.clear_session()
        gc.collect()


def evaluate_entry(run_dir: Path, data_dir: Path, settings: Settings, title: str):
    """Score the run's latest checkpoint on the validation split; cache the result (metrics.json,
    metrics.md, figure.png and the example slices) in run_dir/evaluation."""
    import keras

    from medgan_tf import evaluation, inference
    from medgan_tf.training.checkpoints import write_json_atomic

    model = inference.load_model(run_dir)
    try:
        result = inference.evaluate_dataset(model, data_dir, settings.eval_split, num_examples=settings.figure_slices)
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()
    out = run_dir / EVALUATION_DIR
    evaluation.write_report(result, out, title=title, figure_slices=settings.figure_slices)
    _save_examples(out / EXAMPLES_FILE, result.examples)
    write_json_atomic(out / EVALUATION_STATE, {
        "step": trained_steps(run_dir),
        "split": settings.eval_split,
        "figure_slices": settings.figure_slices,
    })
    return load_evaluation(run_dir)


def _save_examples(path: Path, examples) -> None:
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
    from medgan_tf import evaluation

    directory = run_dir / EVALUATION_DIR
    result = evaluation.EvaluationResult.from_dict(json.loads((directory / "metrics.json").read_text()))
    with np.load(directory / EXAMPLES_FILE) as arrays:
        result.examples = [
            evaluation.ExampleSlice(str(key), int(index), source, output, target)
            for key, index, source, output, target in zip(
                arrays["patient_keys"], arrays["slice_indices"], arrays["sources"], arrays["outputs"], arrays["targets"]
            )
        ]
    return result


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


# --------------------------------------------------------------------------- report


def _metric_means(summary: dict[str, dict]) -> dict[str, float | None]:
    out = {}
    for name in TABLE_METRICS:
        mean = summary.get(name, {}).get("mean")
        out[name] = None if mean is None or not math.isfinite(mean) else float(mean)
    return out


def table_markdown(settings: Settings, labels: dict[str, str], summaries: dict[str, dict], input_summary: dict,
                   lpips_reason: str | None, sweep: dict[int, dict] | None) -> str:
    """table.md: Tables I and II (the groups present among the runs), then the U-block sweep."""
    from medgan_tf import evaluation

    def table(names: Sequence[str]) -> str:
        rows = {labels[name]: summaries[name] for name in names}
        rows["input (untouched)"] = input_summary
        return evaluation.markdown_table(rows, show_sd=False, columns=TABLE_METRICS)

    vgg_note = vgg_weights_note(settings.vgg_weights)
    parts = [
        f"# Comparison on {settings.task}\n",
        f"Every method: {settings.budget_steps} training steps (batch {settings.batch_size}, N_G = 3 generator "
        f"updates per step), seed {settings.seed}, {settings.image_size}² slices, base width {settings.base_filters}; "
        f"scored on the `{settings.eval_split}` split. Means over slices; SSIM, PSNR (dB), MSE, VIF and UQI on the "
        f"0–255 scale. {vgg_note} "
        + (f"LPIPS: n/a — {lpips_reason}." if lpips_reason else "") + "\n",
    ]
    ordered = [name for name in DEFAULT_MODELS if name in summaries] + [name for name in summaries if name not in DEFAULT_MODELS]
    group_one = [name for name in TABLE_I if name in summaries]
    group_two = [name for name in TABLE_II if name in summaries]
    if len(group_one) > 1 or (group_one and not group_two):
        parts += ["## Table I — loss components (single U-block; MedGAN: CasNet-6)\n", table(group_one)]
    if len(group_two) > 1 or (group_two and not group_one):
        parts += ["## Table II — state-of-the-art methods\n", table(group_two)]
    others = [name for name in ordered if name not in TABLE_I and name not in TABLE_II]
    if others:
        parts += ["## Other variants\n", table(others)]
    parts += ["## All methods\n", table(ordered)]
    if sweep:
        rows = {f"CasNet-{depth}": summary for depth, summary in sorted(sweep.items())}
        parts += [f"## Fig. 6 — {DISPLAY_NAMES[SWEEP_MODEL]} vs number of U-blocks\n",
                  evaluation.markdown_table(rows, show_sd=False, columns=TABLE_METRICS)]
    return "\n".join(parts)


VGG_NOTOP_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"


def vgg_weights_note(vgg_weights: str) -> str:
    """One sentence for the report on which VGG-19 weights the style/content terms used."""
    import os

    random_note = "RANDOM — the style/content terms (Style-content, MedGAN, ID-CGAN, Fila-sGAN) are not the paper's"
    if vgg_weights == "none":
        return f"VGG-19 weights: {random_note}."
    if vgg_weights == "auto":
        # `auto` used ImageNet exactly when Keras had (or could fetch) the file into its cache.
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / VGG_NOTOP_FILE
        if cache.is_file():
            return "VGG-19 weights: ImageNet (Keras cache)."
        return f"VGG-19 weights: {random_note} (`auto`: ImageNet weights were not obtainable on this machine)."
    return f"VGG-19 weights: {vgg_weights}."


def save_sweep_figure(path: Path, sweep: dict[int, dict], title: str = "") -> None:
    """ublocks.png (Fig. 6): one panel per available metric, value vs number of U-blocks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    depths = sorted(sweep)
    names = [name for name in TABLE_METRICS if any(_metric_means(sweep[d])[name] is not None for d in depths)]
    figure = Figure(figsize=(3.0 * len(names), 3.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    titles = {"ssim": "SSIM", "psnr": "PSNR (dB)", "mse": "MSE", "vif": "VIF", "uqi": "UQI", "lpips": "LPIPS"}
    for axis, name in zip(axes, names):
        values = [_metric_means(sweep[d])[name] for d in depths]
        axis.plot(depths, [np.nan if v is None else v for v in values], marker="o")
        axis.set_title(titles[name])
        axis.set_xlabel("number of U-blocks")
        axis.set_xticks(depths)
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.savefig(str(path), dpi=100)


def save_figure(path: Path, labels: dict[str, str], results: dict[str, Any], title: str) -> None:
    """figure.png (Fig. 4/5): rows input, each method, target; columns the same validation slices."""
    from medgan_tf import evaluation

    names = list(results)
    first = results[names[0]].examples
    keys = [(example.patient_key, example.slice_index) for example in first]
    for name in names[1:]:
        other = [(example.patient_key, example.slice_index) for example in results[name].examples]
        if other != keys:
            raise UserError(f"{name} was scored on other example slices ({other}) than {names[0]} ({keys}); "
                            "re-run its evaluation by deleting its evaluation/ folder")
    evaluation.save_comparison_figure(
        path,
        inputs=[example.source for example in first],
        targets=[example.target for example in first],
        outputs={labels[name]: [example.output for example in results[name].examples] for name in names},
        column_titles=[f"{key[:8]} · slice {index}" for key, index in keys],
        title=title,
    )


def reproduce(
    settings: Settings,
    out_dir: Path,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    ublocks_sweep: Sequence[int] = (),
    data_dir: Path | None = None,
    runtime=None,
) -> dict:
    """Train, score and report every selected variant (and the pix2pix depth sweep) into out_dir.

    runtime: a `training.runtime.Runtime` (set up once by the caller; default: the CPU/GPU auto
    settings). Returns the content of results.json.
    """
    from medgan_tf.training.checkpoints import write_json_atomic

    if settings.budget_steps < 1:
        raise UserError(f"--budget-steps must be ≥ 1; received {settings.budget_steps}")
    size = settings.image_size
    if size < 8 or size & (size - 1):
        raise UserError(f"--image-size must be a power of two ≥ 8; received {size}")
    if size < MINIMUM_IMAGE_SIZE:
        # Checked before any training, which would otherwise be lost when scoring fails.
        raise UserError(f"--image-size {size} is too small for the paper's metrics (VIF needs slices of at least "
                        f"{MINIMUM_IMAGE_SIZE}×{MINIMUM_IMAGE_SIZE}); use --image-size 64 or larger")
    if not models and not ublocks_sweep:
        raise UserError("nothing to do: give --models and/or --ublocks-sweep")
    entries = plan(models, ublocks_sweep)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, settings)

    if runtime is None:
        from medgan_tf.training import runtime as runtime_lib

        runtime = runtime_lib.setup("auto", "auto", "auto")
    data_dir = _resolve_data(settings, data_dir)

    started = time.perf_counter()
    outcomes: dict[str, dict] = {}
    for index, entry in enumerate(entries, start=1):
        outcomes[entry.name] = run_entry(entry, settings, out_dir, data_dir, runtime, position=f"[{index}/{len(entries)}]")

    labels = {entry.name: entry.label for entry in entries}
    results = {name: outcome["result"] for name, outcome in outcomes.items()}
    method_names = [entry.name for entry in entries if entry.num_ublocks is None]
    summaries = {name: results[name].summary()["output"] for name in results}
    reference = results[entries[0].name]
    input_summary = reference.summary()["input"]
    lpips_reason = None if reference.lpips_available else (reference.lpips_reason or "LPIPS weights unavailable")

    sweep: dict[int, dict] = {}
    for depth in dict.fromkeys(ublocks_sweep):
        sweep[depth] = summaries[sweep_run_name(depth, entries)]

    paths = {"results": out_dir / "results.json", "table": out_dir / "table.md"}
    method_summaries = {name: summaries[name] for name in method_names}
    (out_dir / "table.md").write_text(
        table_markdown(settings, labels, method_summaries, input_summary, lpips_reason, sweep or None), encoding="utf-8")
    if method_names:
        paths["figure"] = out_dir / "figure.png"
        save_figure(paths["figure"], labels, {name: results[name] for name in method_names},
                    title=f"{settings.task}: {settings.budget_steps} steps per method")
    if sweep:
        paths["ublocks_figure"] = out_dir / "ublocks.png"
        save_sweep_figure(paths["ublocks_figure"], sweep, title=f"{DISPLAY_NAMES[SWEEP_MODEL]} vs CasNet depth")

    def row(name: str) -> dict:
        entry = next(e for e in entries if e.name == name)
        experiment = experiment_config(entry, settings)
        return {
            "method": labels[name],
            "run": name,
            "model": entry.model,
            "num_ublocks": experiment.generator.num_ublocks,
            "loss_terms": experiment.losses.active_terms(),
            "discriminator_loss": experiment.losses.discriminator_loss,
            "steps": trained_steps(out_dir / "runs" / name),
            "trained_this_invocation": outcomes[name]["trained"],
            "train_seconds": outcomes[name]["train_seconds"],
            "num_slices": len(results[name].slices),
            "metrics": summaries[name],
        }

    payload = {
        "settings": dataclasses.asdict(settings),
        "data_dir": str(data_dir),
        "lpips": {"available": reference.lpips_available, "reason": reference.lpips_reason},
        "rows": [row(name) for name in method_names],
        "input": {"method": "input (untouched)", "metrics": input_summary},
        "ublocks_sweep": [
            {**row(sweep_run_name(depth, entries)), "num_ublocks": depth} for depth in sweep
        ],
        "files": {key: str(path) for key, path in paths.items()},
        "wall_seconds": time.perf_counter() - started,
    }
    from medgan_tf.evaluation import json_safe

    payload = json_safe(payload)
    write_json_atomic(paths["results"], payload)
    log.info("report: %s, %s%s", paths["table"], paths["results"], f", {paths['figure']}" if "figure" in paths else "")
    return payload


def _resolve_data(settings: Settings, data_dir: Path | None) -> Path:
    from medgan_tf.data import dataset as dataset_lib

    if data_dir is None:
        from medgan_tf.data.builtin import ensure_builtin_dataset

        data_dir = ensure_builtin_dataset(settings.task, settings.image_size)
        log.info("no --data given: using the built-in synthetic %s dataset at %s", settings.task, data_dir)
    data_dir = Path(data_dir)
    manifest = dataset_lib.read_manifest(data_dir)
    size = manifest.get("image_size") or manifest.get("config", {}).get("image_size")
    if size is not None and int(size) != settings.image_size:
        raise UserError(f"{data_dir} holds {size}×{size} slices but --image-size is {settings.image_size}; "
                        f"pass --image-size {size}")
    task = manifest.get("task")
    if task is not None and task != settings.task:
        raise UserError(f"{data_dir} was converted for task {task!r}, not {settings.task!r}")
    counts = {split: int(entry.get("slices", 0)) for split, entry in manifest.get("counts", {}).items()}
    if counts.get(settings.eval_split, 0) == 0:
        raise UserError(f"{data_dir}: the {settings.eval_split!r} split holds no slices; every method is scored "
                        "on it (convert with a non-zero validation fraction)")
    return data_dir
