"""List the translation tasks medgan-tf knows, or print one as a TOML file to start a task of your own.

Each line: the name (what `--task` takes), source → target modality, the model grid (voxel size
in mm and slice size), the default evaluation protocol of `evaluate --pairs`, a description, and
"built-in data" for the tasks with a synthetic phantom (`medgan-tf synth`, `train` without --data).

`--show NAME|FILE.toml` prints the task's complete TOML declaration (every key, normalizations
spelled out); edit it (a new name, other modalities, grid or windows) and give the file wherever
`--task` is taken: convert, train, summary, evaluate.

Examples:
  medgan-tf tasks
  medgan-tf tasks --show NAME > my_task.toml        # a listed task; edit name, source, target, spacing_mm, …
  medgan-tf tasks --show my_task.toml               # check it: the task as medgan-tf reads it
  medgan-tf convert --pairs pairs.csv --task my_task.toml --out data/my_task
"""

from __future__ import annotations

import argparse

HELP = "list the built-in translation tasks, or print one (or a task file) as TOML"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--show", metavar="NAME|FILE.toml",
                        help="print the complete TOML declaration of a registered task or a task file (read back "
                             "by --task FILE.toml)")


def run(args: argparse.Namespace) -> int:
    from medgan_tf import tasks

    if args.show is not None:
        print(tasks.task_to_toml(tasks.get(args.show)), end="")
        return 0
    for line in listing():
        print(line)
    return 0


def listing() -> list[str]:
    """One aligned line per registered task, and a closing hint."""
    from medgan_tf import tasks

    rows = []
    for name, task in tasks.TASKS.items():
        data = task.data
        pair = f"{data.source_modality}{''.join('+' + m for m in data.extra_source_modalities)} → {data.target_modality}"
        grid = f"{'×'.join(f'{v:g}' for v in data.spacing_mm)} mm, {data.image_size}²"
        note = "built-in data" if task.phantom else ""
        rows.append((name, pair, grid, task.protocol, note, task.description))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5] for row in rows]
    lines.append("")
    lines.append("`medgan-tf tasks --show NAME > my_task.toml` prints one to edit; `--task my_task.toml` then uses it.")
    return lines
