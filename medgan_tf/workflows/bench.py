"""`medgan-tf bench`: the project's performance figures, measured in one process and one run.

Every figure is the median of timed repeats after untimed warm-ups (`medgan_tf.workflows.timing`).
The machine's own fp32 GEMM
rate is measured in the same run and is the reference the targets are ratios of, so the targets
mean the same thing on a loaded or an idle machine only as far as the load is steady: check
`uptime` before trusting a number.

Figures (keys of `run_bench(...)["figures"]`):
  gemm_gflops                   tf.linalg.matmul N×N float32, 2·N³ FLOP per call
  inference_batch{1,8}          exported CasNet-6 SavedModel (`serving_default`), slices/s and GFLOP/s
  translate_64                  `serving.translation.translate_file` of a 64-slice NIfTI volume (read → write)
  train_iteration_256           one MedGAN iteration (N_G = 3 G updates + 1 D update, VGG losses)
  train_iteration_demo          the same at the demo preset (64², 1 U-block, base 16, batch 4)
  input_pipeline                `dataset.make_dataset` over the TFRecords just converted, augmented
  convert_workers{1,2}          `pipelines.convert` end to end with 1 and 2 Beam worker processes

Targets: inference at batch 8 ≥ 0.8 × GEMM GFLOP/s; translate ≤ 1.2 × slices × the
batch-8 per-slice time; input pipeline ≥ 20 × the slices/s the demo training consumes; 2 Beam
workers ≥ 1.6 × 1 worker.

Everything here imports TensorFlow inside the function.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medgan_tf.presets import MODELS
from medgan_tf.workflows.demo import DEMO_PRESET as _DEMO
from medgan_tf.workflows.timing import gemm_gflops, model_flops, time_repeats

log = logging.getLogger(__name__)

# What a CasNet-6 forward pass at 256² costs (by hand from the layer shapes); the counted value must agree.
CASNET6_GFLOP_PER_SLICE = 71.4
DEMO_PRESET = {
    "task": "pet_denoise",
    "model": _DEMO.model,
    "image_size": _DEMO.image_size,
    "num_ublocks": MODELS.get(_DEMO.model).num_ublocks,
    "base_filters": _DEMO.base_filters,
    "batch_size": _DEMO.batch_size,
}
TARGETS = {
    "inference_batch8_vs_gemm": 0.8,  # ≥
    "translate_vs_batch8": 1.2,  # ≤
    "input_pipeline_vs_demo_training": 20.0,  # ≥
    "convert_2_vs_1_workers": 1.6,  # ≥
}


# --------------------------------------------------------------------------- the measurements


def casnet_experiment(task: str = "pet_ct", model: str = "medgan", image_size: int = 256, **generator: Any):
    from medgan_tf import presets

    experiment = presets.task_preset(task, model)
    data = dataclasses.replace(experiment.data, image_size=image_size)
    gen = dataclasses.replace(experiment.generator, **generator)
    return dataclasses.replace(experiment, data=data, generator=gen)


def inference_figures(exported: Any, flops_per_slice: int, batch_size: int, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """slices/s and achieved GFLOP/s of `exported` (an ExportedModel) on a batch of random slices."""
    size = exported.image_size
    batch = np.random.default_rng(1).uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32)
    timing = time_repeats(lambda: exported(batch), repeats, warmup)
    per_slice = timing.median / batch_size
    return {
        "batch_size": batch_size,
        "slices_per_s": 1.0 / per_slice,
        "seconds_per_slice": per_slice,
        "gflops": flops_per_slice / per_slice / 1e9,
        **timing.as_dict(),
    }


def write_test_volume(path: Path, image_size: int, slices: int, spacing_mm: float = 1.0) -> Path:
    """A PET-like NIfTI volume (Bq/ml) whose model grid (task spacing `spacing_mm`) has exactly
    `slices` axial slices of image_size²."""
    from medgan_tf.data.io import Volume, write_nifti

    rng = np.random.default_rng(2)
    array = rng.gamma(2.0, 1000.0, (image_size, image_size, slices)).astype(np.float32)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = -spacing_mm * (np.array(array.shape) - 1) / 2.0
    return write_nifti(Volume(array, affine, "PT", "Bq/ml", {"format": "bench"}), path)


def translate_figures(exported: Any, work_dir: Path, slices: int, batch_size: int, repeats: int, warmup: int) -> dict[str, Any]:
    from medgan_tf.serving.translation import translate_file

    spacing = float(exported.config.data.spacing_mm[0])
    volume_path = write_test_volume(work_dir / "bench-volume.nii.gz", exported.image_size, slices, spacing)
    output_path = work_dir / "bench-translated.nii.gz"
    grid_slices = {}

    def translate() -> None:
        translation = translate_file(exported, volume_path, output_path, batch_size=batch_size, quiet=True)
        grid_slices["value"] = translation.grid_shape[2]

    timing = time_repeats(translate, repeats, warmup)
    return {"slices": grid_slices["value"], "batch_size": batch_size, "seconds": timing.median, **timing.as_dict()}


def train_iteration_figures(experiment: Any, batch_size: int, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Seconds of one MedGAN iteration (N_G generator updates + 1 discriminator update, every
    loss of the recipe, VGG with random weights) through the training driver's step function."""
    import tensorflow as tf

    from medgan_tf.training.driver import make_train_step
    from medgan_tf.training.build import build_model

    size = experiment.data.image_size
    model = build_model(experiment, vgg_weights="none", jit_compile=False)
    rng = np.random.default_rng(3)
    pair = tuple(tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32)) for _ in range(2))
    iterator = iter(tf.data.Dataset.from_tensors(pair).repeat())
    step = make_train_step(model, tf.distribute.get_strategy(), jit_compile=False)
    timing = time_repeats(lambda: {k: v.numpy() for k, v in step(iterator).items()}, repeats, warmup)
    del model
    return {
        "image_size": size,
        "num_ublocks": experiment.generator.num_ublocks,
        "base_filters": experiment.generator.base_filters,
        "batch_size": batch_size,
        "generator_steps": experiment.train.generator_steps,
        "seconds": timing.median,
        "slices_per_s": batch_size / timing.median,
        **timing.as_dict(),
    }


def input_pipeline_figures(data_dir: Path, batch_size: int, batches: int, repeats: int) -> dict[str, Any]:
    """slices/s of `make_dataset` (shuffle, repeat, augmentation, batch, prefetch) over the
    training split of a converted dataset, `batches` batches per timed repeat, after one warm-up
    pass (fills the shuffle buffer and the prefetch)."""
    from medgan_tf.data import dataset

    manifest = dataset.read_manifest(data_dir)
    batches_iterator = iter(
        dataset.make_dataset(data_dir, "train", batch_size, augment=True, shuffle=True, repeat=True, seed=0)
    )

    def consume() -> None:
        for _ in range(batches):
            source, _target = next(batches_iterator)
        source.numpy()

    timing = time_repeats(consume, repeats, warmup=1)
    return {
        "task": manifest["task"],
        "image_size": manifest["image_size"],
        "batch_size": batch_size,
        "slices_per_s": batches * batch_size / timing.median,
        **timing.as_dict(),
    }


def convert_figures(work_dir: Path, task: str, patients: int, image_size: int, workers: int, repeats: int) -> dict[str, Any]:
    """slices/s of `pipelines.convert.run` end to end (pipeline start → manifest) with `workers`
    DirectRunner worker processes; the NIfTI inputs are written once beforehand, untimed."""
    from medgan_tf.data.synthetic import write_synthetic_dataset
    from pipelines import convert

    csv_path = work_dir / f"synth-{task}-{patients}" / "pairs.csv"
    if not csv_path.is_file():
        write_synthetic_dataset(task, csv_path.parent, patients=patients, seed=0, field_of_view_mm=float(image_size))
    out = work_dir / f"converted-{workers}"
    argv = ["--pairs", str(csv_path), "--task", task, "--out", str(out), "--image-size", str(image_size),
            "--salt", "medgan-tf-bench-salt-0000", "--overwrite", "--num-workers", str(workers)]

    def convert_once() -> None:
        status = convert.run(argv)
        if status != 0:
            raise RuntimeError(f"conversion for the benchmark failed (exit {status})")

    cpu_before = _cpu_seconds()
    timing = time_repeats(convert_once, repeats, warmup=0)  # each run starts fresh worker processes
    cpu_per_run = (_cpu_seconds() - cpu_before) / repeats
    manifest = json.loads((out / "manifest.json").read_text())
    slices = sum(int(c["slices"]) for c in manifest["counts"].values())
    return {
        "workers": workers,
        "pairs": int(manifest["converted_pairs"]),
        "slices": slices,
        "seconds": timing.median,
        "slices_per_s": slices / timing.median,
        # CPU of this process and its (reaped) worker processes per run: equal for 1 and 2 workers
        # when the work is split without duplicated overhead, whatever the machine's load.
        "cpu_seconds": cpu_per_run,
        **timing.as_dict(),
    }


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its terminated, waited-for children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --------------------------------------------------------------------------- the run


class _Sections:
    """Wall seconds per section of the run (warm-ups and set-up included), with progress lines."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress, self.seconds = progress, {}
        self.name, self.start = None, time.perf_counter()

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        if self.name is not None:
            self.seconds[self.name] = round(now - self.start, 2)
        self.name, self.start = message, now
        if self.progress is not None and message:
            self.progress(message)


def run_bench(quick: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every figure in one run, plus the target ratios. `quick` uses fewer repeats, a smaller
    GEMM, a shorter translated volume and fewer conversion pairs (≈ 3.5 minutes on an idle 2-core
    machine; a full run ≈ 12 minutes)."""
    import tensorflow as tf

    repeats = 1 if quick else 3
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    say = _Sections(progress)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="medgan-bench-") as temporary:
        work_dir = Path(temporary)
        say("GEMM")
        figures["gemm"] = gemm_gflops(2048 if quick else 4096, repeats=3 if quick else 5, warmup=1)
        experiment = _inference_section(figures, work_dir, quick, repeats, say)
        _training_section(figures, experiment, quick, repeats, say)
        _conversion_section(figures, work_dir, quick, repeats, say)
        say("")  # closes the last section
    ratios = target_ratios(figures)
    if quick:
        # 8 small volumes take ~6 s either way: Beam's fixed start-up cost, not the split of the
        # work, decides this ratio. Only a full run (16 volumes of 256²) judges the target.
        ratios["convert_2_vs_1_workers"].update(
            met=None, note="not judged in --quick: too little conversion work; run the full bench"
        )
    return {
        "quick": quick,
        "seconds": time.perf_counter() - started,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "section_seconds": say.seconds,
        "figures": figures,
        "targets": ratios,
    }


def _inference_section(figures: dict, work_dir: Path, quick: bool, repeats: int, say: _Sections):
    """CasNet-6 FLOP count, export, SavedModel inference at batch 1 and 8, translate; returns the
    CasNet-6 experiment for the training section."""
    import keras

    from medgan_tf.models import build_casnet
    from medgan_tf.serving.export import export_generator
    from medgan_tf.serving.loading import load_export

    say("CasNet-6 export")
    experiment = casnet_experiment("pet_ct", "medgan", 256)
    keras.utils.set_random_seed(0)
    generator = build_casnet(experiment.generator, experiment.data.image_size)
    flops = model_flops(generator)
    export_start = time.perf_counter()
    version_dir = export_generator(generator, experiment, work_dir / "savedmodel", version=1)
    export_seconds = time.perf_counter() - export_start
    del generator
    exported = load_export(version_dir)
    figures["casnet6"] = {
        "gflop_per_slice": flops / 1e9,
        "expected_gflop_per_slice": CASNET6_GFLOP_PER_SLICE,
        "matches_expected": abs(flops / 1e9 - CASNET6_GFLOP_PER_SLICE) / CASNET6_GFLOP_PER_SLICE < 0.01,
        "export_seconds": export_seconds,
    }
    say("inference batch 1")
    figures["inference_batch1"] = inference_figures(exported, flops, 1, repeats=2 if quick else 5)
    say("inference batch 8")
    figures["inference_batch8"] = inference_figures(exported, flops, 8, repeats=repeats + (0 if quick else 2))
    translate_slices = 16 if quick else 64
    say(f"translate {translate_slices} slices")
    # No separate warm-up: the batch-8 runs above already warmed the same loaded signature.
    figures["translate"] = translate_figures(exported, work_dir, translate_slices, 8, repeats=1 if quick else 2, warmup=0)
    return experiment


def _training_section(figures: dict, experiment, quick: bool, repeats: int, say: _Sections) -> None:
    say("MedGAN iteration at 256², CasNet-6")
    figures["train_iteration_256"] = train_iteration_figures(experiment, batch_size=1, repeats=repeats)
    say("MedGAN iteration at the demo preset")
    demo = casnet_experiment(
        DEMO_PRESET["task"], DEMO_PRESET["model"], DEMO_PRESET["image_size"],
        num_ublocks=DEMO_PRESET["num_ublocks"], base_filters=DEMO_PRESET["base_filters"],
    )
    figures["train_iteration_demo"] = train_iteration_figures(demo, DEMO_PRESET["batch_size"], repeats=3 if quick else 5)


def _conversion_section(figures: dict, work_dir: Path, quick: bool, repeats: int, say: _Sections) -> None:
    # Quick runs convert smaller volumes (128²): the same per-pair work split, a third of the time.
    convert_size = 128 if quick else 256
    for workers in (1, 2):
        say(f"conversion, {workers} Beam worker(s)")
        figures[f"convert_workers{workers}"] = convert_figures(
            work_dir, "pet_ct", patients=8 if quick else 16, image_size=convert_size, workers=workers, repeats=repeats
        )
    say("input pipeline")
    # Reads the records just converted (slices ≥ the demo's 64², so the figure is conservative).
    figures["input_pipeline"] = input_pipeline_figures(
        work_dir / "converted-2", DEMO_PRESET["batch_size"], batches=100 if quick else 300, repeats=repeats + 1
    )


def target_ratios(figures: dict[str, Any]) -> dict[str, Any]:
    """The four targets as {name: {"ratio", "target", "met", "meaning"}}."""
    batch8 = figures["inference_batch8"]
    translate = figures["translate"]
    demo = figures["train_iteration_demo"]
    ratios = {
        "inference_batch8_vs_gemm": (
            batch8["gflops"] / figures["gemm"]["gflops"],
            "batch-8 inference GFLOP/s ÷ GEMM GFLOP/s (≥)",
        ),
        "translate_vs_batch8": (
            translate["seconds"] / (translate["slices"] * batch8["seconds_per_slice"]),
            "translate wall time ÷ (slices × batch-8 seconds per slice) (≤)",
        ),
        "input_pipeline_vs_demo_training": (
            figures["input_pipeline"]["slices_per_s"] / demo["slices_per_s"],
            "input-pipeline slices/s ÷ demo training slices/s (≥)",
        ),
        "convert_2_vs_1_workers": (
            figures["convert_workers2"]["slices_per_s"] / figures["convert_workers1"]["slices_per_s"],
            "conversion slices/s with 2 workers ÷ with 1 (≥)",
        ),
    }
    result = {}
    for name, (ratio, meaning) in ratios.items():
        target = TARGETS[name]
        met = ratio <= target if name == "translate_vs_batch8" else ratio >= target
        result[name] = {"ratio": round(float(ratio), 4), "target": target, "met": bool(met), "meaning": meaning}
    return result


def format_table(report: dict[str, Any]) -> str:
    """The report as a readable plain-text table."""
    f = report["figures"]
    rows = [
        ("GEMM fp32", f"{f['gemm']['size']}²", f"{f['gemm']['gflops']:.1f} GFLOP/s"),
        ("CasNet-6 FLOP", "256², per slice", f"{f['casnet6']['gflop_per_slice']:.2f} GFLOP (expected {CASNET6_GFLOP_PER_SLICE})"),
        ("CasNet-6 export", "SavedModel write", f"{f['casnet6']['export_seconds']:.1f} s"),
    ]
    for batch in (1, 8):
        item = f[f"inference_batch{batch}"]
        rows.append((f"inference batch {batch}", "SavedModel", f"{item['slices_per_s']:.3f} slices/s, {item['gflops']:.1f} GFLOP/s ({item['seconds_per_slice']:.3f} s/slice)"))
    t = f["translate"]
    rows.append(("translate", f"{t['slices']} slices, batch {t['batch_size']}", f"{t['seconds']:.2f} s ({t['seconds'] / t['slices']:.3f} s/slice)"))
    for key, label in (("train_iteration_256", "MedGAN iteration"), ("train_iteration_demo", "MedGAN iteration (demo)")):
        item = f[key]
        rows.append((label, f"{item['image_size']}², {item['num_ublocks']} U-block(s), base {item['base_filters']}, batch {item['batch_size']}",
                     f"{item['seconds']:.3f} s ({item['slices_per_s']:.2f} slices/s)"))
    p = f["input_pipeline"]
    rows.append(("input pipeline", f"{p['task']} {p['image_size']}², augmented, batch {p['batch_size']}", f"{p['slices_per_s']:.0f} slices/s"))
    for workers in (1, 2):
        item = f[f"convert_workers{workers}"]
        rows.append(("conversion", f"{workers} Beam worker(s), {item['pairs']} pairs, {item['slices']} slices", f"{item['slices_per_s']:.1f} slices/s ({item['seconds']:.1f} s, {item.get('cpu_seconds', float('nan')):.1f} CPU-s)"))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
    lines.append("")
    for name, item in report["targets"].items():
        verdict = {True: "MET ", False: "MISS", None: "N/A "}[item["met"]]
        note = f" [{item['note']}]" if item.get("note") else ""
        lines.append(f"{verdict} {name}: {item['ratio']:.3f} (target {item['target']}) — {item['meaning']}{note}")
    lines.append("")
    lines.append(
        f"{report['seconds']:.0f} s, {report['cpus']} CPUs, load average before {report['load_average_before']}, "
        f"after {report['load_average_after']}, TensorFlow {report['tensorflow']}{', --quick' if report['quick'] else ''}"
    )
    return "\n".join(lines)
