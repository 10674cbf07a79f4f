"""The Beam figures of `medgan-tf bench`: conversion (`pipelines.convert`) and a whole archive's
translation (`translate --inputs --runner`, `medgan_tf.serving.archive`), each end to end with 1 and
2 DirectRunner worker processes; the inputs are written once beforehand, untimed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medgan_tf import tasks
from medgan_tf.workflows.timing import time_repeats

ARCHIVE_MODEL = {"model": "medgan", "num_ublocks": 2, "base_filters": 16}  # a small CasNet: the volumes' I/O counts too


def convert_figures(work_dir: Path, task: str, patients: int, image_size: int, workers: int, repeats: int,
                    register: str = "none", misalign: tuple[float, float] | None = None) -> dict[str, Any]:
    """slices/s and pairs/s of `pipelines.convert.convert` end to end (pipeline start → manifest)
    with `workers` DirectRunner worker processes and `--register register`; the NIfTI inputs (moved
    by `synth --misalign` when `misalign`) are written once beforehand, untimed."""
    from medgan_tf.data.synthetic import write_task_pairs
    from pipelines.convert import ConvertOptions, convert

    csv_path = work_dir / f"synth-{task}-{patients}{'-moved' if misalign else ''}" / "pairs.csv"
    if not csv_path.is_file():
        write_task_pairs(task, csv_path.parent, image_size, patients=patients, seed=0, misalign=misalign)
    out = work_dir / (f"converted-{workers}" + (f"-{register}" if register != "none" else ""))
    options = ConvertOptions(pairs=csv_path, task=task, out=out, image_size=image_size, salt="medgan-tf-bench-salt-0000",
                             overwrite=True, num_workers=workers, register=register)

    def convert_once() -> None:
        status = convert(options)
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
        "pairs_per_s": int(manifest["converted_pairs"]) / timing.median,
        "register": register,
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


def archive_figures(work_dir: Path, volumes: int, image_size: int, workers: int, repeats: int) -> dict[str, Any]:
    """volumes per minute of `serving.archive.translate_archive` end to end (pipeline start →
    report) over `volumes` synthetic whole-trunk PET scans (`write_pet_cohort`: 64 slices each on
    the model's grid) with `workers` DirectRunner worker processes (each loads the model once),
    through a small CasNet export of `image_size`² slices (`ARCHIVE_MODEL`).

    Each worker process computes with one TensorFlow thread, as a worker of a cluster has its own
    cores: the figure says how the volumes spread over workers, not how TensorFlow's own threads
    share this machine's cores (with all cores, one worker's inference already uses them all)."""
    from medgan_tf.data.synthetic import write_pet_cohort
    from medgan_tf.serving.archive import ArchiveOptions, translate_archive

    csv_path = work_dir / f"archive-pet-{volumes}" / "pairs.csv"
    if not csv_path.is_file():
        write_pet_cohort(csv_path.parent, volumes, seed=1)
    model = _archive_model(work_dir / f"archive-model-{image_size}", image_size)
    out = work_dir / f"archive-out-{workers}"
    options = ArchiveOptions(inputs=str(csv_path), output_dir=str(out), model=str(model), runner="DirectRunner",
                             num_workers=workers, quiet=True, threads_per_worker=1)

    def translate_once() -> None:
        status = translate_archive(options, echo=lambda message: None)
        if status != 0:
            raise RuntimeError(f"the archive translation for the benchmark failed (exit {status}); see {out}")

    cpu_before = _cpu_seconds()
    timing = time_repeats(translate_once, repeats, warmup=0)  # each run starts fresh worker processes
    cpu_per_run = (_cpu_seconds() - cpu_before) / repeats
    written = len(list(out.glob("*.nii.gz")))
    return {
        "workers": workers,
        "volumes": written,
        "image_size": image_size,
        "seconds": timing.median,
        "volumes_per_minute": 60.0 * written / timing.median,
        "cpu_seconds": cpu_per_run,
        **timing.as_dict(),
    }


def _archive_model(folder: Path, image_size: int) -> Path:
    """The export the archive figures translate with (made once, random weights: speed only)."""
    if (folder / "1" / "saved_model.pb").is_file():
        return folder / "1"
    import dataclasses

    import keras

    from medgan_tf import presets
    from medgan_tf.models import build_casnet
    from medgan_tf.serving.export import export_generator

    experiment = presets.task_preset(tasks.REFERENCE_TASK, ARCHIVE_MODEL["model"])
    experiment = dataclasses.replace(
        experiment, data=dataclasses.replace(experiment.data, image_size=image_size),
        generator=dataclasses.replace(experiment.generator, num_ublocks=ARCHIVE_MODEL["num_ublocks"],
                                      base_filters=ARCHIVE_MODEL["base_filters"]))
    keras.utils.set_random_seed(0)
    generator = build_casnet(experiment.generator, image_size)
    return export_generator(generator, experiment, folder, version=1)


def archive_section(figures: dict, work_dir: Path, quick: bool, repeats: int, say: Any) -> None:
    """archive_workers{1,2}: the whole-archive translation of 16 whole-trunk PET volumes by a model
    of 256² slices, the paper's size (--quick: 8 volumes, 128²). One timed run each (`repeats` is not used): a run is minutes of
    work, its spread between runs about 1 %, and each starts its worker processes afresh, so the
    figure includes what a cohort pays once per worker (TensorFlow's import, the model's load)."""
    for workers in (1, 2):
        say(f"archive translation, {workers} Beam worker(s)")
        figures[f"archive_workers{workers}"] = archive_figures(work_dir, volumes=8 if quick else 16,
                                                               image_size=128 if quick else 256, workers=workers,
                                                               repeats=1)


def archive_rows(f: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The bench table's rows of the archive figures present."""
    rows = []
    for workers in (1, 2):
        item = f.get(f"archive_workers{workers}")
        if item:
            rows.append(("archive translation", f"{workers} Beam worker(s), {item['volumes']} volumes of {item['image_size']}²",
                         f"{item['volumes_per_minute']:.1f} volumes/min ({item['seconds']:.1f} s, {item['cpu_seconds']:.1f} CPU-s)"))
    return rows
