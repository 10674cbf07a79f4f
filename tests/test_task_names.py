"""Tasks are data: outside the task registry (`medgan_tf/tasks.py`) and the phantoms that make
data for the built-in tasks, no source file names a built-in task — no code path, help text or
docstring assumes one, so a task of your own (a registry entry or a TOML file) is a peer of them."""

from __future__ import annotations

import re
from pathlib import Path

from medgan_tf import tasks

REPO = Path(__file__).resolve().parents[1]
ALLOWED = (
    "medgan_tf/tasks.py",  # the registry: the built-in tasks are declared here
    "medgan_tf/data/phantoms/",  # the phantoms of the built-in tasks
    "medgan_tf/data/synthetic.py",
)


def test_no_source_file_outside_the_registry_names_a_built_in_task():
    names = tasks.TASKS.names()
    assert len(names) >= 6
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    found = []
    for package in ("medgan_tf", "pipelines"):
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith(ALLOWED):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                match = pattern.search(line)
                if match:
                    found.append(f"{relative}:{number}: {match.group(0)}: {line.strip()}")
    assert not found, "built-in task names outside medgan_tf/tasks.py and the phantoms:\n" + "\n".join(found)
