"""`evaluate --pairs CSV --model M --runner R`: the rows' sources translated as a whole archive on a
Beam runner first (`medgan_tf.serving.archive`, the model loaded once per worker), then scored as
`evaluate` scores them, row by row, with a row whose translation failed named with its reason."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Sequence

from medgan_tf.evaluation.cases import Row


def translate_rows(rows: Sequence[Row], model: str | Path, work_dir: str | Path, *, runner: str,
                   num_workers: int | None = None, beam_args: Sequence[str] = (), batch_size: int = 8,
                   tile_overlap: float = 0.25, precision: str = "export",
                   progress: Callable[[str], None] | None = None) -> dict[int, Any]:
    """{CSV line: the translated output's path, or why it failed} for every row with a source, run
    through `serving.archive.translate_archive` on `runner` into `work_dir` (a local folder)."""
    from medgan_tf.serving.archive import ArchiveOptions, translate_archive

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with_source = [row for row in rows if row.paths["source"] is not None]
    extra_columns = [f"source_{index}" for index in range(2, 2 + max((len(r.extra_sources) for r in rows), default=0))]
    inputs = work_dir / "inputs.csv"
    with open(inputs, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "output", *extra_columns])
        for row in with_source:
            extras = [str(path) if path is not None else "" for path in row.extra_sources]
            writer.writerow([str(row.paths["source"]), f"line-{row.line}.nii.gz", *extras])
    options = ArchiveOptions(inputs=str(inputs), output_dir=str(work_dir / "translated"), model=str(model),
                             runner=runner, num_workers=num_workers, batch_size=batch_size, tile_overlap=tile_overlap,
                             precision=precision, report=str(work_dir / "report.csv"), quiet=True)
    translate_archive(options, beam_args, echo=progress or (lambda message: None))
    with open(work_dir / "report.csv", newline="", encoding="utf-8") as handle:
        outcomes = {int(entry["line"]): entry for entry in csv.DictReader(handle)}
    translated: dict[int, Any] = {}
    for index, row in enumerate(with_source, start=2):  # line 1 of inputs.csv is its header
        entry = outcomes.get(index, {"outcome": "failed", "reason": "its source was not translated"})
        translated[row.line] = Path(entry["output"]) if entry["outcome"] == "written" else entry["reason"]
    return translated
