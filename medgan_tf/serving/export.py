"""SavedModel export for TF Serving.

Layout (TF Serving's model base path = OUT, numeric versions, the highest is served):

    OUT/<version>/saved_model.pb
    OUT/<version>/variables/
    OUT/<version>/assets/config.json          the run's resolved ExperimentConfig
    OUT/<version>/assets/normalization.json   how physical units map to the model's [-1, 1]

A version is written to a hidden temporary folder inside OUT and renamed into place at the end,
so an interrupted export never leaves a numeric folder that TF Serving would pick up. The
signatures are described in `medgan_tf.serving.signatures`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from medgan_tf import config as config_lib
from medgan_tf.errors import UserError
from medgan_tf.serving.signatures import CONFIG_ASSET, NORMALIZATION_ASSET, build_module, normalization_description

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- export


def next_version(out_dir: str | Path) -> int:
    """1 + the highest numeric version folder in `out_dir` (1 when there is none)."""
    out_dir = Path(out_dir)
    versions = [int(p.name) for p in out_dir.iterdir() if p.is_dir() and p.name.isdigit()] if out_dir.is_dir() else []
    return max(versions, default=0) + 1


def export_generator(
    generator,
    experiment: config_lib.ExperimentConfig,
    out_dir: str | Path,
    version: int | None = None,
) -> Path:
    """Write `generator` as OUT/<version>/ (see module doc) and return that version folder.

    `version` defaults to the next free number; an existing version is never overwritten.
    """
    import tensorflow as tf

    out_dir = Path(out_dir)
    if version is None:
        version = next_version(out_dir)
    if int(version) < 1:
        raise UserError(f"--version must be a positive integer (TF Serving versions); received {version}")
    final = out_dir / str(int(version))
    if final.exists():
        raise UserError(f"{final} already exists; pick another --version or leave it out for the next free one")
    size = int(experiment.data.image_size)
    expected_shape = (None, size, size, 1)
    if tuple(generator.input_shape) != expected_shape:
        raise UserError(
            f"the generator takes {tuple(generator.input_shape)}; expected {expected_shape} from the config"
        )
    description = normalization_description(experiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".export-{int(version)}-"))
    asset_dir = Path(tempfile.mkdtemp(prefix="medgan-export-assets-"))
    try:
        (asset_dir / CONFIG_ASSET).write_text(config_lib.to_json(experiment) + "\n")
        (asset_dir / NORMALIZATION_ASSET).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
        module, signatures = build_module(generator, description)
        # Tracked Asset objects are copied into <version>/assets/ by tf.saved_model.save.
        module.config_asset = tf.saved_model.Asset(str(asset_dir / CONFIG_ASSET))
        module.normalization_asset = tf.saved_model.Asset(str(asset_dir / NORMALIZATION_ASSET))
        tf.saved_model.save(module, str(staging), signatures=signatures)
        if not (staging / "saved_model.pb").is_file():
            raise RuntimeError(f"tf.saved_model.save wrote no saved_model.pb into {staging}")
        os.rename(staging, final)  # atomic on one file system; fails if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(asset_dir, ignore_errors=True)
    log.info("exported %s (signatures: %s)", final, ", ".join(signatures))
    return final


def export_run(
    run_dir: str | Path, out_dir: str | Path | None = None, version: int | None = None, checkpoint: str | None = None
) -> Path:
    """Export a run directory's latest checkpoint (or the `checkpoint` prefix given); `out_dir`
    defaults to savedmodels/<task>."""
    from medgan_tf.training import checkpoints

    generator, experiment = checkpoints.load_generator(Path(run_dir), checkpoint)
    if out_dir is None:
        out_dir = Path("savedmodels") / experiment.task
    return export_generator(generator, experiment, out_dir, version)
