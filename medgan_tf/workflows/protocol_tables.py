"""`reproduce --protocol`: the comparison tables in a volume protocol (synthrad2023, synthrad2025,
pet) instead of the paper's per-slice metrics.

Every trained variant translates the same whole volumes (a pairs CSV: `medgan_tf.evaluation.cases`)
and is scored by the protocol on the target's grid in physical units
(`medgan_tf.evaluation.volumes`); the untouched input and the task's classical baselines, fitted
once on the CSV's train/val rows, are rows of the same table. Without `--pairs`, held-out
synthetic patients are written for it (another seed than the built-in training data, so none of
them was seen in training: one train row for fitting baselines, one val row for choosing their
parameters, the rest scored). Outputs in OUT: `table-<protocol>.md` and `results-<protocol>.json`.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
from pathlib import Path
from typing import Sequence

from medgan_tf.errors import UserError
from medgan_tf.evaluation.cases import read_evaluation_csv
from medgan_tf.evaluation.protocols import PROTOCOLS, volume_protocols
from medgan_tf.files import write_text_atomic
from medgan_tf.evaluation.scoring import json_safe
from medgan_tf.evaluation.tables import VOLUMES, markdown_table
from medgan_tf.evaluation.volumes import fit_csv_baselines, evaluate_volumes

log = logging.getLogger(__name__)

HELD_OUT_SEED_OFFSET = 1000  # the built-in training data uses the settings' seed itself
HELD_OUT_SPLITS = ("train", "val", "test", "test")


def held_out_pairs(task: str, image_size: int, seed: int, out_dir: Path) -> Path:
    """Synthetic volume pairs of patients never used for training, with a split column; reused
    when already written. Returns the CSV path."""
    from medgan_tf.data.synthetic import write_task_pairs

    folder = out_dir / f"held-out-{task}-s{image_size}-seed{seed + HELD_OUT_SEED_OFFSET}"
    path = folder / "pairs.csv"
    if path.is_file():
        return path
    written = write_task_pairs(task, folder, image_size, patients=len(HELD_OUT_SPLITS), seed=seed + HELD_OUT_SEED_OFFSET)
    with open(written, newline="") as handle:
        rows = list(csv.reader(handle))
    lines = [",".join([*rows[0], "split"])] + [",".join([*row, split]) for row, split in zip(rows[1:], HELD_OUT_SPLITS)]
    write_text_atomic(str(path), "\n".join(lines) + "\n")
    return path


def write_protocol_tables(out_dir: Path, settings, labels: dict[str, str], protocol: str,
                          pairs: Path | None, data_given: bool) -> dict[str, str]:
    """Score every run in OUT/runs/<name> (names = `labels`' keys) by `protocol` on the pairs'
    volumes; write table-<protocol>.md and results-<protocol>.json; return {"table_<protocol>",
    "results_<protocol>": path}."""
    import keras

    from medgan_tf.serving.loading import load_model

    if protocol not in volume_protocols():
        raise UserError(f"--protocol {protocol}: expected a volume protocol ({', '.join(volume_protocols())})")
    if pairs is None:
        if data_given:
            raise UserError(f"--protocol {protocol} scores whole volumes: give --pairs CSV with the held-out volumes "
                            "of your --data")
        pairs = held_out_pairs(settings.task, settings.image_size, settings.seed, out_dir)
        log.info("scoring %s on held-out synthetic volumes %s", protocol, pairs)
    rows = read_evaluation_csv(pairs)
    scored = [row for row in rows if row.split not in ("train", "val")]
    fitted = fit_csv_baselines(rows, scored, settings.task)
    summaries, results = {}, {}
    for name, label in labels.items():
        model = load_model(out_dir / "runs" / name)
        try:
            results[name] = evaluate_volumes(rows, settings.task, protocol, model=model, fitted=fitted)
        finally:
            del model
            keras.backend.clear_session()
            gc.collect()
        summaries[label] = results[name].summary()["model"]
    first = next(iter(results.values()))
    reference = first.summary()
    for row in first.rows[1:]:  # input and baselines: the same for every method
        summaries[row] = reference[row]
    return _write(out_dir, settings, protocol, pairs, summaries, first, _keys(results.values()))


def _keys(results: Sequence) -> list[str]:
    keys: list[str] = []
    for result in results:
        keys += [key for key in result.metric_keys() if key not in keys]
    return keys


def _write(out_dir: Path, settings, protocol: str, pairs: Path, summaries: dict, first, keys: list[str]) -> dict:
    definition = PROTOCOLS.get(protocol)
    markdown = "\n".join([
        f"# Comparison on {settings.task} — protocol {protocol}\n",
        f"{definition.description} ({definition.source}). Every method: {settings.budget_steps} training steps; "
        f"scored on {len(first.per_patient)} volume(s) of {pairs} in {first.unit}, mean ± sd over patients "
        "(median in brackets); best row of each column in bold.\n",
        markdown_table(summaries, columns=keys, unit=first.unit, style=VOLUMES),
        *(f"- `{name}`: {text}" for name, text in first.baselines.items()),
        *(f"- {note}" for note in first.notes), "",
    ])
    paths = {f"table_{protocol}": str(out_dir / f"table-{protocol}.md"),
             f"results_{protocol}": str(out_dir / f"results-{protocol}.json")}
    write_text_atomic(paths[f"table_{protocol}"], markdown)
    payload = json_safe({"protocol": protocol, "pairs": str(pairs), "unit": first.unit, "rows": summaries,
                         "baselines": first.baselines, "notes": first.notes})
    write_text_atomic(paths[f"results_{protocol}"], json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return paths
