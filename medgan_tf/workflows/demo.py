"""The demo: the whole product on a fresh machine in minutes, on built-in synthetic data.

synth → convert (Beam; train / val / test patients) → train a small preset (best checkpoint by
validation SSIM) → export (SavedModel) → translate one held-out volume → evaluate on the held-out
test patients against the untouched input and the task's classical baselines → a report folder:

    OUT/volumes/            synthetic NIfTI pairs + pairs.csv        (medgan-tf synth)
    OUT/dataset/            TFRecords + manifest.json                (medgan-tf convert)
    OUT/run/                checkpoints, TensorBoard logs, summary   (medgan-tf train)
    OUT/savedmodel/1/       TF Serving export                        (medgan-tf export)
    OUT/translated/         the held-out source volume translated    (medgan-tf translate)
    OUT/report/             metrics.json, metrics.md, figure.png     (medgan-tf evaluate)
                            + slices.png: the held-out volume in three planes
    OUT/README.md           what was done, the table, the verdict

The preset (`DEMO_PRESET`) is MedGAN-1G at 64² with a quarter of the paper's width, trained for
200 iterations of Algorithm 1 at batch 4: small enough for ≤ 10 minutes on two CPU cores, large
enough to beat the untouched input on SSIM and PSNR. The verdict says whether it did, and whether
it also beat the classical baseline of the task (Gaussian and non-local-means filters for
denoising; an intensity mapping fitted on the training patients for PET→CT; the identity, i.e. the
input, for motion correction); the command exits non-zero when the model does not beat the
untouched input on both SSIM and PSNR.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from medgan_tf.metrics import metric_names

log = logging.getLogger(__name__)

# Synthetic patient ids carry no identity; a fixed salt lets the demo find its held-out patient.
DEMO_SALT = "medgan-tf-demo-synthetic"


@dataclass(frozen=True)
class DemoPreset:
    model: str = "medgan_1g"
    image_size: int = 64
    base_filters: int = 16
    batch_size: int = 4
    steps: int = 200
    patients: int = 8
    val_fraction: float = 0.125  # one patient chooses the best checkpoint and the baselines' parameters
    test_fraction: float = 0.25  # two held-out patients are scored
    seed: int = 0


DEMO_PRESET = DemoPreset()


def run_demo(task: str, out: Path, preset: DemoPreset = DEMO_PRESET, *, quiet: bool = False, runtime=None) -> dict:
    """Run every stage into `out` (replaced if it exists); returns the verdict dict.

    `runtime` (from `medgan_tf.training.runtime.setup`) defaults to the automatic settings."""
    from medgan_tf.data.synthetic import write_task_pairs
    from medgan_tf.errors import UserError
    from medgan_tf.evaluation.datasets import evaluate_dataset
    from medgan_tf.evaluation.reports import write_report
    from medgan_tf.serving.export import export_run
    from medgan_tf.serving.loading import load_export
    from medgan_tf.serving.translation import translate_file

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
    pairs_csv = write_task_pairs(task, out / "volumes", preset.image_size, patients=preset.patients, seed=preset.seed)
    done("synth")

    stage("convert")
    dataset = _convert(task, pairs_csv, out / "dataset", preset)
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
    return _verdict(out, task, preset, held_out_id, translated, export_dir, summary, timings)


def _convert(task: str, pairs_csv: Path, dataset: Path, preset: DemoPreset) -> Path:
    from medgan_tf.errors import UserError
    from pipelines.convert import ConvertOptions, convert

    status = convert(ConvertOptions(pairs=pairs_csv, task=task, out=dataset, image_size=preset.image_size, salt=DEMO_SALT,
                                    val_fraction=preset.val_fraction, test_fraction=preset.test_fraction))
    if status != 0:
        raise UserError(f"demo: conversion failed (exit status {status}); see the messages above")
    return dataset


def demo_config(task: str, preset: DemoPreset = DEMO_PRESET):
    """The demo's ExperimentConfig: the task preset trained as `preset.model`, shrunk to the preset."""
    from medgan_tf import config as config_lib
    from medgan_tf import presets

    return config_lib.override(presets.task_preset(task, preset.model), {
        "data.image_size": preset.image_size,
        "generator.base_filters": preset.base_filters,
        "train.batch_size": preset.batch_size,
        "train.epochs": 1,
        "train.steps_per_epoch": preset.steps,
        "train.seed": preset.seed,
        "train.image_summary_every_steps": 50,
    })


def _train(task: str, run_dir: Path, dataset: Path, preset: DemoPreset, quiet: bool, runtime) -> dict:
    from medgan_tf.training import runtime as runtime_lib
    from medgan_tf.training import train_experiment

    if runtime is None:
        runtime = runtime_lib.setup("auto", "auto", "auto")
    return train_experiment(demo_config(task, preset), dataset, run_dir, runtime=runtime, quiet=quiet,
                            log_every=50 if quiet else 10)


def _verdict(out: Path, task: str, preset: DemoPreset, held_out_id: str, translated: Path, export_dir: Path,
             summary: dict, timings: dict[str, float]) -> dict:
    shown = tuple(name for name in metric_names(scale="0-255") if summary["output"][name]["mean"] is not None)
    verdict = {
        "task": task,
        "model": preset.model,
        "held_out_patient": held_out_id,
        "translated_volume": str(translated),
        "export": str(export_dir),
        "model_metrics": {k: summary["output"][k]["mean"] for k in shown},
        "input_metrics": {k: summary["input"][k]["mean"] for k in shown},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    verdict["beats_input"] = {
        name: _better(name, verdict["model_metrics"][name], verdict["input_metrics"][name]) for name in ("ssim", "psnr")
    }
    baselines = [name for name in summary if name not in ("output", "input")]
    verdict["baseline_metrics"] = {name: {k: summary[name][k]["mean"] for k in shown} for name in baselines}
    verdict["beats_baselines"] = {
        name: {k: _better(k, verdict["model_metrics"][k], values[k]) for k in ("ssim", "psnr")}
        for name, values in verdict["baseline_metrics"].items()
    }
    verdict["passed"] = bool(verdict["beats_input"]["ssim"] and verdict["beats_input"]["psnr"])
    (out / "demo.json").write_text(json.dumps(verdict, indent=2) + "\n")
    _write_readme(out, verdict, (out / "report" / "metrics.md").read_text(), task, preset)
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
    lines = [
        f"# medgan-tf demo: {task}",
        "",
        f"Preset: {preset.model}, {preset.image_size}², base width {preset.base_filters}, batch {preset.batch_size}, "
        f"{preset.steps} iterations of Algorithm 1 (3 G + 1 D updates each), {preset.patients} synthetic patients.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in verdict["seconds"].items()],
        "",
        f"Held-out volume translated: `{verdict['translated_volume']}` (patient {verdict['held_out_patient']}).",
        f"Export (TF Serving layout): `{verdict['export']}`. TensorBoard: `tensorboard --logdir {out / 'run'}`.",
        "",
        f"Model beats the untouched input on SSIM: **{'yes' if beats['ssim'] else 'no'}**, "
        f"on PSNR: **{'yes' if beats['psnr'] else 'no'}**.",
        *[f"Model beats the classical baseline `{name}` on SSIM: **{'yes' if b['ssim'] else 'no'}**, "
          f"on PSNR: **{'yes' if b['psnr'] else 'no'}**." for name, b in verdict["beats_baselines"].items()],
        "",
        "![held-out patient in three planes](report/slices.png)",
        "",
        table,
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
