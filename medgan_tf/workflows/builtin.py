"""The built-in synthetic dataset of each task, made once and cached (the default of `train`).

`ensure_builtin_dataset` synthesizes phantom pairs and converts them through the real Beam
pipeline into `<cache>/datasets/<task>-s<image_size>-p<patients>-seed<seed>-v<version>/`, where
<cache> is $MEDGAN_TF_CACHE, else $XDG_CACHE_HOME/medgan-tf, else ~/.cache/medgan-tf. A dataset
is reused only when its manifest exists (the converter writes it last, atomically).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from medgan_tf import tasks

# Bump when the phantoms, the simulation or the record schema change: old caches are ignored.
BUILTIN_VERSION = 3
# Synthetic patient ids carry no identity: a fixed, public salt keeps the keys reproducible.
BUILTIN_SALT = "medgan-tf-builtin-synthetic"


def cache_root() -> Path:
    if os.environ.get("MEDGAN_TF_CACHE"):
        return Path(os.environ["MEDGAN_TF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medgan-tf"


def builtin_dataset_dir(task: str, image_size: int, patients: int = 8, seed: int = 0, cache_dir: str | Path | None = None,
                        context_slices: int = 0) -> Path:
    root = Path(cache_dir) if cache_dir else cache_root()
    context = f"-k{context_slices}" if context_slices else ""  # 2.5D windows (medgan_tf.data.context)
    return root / "datasets" / f"{task}-s{image_size}-p{patients}-seed{seed}{context}-v{BUILTIN_VERSION}"


def ensure_builtin_dataset(
    task: str,
    image_size: int,
    cache_dir: str | Path | None = None,
    patients: int = 8,
    seed: int = 0,
    num_workers: int | None = None,
    context_slices: int = 0,
) -> Path:
    """Path of the converted built-in dataset of `task` at `image_size` (made on first use), with
    2.5D windows of `context_slices` neighbours per side when > 0.

    The directory has the converter's layout (manifest.json, train/, val/) and works with
    `medgan_tf.data.dataset.make_dataset`.
    """
    task = tasks.get(task).name
    out = builtin_dataset_dir(task, image_size, patients, seed, cache_dir, context_slices)
    if (out / "manifest.json").is_file():
        logging.info("using the cached built-in synthetic %s dataset %s", task, out)
        return out
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time per dataset (parallel test workers, two trainings started together).
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "manifest.json").is_file():  # made by another process while we waited
            return out
        return _build(task, image_size, out, patients, seed, num_workers, context_slices)


def _build(task: str, image_size: int, out: Path, patients: int, seed: int, num_workers: int | None,
           context_slices: int = 0) -> Path:
    from medgan_tf.data.synthetic import write_task_pairs
    from medgan_tf.errors import UserError
    from pipelines.convert import ConvertOptions, convert

    logging.info("making the built-in synthetic %s dataset (%d patients, %d²) in %s", task, patients, image_size, out)
    with tempfile.TemporaryDirectory(prefix=f"synth-{task}-", dir=out.parent) as volumes_dir:
        csv_path = write_task_pairs(task, volumes_dir, image_size, patients=patients, seed=seed)
        status = convert(ConvertOptions(pairs=csv_path, task=task, out=out, image_size=image_size, salt=BUILTIN_SALT,
                                        overwrite=True, context_slices=context_slices, num_workers=num_workers or None))
    if status != 0 or not (out / "manifest.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        raise UserError(f"could not build the built-in {task} dataset (converter exit status {status})")
    return out
