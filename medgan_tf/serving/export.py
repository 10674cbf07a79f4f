"""SavedModel export for TF Serving.

Layout (TF Serving's model base path = OUT, numeric versions, the highest is served):

    OUT/<version>/saved_model.pb
    OUT/<version>/variables/
    OUT/<version>/assets/config.json          the run's resolved ExperimentConfig (+ "serving_input":
                                              the input's channel count C_in and order)
    OUT/<version>/assets/normalization.json   how physical units map to the model's [-1, 1]
    OUT/<version>/assets/precision.json       the graph's compute precision (float32 | bfloat16)
    OUT/<version>/assets.extra/tf_serving_warmup_requests, OUT/models.config,
    OUT/batching_parameters.txt               the TF Serving kit (`medgan_tf.serving.serving_kit`)

`precision="bfloat16"` builds the served generator under Keras' `mixed_bfloat16` policy with the
run's (float32) weights: convolutions compute in bfloat16 (native on CPUs with avx512_bf16 /
amx_bf16 and GPUs ≥ 8.0), variables stay float32, and the signatures still take and return
float32 (the tanh output layer is float32). Loading is unchanged: `translate`/`evaluate` run the
graph as exported.

A version is written to a hidden temporary folder inside OUT and renamed into place at the end,
so an interrupted export never leaves a numeric folder that TF Serving would pick up; the next
export removes the temporary folders of exports that were killed (their process is gone). The
signatures are described in `medgan_tf.serving.signatures`.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

from medgan_tf import config as config_lib
from medgan_tf import files
from medgan_tf.errors import UserError, no_room_error
from medgan_tf.training.build import EXPORT_POLICIES, generator_in_precision
from medgan_tf.serving.signatures import (
    CONFIG_ASSET,
    NORMALIZATION_ASSET,
    build_module,
    normalization_description,
)
from medgan_tf.serving.channels import serving_input
from medgan_tf.serving.serving_kit import write_server_config, write_warmup

log = logging.getLogger(__name__)

PRECISION_ASSET = "precision.json"
PRECISION_FORMAT = "medgan-tf-precision-v1"
# Export --precision → the Keras dtype policy the served generator is built under.


# --------------------------------------------------------------------------- precision


def precision_description(compute_dtype: str, reason: str) -> dict:
    """assets/precision.json: what the served graph computes in and why it was chosen."""
    return {
        "format": PRECISION_FORMAT,
        "compute_dtype": compute_dtype,
        "dtype_policy": EXPORT_POLICIES.get(compute_dtype, compute_dtype),  # int8: `serving.quantize` says how
        "variables_dtype": "float32",
        "signature_dtype": "float32",
        "chosen": reason,
    }


def read_precision(version_dir: str | Path) -> dict:
    """assets/precision.json of an export; exports written before it existed computed in float32."""
    path = Path(version_dir) / "assets" / PRECISION_ASSET
    if not path.is_file():
        return precision_description("float32", "export without precision.json (float32)")
    return json.loads(path.read_text())


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
    precision: str = "float32",
) -> Path:
    """Write `generator` as OUT/<version>/ (see module doc) and return that version folder.

    `version` defaults to the next free number; an existing version is never overwritten.
    `precision` is the served graph's compute precision: float32, bfloat16, or auto (bfloat16
    when *this* machine computes it natively — export where you serve).
    """
    from medgan_tf.training.runtime import choose_inference_precision

    final = check_new_version(Path(out_dir), version)
    size = int(experiment.data.image_size)
    expected_shape = (None, size, size, int(experiment.data.input_channels))
    if tuple(generator.input_shape) != expected_shape:
        raise UserError(
            f"the generator takes {tuple(generator.input_shape)}; expected {expected_shape} from the config"
        )
    description = normalization_description(experiment)
    compute_dtype, reason = choose_inference_precision(precision)
    served = generator_in_precision(generator, experiment, compute_dtype)
    signatures = publish_version(final, lambda: _write_version(served, experiment, final, description,
                                                               compute_dtype, reason))
    log.info("exported %s (signatures: %s; computes in %s, %s)", final, ", ".join(signatures), compute_dtype, reason)
    return final


def publish_version(final: Path, write, serving_config: bool = True) -> list[str]:
    """`write()` (which publishes the version folder `final`, returning its signature names), with
    a lost race for `final` or a full disk as a UserError naming it; then, for a SavedModel
    (`serving_config`), the TF Serving config files beside the versions (`serving_kit.write_server_config`)."""
    import tensorflow as tf

    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        signatures = write()
    except OSError as error:
        if isinstance(error, FileExistsError) or error.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise UserError(f"{final} was written by another export while this one ran; this one was discarded and "
                            f"{final} is the other's, complete. Run it again (it takes the next free version) or pass "
                            "--version") from None
        raise no_room_error(error, f"the export {final}") or error
    except tf.errors.OpError as error:
        raise no_room_error(error, f"the export {final}") or error
    if serving_config:
        write_server_config(final.parent)  # beside the versions, once: TF Serving's model and batching config
    return signatures


def check_new_version(out_dir: Path, version: int | None) -> Path:
    """The version folder an export writes: `version`, or the next free one; UserError for a
    version < 1 or one that exists (after removing what killed exports left behind)."""
    files.recover_leftovers(out_dir)  # versions a killed export left half-written
    if version is None:
        version = next_version(out_dir)
    if int(version) < 1:
        raise UserError(f"--version must be a positive integer (TF Serving versions); received {version}")
    final = out_dir / str(int(version))
    if final.exists():
        raise UserError(f"{final} already exists; pick another --version or leave it out for the next free one")
    return final


def write_assets(asset_dir: Path, experiment: config_lib.ExperimentConfig, description: dict, compute_dtype: str,
                 reason: str, more_assets: dict[str, dict] | None = None) -> None:
    """The export's assets into the new folder `asset_dir`: config.json (+ the serving input),
    normalization.json, precision.json and `more_assets` (file name → JSON content). Every export
    format carries these same files (`medgan_tf.serving.formats`)."""
    asset_dir.mkdir()
    config_asset = {**config_lib.to_dict(experiment), config_lib.SERVING_INPUT_KEY: serving_input(experiment.data)}
    contents = {CONFIG_ASSET: config_asset, NORMALIZATION_ASSET: description,
                PRECISION_ASSET: precision_description(compute_dtype, reason), **(more_assets or {})}
    for name, content in contents.items():
        (asset_dir / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def _write_version(served, experiment: config_lib.ExperimentConfig, final: Path, description: dict,
                   compute_dtype: str, reason: str, members: list | None = None,
                   more_assets: dict[str, dict] | None = None) -> list[str]:
    """The SavedModel of `served` (or of the ensemble `members`, `signatures.build_module`) with
    its assets (and `more_assets`: file name → JSON content), published as the folder `final`
    when complete; returns the names of its signatures."""
    import tensorflow as tf

    # The folder appears under its version number only when complete: TF Serving polls for new ones.
    with files.atomic_folder(final, replace=False, kind="export") as staging:
        asset_dir = staging / ".asset-sources"  # copied into staging/assets/ by tf.saved_model.save
        write_assets(asset_dir, experiment, description, compute_dtype, reason, more_assets)
        module, signatures = build_module(served, description, members)
        module.more_assets = [tf.saved_model.Asset(str(asset_dir / name)) for name in (more_assets or {})]
        # Tracked Asset objects are copied into <version>/assets/ by tf.saved_model.save.
        module.config_asset = tf.saved_model.Asset(str(asset_dir / CONFIG_ASSET))
        module.normalization_asset = tf.saved_model.Asset(str(asset_dir / NORMALIZATION_ASSET))
        module.precision_asset = tf.saved_model.Asset(str(asset_dir / PRECISION_ASSET))
        tf.saved_model.save(module, str(staging), signatures=signatures)
        if not (staging / "saved_model.pb").is_file():
            raise RuntimeError(f"tf.saved_model.save wrote no saved_model.pb into {staging}")
        write_warmup(staging, final.parent.resolve().name)
        shutil.rmtree(asset_dir)
    return list(signatures)


def export_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    version: int | None = None,
    checkpoint: str | None = None,
    precision: str = "float32",
) -> Path:
    """Export a run directory's checkpoint: `checkpoint` "best" (the best by validation), "latest",
    a step number or a prefix; None = the best when the run has validated, else the latest (the
    log says which). `out_dir` defaults to savedmodels/<task>; `precision` as in `export_generator`."""
    generator, experiment, out_dir = run_generator(run_dir, out_dir, checkpoint)
    return export_generator(generator, experiment, out_dir, version, precision=precision)


def run_generator(run_dir: str | Path, out_dir: str | Path | None, checkpoint: str | None):
    """(generator, experiment, out_dir) of a run for `export_run`: `checkpoint` None = the best
    when the run has validated, else the latest (the log says which); `out_dir` None = savedmodels/<task>."""
    from medgan_tf.training import checkpoints

    if checkpoint is None:
        checkpoint = "best" if checkpoints.best_checkpoint(Path(run_dir)) else "latest"
    log.info("exporting the %s checkpoint of %s: %s", checkpoint, run_dir,
             checkpoints.resolve_checkpoint(Path(run_dir), checkpoint))
    generator, experiment = checkpoints.load_generator(Path(run_dir), checkpoint)
    return generator, experiment, Path("savedmodels") / experiment.task if out_dir is None else Path(out_dir)
