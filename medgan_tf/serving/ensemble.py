"""One export from several models of one task: `medgan-tf export --ensemble A B C`.

Each member is a run directory (its best checkpoint when it has validated, else the latest), a run
of `train --folds K` (its fold-1 … fold-K runs), or an export (its graph is embedded as it was
exported, in its own precision). The export's `serving_default` returns the members' mean as
`output` and their standard deviation across members (population: divided by the member count) as
`uncertainty`; `physical` does the same in the target unit (`medgan_tf.serving.signatures`). The
members must agree on everything a client feeds and reads: task, image size, input channels and
normalization (assets/normalization.json); assets/config.json is the first member's, and
assets/ensemble.json lists the members.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

ENSEMBLE_ASSET = "ensemble.json"
ENSEMBLE_FORMAT = "medgan-tf-ensemble-v1"
FOLD_PREFIX = "fold-"


def member_paths(paths: list[str | Path]) -> list[Path]:
    """The members `paths` name, in order: a folder holding fold-k runs (`train --folds`) stands
    for them (by k); a run directory or export for itself. UserError for anything else, for a
    member named twice, or for fewer than two."""
    from medgan_tf.serving.loading import is_export, is_run_dir

    members: list[Path] = []
    for path in map(Path, paths):
        folds = sorted((p for p in path.glob(f"{FOLD_PREFIX}*") if p.name[len(FOLD_PREFIX):].isdigit() and is_run_dir(p)),
                       key=lambda p: int(p.name[len(FOLD_PREFIX):]))
        if path.is_dir() and not is_run_dir(path) and not is_export(path) and folds:
            members += folds
        elif path.exists() and (is_run_dir(path) or is_export(path)):
            members.append(path)
        else:
            raise UserError(f"--ensemble {path}: not a run directory, a run of `train --folds` (fold-1/, …) or an "
                            "export (saved_model.pb, or numeric version folders holding one)")
    resolved = [p.resolve() for p in members]
    twice = sorted({str(p) for p in members if resolved.count(p.resolve()) > 1})
    if twice:
        raise UserError(f"--ensemble names {', '.join(twice)} more than once; each member counts once")
    if len(members) < 2:
        raise UserError(f"--ensemble needs at least two members; received {len(members)} ({', '.join(map(str, members))})")
    return members


def _load_member(path: Path, compute_dtype: str) -> tuple[Any, Any, Any, str]:
    """(tracked object, callable normalized → (B, S, S, 1), ExperimentConfig, description) of one member."""
    from medgan_tf.serving.loading import is_export, load_export
    from medgan_tf.serving.signatures import OUTPUT_NAME
    from medgan_tf.training import checkpoints
    from medgan_tf.training.build import generator_in_precision

    if is_export(path):
        model = load_export(path)
        if model.has_uncertainty:
            raise UserError(f"--ensemble {path} is itself an ensemble; give its members instead")
        serve = model.loaded.serve
        return model.loaded, (lambda images: serve(images)[OUTPUT_NAME]), model.config, f"export {model.path}"
    which = "best" if checkpoints.best_checkpoint(path) else "latest"
    generator, experiment = checkpoints.load_generator(path, which)
    generator = generator_in_precision(generator, experiment, compute_dtype)
    return generator, (lambda images: generator(images, training=False)), experiment, \
        f"run {path} ({which} checkpoint {checkpoints.resolve_checkpoint(path, which)})"


def export_ensemble(
    paths: list[str | Path],
    out_dir: str | Path | None = None,
    version: int | None = None,
    precision: str = "float32",
) -> Path:
    """Write the ensemble of the members `paths` name (`member_paths`) as OUT/<version>/ (OUT
    defaults to savedmodels/<task>) and return that folder. `precision` applies to run members."""
    from medgan_tf.serving.export import _write_version, check_new_version, publish_version
    from medgan_tf.serving.signatures import normalization_description
    from medgan_tf.training.runtime import choose_inference_precision

    members = member_paths(paths)
    compute_dtype, reason = choose_inference_precision(precision)
    loaded, experiments, descriptions = [], [], []
    for number, path in enumerate(members, start=1):
        log.info("ensemble member %d/%d: %s", number, len(members), path)
        tracked, call, experiment, description = _load_member(path, compute_dtype)
        loaded.append((tracked, call))
        experiments.append(experiment)
        descriptions.append(description)
    first = normalization_description(experiments[0])
    for path, experiment in zip(members[1:], experiments[1:]):
        other = normalization_description(experiment)
        if other != first:
            keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            raise UserError(f"--ensemble {path} does not take and give what {members[0]} does (differs in "
                            f"{', '.join(keys)}); every member must be a model of one task with one input")
    out_dir = Path(out_dir) if out_dir is not None else Path("savedmodels") / experiments[0].task
    final = check_new_version(out_dir, version)
    ensemble = {"format": ENSEMBLE_FORMAT, "members": descriptions, "count": len(members),
                "output": "mean of the members", "uncertainty": "population standard deviation across the members"}
    signatures = publish_version(final, lambda: _write_version(
        None, experiments[0], final, first, compute_dtype, reason, members=loaded,
        more_assets={ENSEMBLE_ASSET: ensemble}))
    log.info("exported the %d-member ensemble %s (signatures: %s)", len(members), final, ", ".join(signatures))
    return final
