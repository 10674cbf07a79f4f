"""Training on misaligned pairs with and without `convert --register rigid`, at the same budget
(README "Pairs that are not aligned"). Usage: python benchmarks/registration_training.py OUT [STEPS]
(default: the demo's 300 steps).

The demo's settings for mr_ct (`workflows/demo.py`: 64² slices at 4×4×3 mm, pix2pix with base 16,
batch 4, 2.5D with 2 neighbours per side, learning rate 1e-3, a validation every 100 steps), the
best checkpoint chosen by validation SSIM instead of the demo's PSNR. 12 head phantoms whose CTs
`synth --misalign 6,4` moved (up to 6 mm and 4°); the split is named in the pairs CSV (7 train,
2 val, 3 test), so both conversions split alike. The CSV is converted twice, identical but for
`--register rigid` (both with `--preview`); each dataset trains with the same steps and seed.

Scored twice: (1) the validation SSIM / PSNR the training reports on its own val split — the
unregistered run's val targets are its misaligned CTs, the registered run's are the registered
ones; (2) both best checkpoints on the 3 test patients against their ALIGNED CTs (the same seed
synthesized without --misalign: the same volumes before the move), whole volumes in HU on the CT's
grid: protocol synthrad2023 (MAE, PSNR, SSIM in the body mask) and the paper's per-slice SSIM /
PSNR (0–255 scale). Writes OUT/results.json and prints one line per figure.
"""

import csv
import logging
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from medgan_tf.data.synthetic import write_task_pairs
from medgan_tf.evaluation.cases import read_evaluation_csv
from medgan_tf.evaluation.volumes import evaluate_volumes
from medgan_tf.serving.loading import load_model
from medgan_tf.training import runtime as runtime_lib
from medgan_tf.training import train_experiment
from medgan_tf.workflows.demo import DEMO_SALT, demo_config, demo_preset, demo_task
from pipelines.convert import ConvertOptions, convert

TASK = "mr_ct"
MISALIGN = (6.0, 4.0)  # mm, degrees: synth --misalign 6,4
SPLITS = ["train"] * 7 + ["val"] * 2 + ["test"] * 3  # by patient index


def with_splits(pairs: Path) -> Path:
    """`pairs` with a split column (`SPLITS` by row), written beside it as pairs-split.csv."""
    rows = list(csv.DictReader(open(pairs)))
    named = pairs.with_name("pairs-split.csv")
    with open(named, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) + ["split"])
        writer.writeheader()
        writer.writerows({**row, "split": split} for row, split in zip(rows, SPLITS))
    return named


def aligned_test_csv(aligned: Path) -> Path:
    """The test patients' aligned pairs (source, the CT before the move) as an evaluation CSV."""
    rows = [row for row, split in zip(csv.DictReader(open(aligned)), SPLITS) if split == "test"]
    path = aligned.with_name("test-aligned.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["patient_id", "source", "target", "split"])
        writer.writeheader()
        writer.writerows({"patient_id": r["patient_id"], "source": r["source"], "target": r["target"], "split": "test"}
                         for r in rows)
    return path


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_one(out: Path, name: str, pairs: Path, register: str, preset, grid, scored) -> dict:
    """Convert `pairs` with `register`, train, score on the aligned test patients → figures."""
    figures = {"register": register, "load_before": load()}
    started = time.time()
    dataset = out / f"dataset-{name}"
    if not (dataset / "manifest.json").exists():
        status = convert(ConvertOptions(pairs=pairs, task=TASK, out=dataset, image_size=preset.image_size, salt=DEMO_SALT,
                                        spacing=grid.data.spacing_mm, context_slices=preset.context_slices,
                                        register=register, preview=True, overwrite=True))
        assert status == 0, f"conversion {name} failed ({status})"
    manifest = json.loads((dataset / "manifest.json").read_text())
    figures["convert_s"] = round(time.time() - started, 1)
    figures["rejected"] = [r["reason"] for r in manifest["rejected"]]
    figures["counts"] = {split: manifest["counts"][split]["patients"] for split in ("train", "val", "test")}
    started = time.time()
    run = out / f"run-{name}"
    if not (run / "summary.json").exists():
        train_experiment(demo_config(TASK, preset), dataset, run, runtime=runtime_lib.setup("auto", "auto", "auto"),
                         quiet=True, log_every=50)
    figures["train_s"] = round(time.time() - started, 1)
    selection = json.loads((run / "summary.json").read_text())
    curve = selection["validation_curve"]
    best = max(curve, key=lambda point: point["ssim"])
    figures["validation"] = {"best_step": best["step"], "ssim": best["ssim"], "psnr": best["psnr"],
                             "last_ssim": curve[-1]["ssim"], "curve_ssim": [round(p["ssim"], 4) for p in curve]}
    model = load_model(run, checkpoint="best")
    for protocol in ("synthrad2023", "paper"):
        summary = evaluate_volumes(scored, grid, protocol, model=model, fitted=([], [])).summary()
        figures[f"held_out_{protocol}"] = {key: value["mean"] for key, value in summary["model"].items() if value}
    figures["load_after"] = load()
    print(name, json.dumps(figures), flush=True)
    return figures


def main(out: Path, steps: int | None) -> dict:
    preset = dataclasses.replace(demo_preset(TASK), select_by="ssim", patients=len(SPLITS),
                                 **({"steps": steps} if steps else {}))
    grid = demo_task(TASK, preset)
    started = time.time()
    moved = out / "misaligned" / "pairs.csv"
    if not moved.exists():
        write_task_pairs(grid, out / "misaligned", preset.image_size, patients=preset.patients, seed=preset.seed,
                         misalign=MISALIGN)
    aligned = out / "aligned" / "pairs.csv"
    if not aligned.exists():
        write_task_pairs(grid, out / "aligned", preset.image_size, patients=preset.patients, seed=preset.seed)
    scored = read_evaluation_csv(aligned_test_csv(aligned))
    pairs = with_splits(moved)
    results = {"task": TASK, "misalign": MISALIGN, "steps": preset.steps, "splits": SPLITS,
               "cpus": os.cpu_count()}
    for name, register in (("none", "none"), ("rigid", "rigid")):
        results[name] = run_one(out, name, pairs, register, preset, grid, scored)
    results["wall_s"] = round(time.time() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"done in {results['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True)
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
