"""Single models vs TTA vs a 3-fold ensemble on the demo's held-out patients (README "How sure is
the model?"). Usage: python benchmarks/uncertainty_demo.py OUT [STEPS_PER_FOLD]  (default 100).

The demo's data for the default task (8 phantom patients: 5 train, 1 val, 2 test) and its training
settings, with STEPS_PER_FOLD steps per fold; `train --folds 3` on the training split, `export
--ensemble`, then every model scored on the 2 test patients as whole volumes (protocol `paper`,
and for the models with an uncertainty how well it predicts the error). Re-running continues.
"""

import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

from medgan_tf import tasks
from medgan_tf.data.pseudonyms import pseudonym
from medgan_tf.data.synthetic import write_task_pairs
from medgan_tf.evaluation.cases import read_evaluation_csv
from medgan_tf.evaluation.volumes import evaluate_volumes
from medgan_tf.serving.ensemble import export_ensemble
from medgan_tf.serving.loading import load_model
from medgan_tf.training import runtime as runtime_lib
from medgan_tf.training.folds import train_folds
from medgan_tf.workflows.demo import DEMO_SALT, _convert, demo_config, demo_preset, demo_task


def main(out: Path, steps: int) -> dict:
    task = tasks.DEFAULT_TASK
    preset = dataclasses.replace(demo_preset(task), steps=steps, validate_every_steps=50)
    grid = demo_task(task, preset)
    started = time.time()
    pairs = out / "volumes" / "pairs.csv"
    if not (out / "dataset" / "manifest.json").exists():
        pairs = write_task_pairs(grid, out / "volumes", preset.image_size, patients=preset.patients,
                                 seed=preset.seed, options=preset.phantom_options)
        _convert(task, pairs, out / "dataset", preset, grid.data.spacing_mm)
    train_folds(demo_config(task, preset), out / "dataset", out / "run", 3,
                runtime=runtime_lib.setup("auto", "auto", "auto"), quiet=True, log_every=50)
    if not (out / "ensemble").exists():
        export_ensemble([out / "run"], out / "ensemble")
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    splits = {volume["patient_key"]: volume["split"] for volume in manifest["volumes"]}
    rows = list(csv.DictReader(open(pairs)))
    scored_csv = out / "volumes" / "scored.csv"
    with open(scored_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) + ["split"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "split": splits[pseudonym(row["patient_id"], DEMO_SALT.encode())]})
    scored = read_evaluation_csv(scored_csv)
    models = {f"fold-{k}": (out / "run" / f"fold-{k}", "none") for k in (1, 2, 3)}
    models.update({"fold-1 + TTA flips": (out / "run" / "fold-1", "flips"), "ensemble": (out / "ensemble", "none"),
                   "ensemble + TTA flips": (out / "ensemble", "flips")})
    results = {}
    for name, (path, tta) in models.items():
        summary = evaluate_volumes(scored, grid, "paper", model=load_model(path), fitted=([], []), tta=tta).summary()
        results[name] = {key: value["mean"] for key, value in summary["model"].items() if value}
        print(name, json.dumps(results[name]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"done in {time.time() - started:.0f} s")
    return results


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100)
