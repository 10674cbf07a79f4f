"""The demo: the whole product on a fresh machine in minutes, on built-in synthetic data.

synth → convert (Beam; train / val / test patients) → train the task's demo preset (best checkpoint by
validation PSNR) → export (SavedModel) → translate one held-out volume → evaluate on the held-out
test patients against the untouched input and the task's classical baselines → a report folder:

    OUT/volumes/            synthetic NIfTI pairs + pairs.csv        (medgan-tf synth)
    OUT/dataset/            TFRecords + manifest.json                (medgan-tf convert)
    OUT/run/                checkpoints, TensorBoard logs, summary   (medgan-tf train)
    OUT/savedmodel/1/       TF Serving export                        (medgan-tf export)
    OUT/translated/         the held-out source volume translated    (medgan-tf translate)
    OUT/report/             metrics.json, metrics.md, figure.png     (medgan-tf evaluate)
                            + slices.png: the held-out volume in three planes
    OUT/README.md           what was done, the table, the verdict

What the demo trains is `DEMO_PRESET` (`DemoPreset`) with the task's own overrides
(`medgan_tf.tasks.Task.demo`, applied by `demo_preset`): a small single-U-block GAN at 64², a
model grid coarse enough that the 64² slice holds a patient of real size, a few hundred iterations
of Algorithm 1 and the best checkpoint by validation PSNR. The verdict (`wins`) says whether the
model beat, on both SSIM and PSNR on the held-out test patients, the untouched input (only where
source and target share a unit, `Task.same_unit`: elsewhere the input row is shown but cannot be
compared) and every classical baseline of the task (Gaussian and non-local-means filters when
source and target are one modality; an intensity mapping fitted on the training patients when
they are two); `failed` names each comparison lost. `medgan-tf demo` exits 1 unless it `passed`:
beat the untouched input (where comparable; else every baseline) — and says when it does not win.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from medgan_tf.metrics import metric_names

log = logging.getLogger(__name__)

# Synthetic patient ids carry no identity; a fixed salt lets the demo find its held-out patient.
DEMO_SALT = "medgan-tf-demo-synthetic"


@dataclass(frozen=True)
class DemoPreset:
    """What the demo trains. A task's `demo` overrides (`medgan_tf.tasks.Task.demo`) replace fields
    of `DEMO_PRESET`; `demo_preset(task)` applies them.

    spacing_mm: the model grid (x, y, z) in mm; None: the task's. The phantom fills
                image_size × spacing_mm[0] mm, so a task whose native grid is 256² or 512² of
                about 1 mm needs a coarser grid at the demo's 64² to hold a patient of real size.
    learning_rate: of both Adam optimizers; None: the recipe's (2e-4).
    context_slices: 2.5D neighbours per side the generator sees (0: the paper's 2-D model).
    phantom_options: the phantom's own settings for the demo's synthetic data (`data.synthetic.
                synthesize_pair`), e.g. a dose that keeps the task's noise visible on the demo grid.
    residual: each U-block corrects its input (`GeneratorConfig.residual`) instead of drawing
                the image anew: for denoising, where the noise is small against the window.
    validate_every_steps: steps between validations, each a candidate for the best checkpoint
                (chosen by `select_by` on the validation patient); None: once, at the end.
    """

    model: str = "pix2pix"
    image_size: int = 64
    spacing_mm: tuple[float, float, float] | None = None
    base_filters: int = 16
    batch_size: int = 4
    steps: int = 300
    learning_rate: float | None = 1e-3
    context_slices: int = 2
    residual: bool = False
    phantom_options: dict | None = None
    validate_every_steps: int | None = 100
    select_by: str = "psnr"
    patients: int = 8
    val_fraction: float = 0.125  # one patient chooses the best checkpoint and the baselines' parameters
    test_fraction: float = 0.25  # two held-out patients are scored
    seed: int = 0


DEMO_PRESET = DemoPreset()
VERDICT_METRICS = ("ssim", "psnr")  # the model must beat every comparable row on each
PRESET_FIELDS = tuple(f.name for f in dataclasses.fields(DemoPreset))


def demo_preset(task) -> DemoPreset:
    """`DEMO_PRESET` with the task's own demo settings (`Task.demo`) applied."""
    from medgan_tf import tasks
    from medgan_tf.errors import UserError

    task = tasks.get(task)
    unknown = sorted(set(task.demo) - set(PRESET_FIELDS))
    if unknown:
        raise UserError(f"task {task.name!r}: unknown demo setting(s) {', '.join(unknown)}; expected some of "
                        f"{', '.join(PRESET_FIELDS)}")
    values = dict(task.demo)
    if values.get("spacing_mm") is not None:
        values["spacing_mm"] = tuple(float(v) for v in values["spacing_mm"])
    return dataclasses.replace(DEMO_PRESET, **values)


def demo_task(task, preset: DemoPreset):
    """The task on the demo's grid: `preset.image_size` and `preset.spacing_mm` (when given)."""
    from medgan_tf import tasks

    task = tasks.get(task)
    spacing = preset.spacing_mm or task.data.spacing_mm
    data = dataclasses.replace(task.data, image_size=int(preset.image_size), spacing_mm=tuple(float(v) for v in spacing))
    return dataclasses.replace(task, data=data)


def run_demo(task: str, out: Path, preset: DemoPreset | None = None, *, quiet: bool = False, runtime=None) -> dict:
    """Run every stage into `out` (replaced if it exists); returns the verdict dict.

    `preset` defaults to the task's (`demo_preset`); `runtime` (from
    `medgan_tf.training.runtime.setup`) to the automatic settings."""
    from medgan_tf import tasks
    from medgan_tf.data.synthetic import phantom_of, write_task_pairs
    from medgan_tf.errors import UserError
    from medgan_tf.evaluation.datasets import evaluate_dataset
    from medgan_tf.evaluation.reports import write_report
    from medgan_tf.serving.export import export_run
    from medgan_tf.serving.loading import load_export
    from medgan_tf.serving.translation import translate_file

    task_record = tasks.get(task)
    phantom_of(task_record)  # a task without built-in data is refused before OUT is replaced
    task = task_record.name
    preset = preset or demo_preset(task_record)
    grid = demo_task(task_record, preset)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        log.info("── demo: %s", name)
        timings[name] = time.perf_counter()

    def done(name: str) -> None:
        timings[name] = time.perf_counter() - timings[name]

    stage("synth")
    pairs_csv = write_task_pairs(grid, out / "volumes", preset.image_size, patients=preset.patients, seed=preset.seed,
                                 options=preset.phantom_options)
    done("synth")

    stage("convert")
    dataset = _convert(task, pairs_csv, out / "dataset", preset, grid.data.spacing_mm)
    done("convert")

    stage("train")
    _train(task, out / "run", dataset, preset, quiet, runtime)
    done("train")

    stage("export")
    export_dir = export_run(out / "run", out / "savedmodel")
    model = load_export(export_dir)
    done("export")

    stage("translate")
    held_out_id, source_path, target_path = _held_out_pair(dataset, pairs_csv)
    translated = out / "translated" / f"{held_out_id}_translated.nii.gz"
    translate_file(model, source_path, translated, batch_size=8, quiet=quiet)
    done("translate")

    stage("evaluate")
    result = evaluate_dataset(model, dataset, "test", batch_size=8, baselines=True)
    write_report(result, out / "report", title=f"{preset.model} on {task} — demo (held-out test patients)")
    _three_plane_figure(out / "report" / "slices.png", source_path, translated, target_path, task, held_out_id)
    summary = result.summary()
    done("evaluate")
    if not (out / "report" / "metrics.md").is_file():
        raise UserError("demo: the evaluation report was not written")
    return _verdict(out, task_record, preset, held_out_id, translated, export_dir, summary, timings)


def _convert(task: str, pairs_csv: Path, dataset: Path, preset: DemoPreset, spacing) -> Path:
    from medgan_tf.errors import UserError
    from pipelines.convert import ConvertOptions, convert

    status = convert(ConvertOptions(pairs=pairs_csv, task=task, out=dataset, image_size=preset.image_size, salt=DEMO_SALT,
                                    spacing=tuple(float(v) for v in spacing), context_slices=preset.context_slices,
                                    val_fraction=preset.val_fraction, test_fraction=preset.test_fraction))
    if status != 0:
        raise UserError(f"demo: conversion failed (exit status {status}); see the messages above")
    return dataset


def demo_config(task: str, preset: DemoPreset | None = None):
    """The demo's ExperimentConfig: the task preset trained as `preset.model` (default: the task's
    `demo_preset`), on the demo's grid and shrunk to the preset."""
    from medgan_tf import config as config_lib
    from medgan_tf import presets

    preset = preset or demo_preset(task)
    config = presets.task_preset(demo_task(task, preset), preset.model)
    updates = {
        "generator.base_filters": preset.base_filters,
        "data.context_slices": preset.context_slices,
        "generator.residual": preset.residual,
        "train.batch_size": preset.batch_size,
        "train.epochs": 1,
        "train.steps_per_epoch": preset.steps,
        "train.seed": preset.seed,
        "train.image_summary_every_steps": 50,
        "train.select_by": preset.select_by,
        "train.validate_every_steps": preset.validate_every_steps,
    }
    if preset.learning_rate is not None:
        updates["train.generator_learning_rate"] = preset.learning_rate
        updates["train.discriminator_learning_rate"] = preset.learning_rate
    return config_lib.override(config, updates)


def _train(task: str, run_dir: Path, dataset: Path, preset: DemoPreset, quiet: bool, runtime) -> dict:
    from medgan_tf.training import runtime as runtime_lib
    from medgan_tf.training import train_experiment

    if runtime is None:
        runtime = runtime_lib.setup("auto", "auto", "auto")
    return train_experiment(demo_config(task, preset), dataset, run_dir, runtime=runtime, quiet=quiet,
                            log_every=50 if quiet else 10)


def _verdict(out: Path, task, preset: DemoPreset, held_out_id: str, translated: Path, export_dir: Path,
             summary: dict, timings: dict[str, float]) -> dict:
    """The demo's verdict on the held-out test patients, SSIM and PSNR each: `wins` when the model
    beats the untouched input (where source and target share a unit: `Task.same_unit`) and every
    classical baseline of the task, `failed` naming each comparison it lost; `passed` (the exit
    status) when it beats the untouched input — or, where the input cannot be compared, every
    classical baseline: the least a trained model must do."""
    shown = tuple(name for name in metric_names(scale="0-255") if summary["output"][name]["mean"] is not None)
    comparable = bool(task.same_unit)
    verdict = {
        "task": task.name,
        "model": preset.model,
        "preset": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(preset).items()},
        "held_out_patient": held_out_id,
        "translated_volume": str(translated),
        "export": str(export_dir),
        "model_metrics": {k: summary["output"][k]["mean"] for k in shown},
        "input_metrics": {k: summary["input"][k]["mean"] for k in shown},
        "input_comparable": comparable,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    verdict["beats_input"] = {
        name: _better(name, verdict["model_metrics"][name], verdict["input_metrics"][name]) for name in VERDICT_METRICS
    } if comparable else None
    baselines = [name for name in summary if name not in ("output", "input")]
    verdict["baseline_metrics"] = {name: {k: summary[name][k]["mean"] for k in shown} for name in baselines}
    verdict["beats_baselines"] = {
        name: {k: _better(k, verdict["model_metrics"][k], values[k]) for k in VERDICT_METRICS}
        for name, values in verdict["baseline_metrics"].items()
    }
    lost_input = [f"the untouched input on {k.upper()}" for k, won in (verdict["beats_input"] or {}).items() if not won]
    lost_baselines = [f"the classical baseline {name} on {k.upper()}"
                      for name, beats in verdict["beats_baselines"].items() for k, won in beats.items() if not won]
    verdict["failed"] = lost_input + lost_baselines
    verdict["wins"] = not verdict["failed"]
    verdict["passed"] = not lost_input if comparable else not lost_baselines
    (out / "demo.json").write_text(json.dumps(verdict, indent=2) + "\n")
    _write_readme(out, verdict, (out / "report" / "metrics.md").read_text(), task.name, preset)
    return verdict


def _better(name: str, model_value: float, input_value: float) -> bool:
    from medgan_tf.metrics import METRICS

    if METRICS.get(name).higher_is_better:
        return model_value > input_value
    return model_value < input_value


def _held_out_pair(dataset: Path, pairs_csv: Path) -> tuple[str, str, str]:
    """(patient id, source path, target path) of the first test patient."""
    from medgan_tf.data.pseudonyms import pseudonym

    manifest = json.loads((dataset / "manifest.json").read_text())
    test_keys = {v["patient_key"] for v in manifest["volumes"] if v.get("split") == "test"}
    with open(pairs_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if pseudonym(row["patient_id"], DEMO_SALT.encode()) in test_keys:
                base = pairs_csv.parent
                return row["patient_id"], str(base / row["source"]), str(base / row["target"])
    raise RuntimeError("no test patient found in the demo dataset")


def _three_plane_figure(path: Path, source_path: str, translated: Path, target_path: str, task: str,
                        patient_id: str) -> None:
    """Input | output | target | error of the held-out volume in axial, coronal and sagittal planes
    (slice-to-slice inconsistency of a 2-D model shows in the last two), on the target's grid."""
    from medgan_tf.data.io import read_volume
    from medgan_tf.evaluation.cases import on_grid, zyx
    from medgan_tf.evaluation.figures import save_three_plane_figure

    target = read_volume(target_path)
    source, output = read_volume(source_path), read_volume(translated)
    volumes = {"input": on_grid(source.array, source.affine, target) if source.unit == target.unit else None,
               "output": on_grid(output.array, output.affine, target), "target": zyx(target.array)}
    spacing = tuple(float(s) for s in reversed(target.spacing))
    save_three_plane_figure(path, volumes, spacing=spacing, unit=target.unit,
                            title=f"{task}: held-out patient {patient_id}")


def _write_readme(out: Path, verdict: dict, table: str, task: str, preset: DemoPreset) -> None:
    beats = verdict["beats_input"]
    spacing = "×".join(f"{v:g}" for v in preset.spacing_mm) + " mm" if preset.spacing_mm else "the task's spacing"
    yes = {True: "yes", False: "no"}
    if beats is None:
        input_line = ("The untouched input is not comparable with the target (source and target differ in unit); "
                      "its row does not decide the verdict.")
    else:
        input_line = (f"Model beats the untouched input on SSIM: **{yes[beats['ssim']]}**, "
                      f"on PSNR: **{yes[beats['psnr']]}**.")
    if verdict["wins"]:
        verdict_line = "**Wins**: the model beats every comparable row on SSIM and PSNR."
    elif verdict["passed"]:
        verdict_line = ("**Passed, does not win yet**: the model beats the untouched input (or, where that cannot be "
                        "compared, every baseline) but not " + "; ".join(verdict["failed"]) + ".")
    else:
        verdict_line = "**Failed**: the model did not beat " + "; ".join(verdict["failed"]) + "."
    lr = f"learning rate {preset.learning_rate:g}" if preset.learning_rate else "the recipe's learning rate"
    context = f", 2.5D with {preset.context_slices} neighbour slice(s) per side" if preset.context_slices else ""
    validation = (f"validated every {preset.validate_every_steps} iterations, best checkpoint by validation "
                  f"{preset.select_by.upper()}" if preset.validate_every_steps else
                  f"validated at the end (checkpoint by validation {preset.select_by.upper()})")
    lines = [
        f"# medgan-tf demo: {task}",
        "",
        f"Preset: {preset.model}, {preset.image_size}² at {spacing}{context}, base width {preset.base_filters}, "
        f"batch {preset.batch_size}, {preset.steps} iterations of Algorithm 1 (3 G + 1 D updates each), {lr}, "
        f"{validation}; {preset.patients} synthetic patients.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in verdict["seconds"].items()],
        "",
        f"Held-out volume translated: `{verdict['translated_volume']}` (patient {verdict['held_out_patient']}).",
        f"Export (TF Serving layout): `{verdict['export']}`. TensorBoard: `tensorboard --logdir {out / 'run'}`.",
        "",
        input_line,
        *[f"Model beats the classical baseline `{name}` on SSIM: **{yes[b['ssim']]}**, "
          f"on PSNR: **{yes[b['psnr']]}**." for name, b in verdict["beats_baselines"].items()],
        "",
        verdict_line,
        "",
        "![held-out patient in three planes](report/slices.png)",
        "",
        table,
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
