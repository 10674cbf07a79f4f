"""Many volumes with one model load: `translate --inputs CSV --output-dir DIR`.

The CSV has a header row and one volume per row:

  input (or source)  NIfTI file or DICOM series folder; required. `source` lets the pairs CSV of
                     `medgan-tf convert`/`synth` be used as it is (its `target` column is ignored).
  patient_id         optional; names the output (`<patient_id>.nii.gz`, or folder `<patient_id>/`
                     for DICOM). Without it, the input's own name is used.
  output             optional; the output's path, overriding the name above.
  source_2, source_3, …  a multi-source model's extra source volumes, in training order (the
                     converter's pairs CSV columns, read by `medgan_tf.data.pairs`); required
                     exactly when the model takes them, and then in every row.
  like               optional; for a NIfTI input, a DICOM series of the same patient whose
                     study a DICOM output joins (`translate --like`).

With `--tta flips|flips+shifts`, or an ensemble export, each row's uncertainty (standard deviation)
is written beside its output: `<name>_uncertainty.nii.gz`, or the DICOM series `<name>_uncertainty/`.

Relative input paths are relative to the CSV's folder, relative outputs to DIR. Each row is
translated and written (atomically) on its own: a failing row is reported with its path and reason,
the rest continue, and the result lists both. A row with an empty extra source cell fails with its
line number; extra source columns given to a model that takes other sources stop the job before any
row runs.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

from medgan_tf.errors import UserError
from medgan_tf.serving.channels import check_extra_columns, empty_extra_cells, sources_text


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """One CSV row: its line number in the file, the input, where its output goes, its extra
    sources (source_2, … in order; None for an empty cell) and its --like series (or None). A
    path on an object store is a URL string (`gs://…`)."""

    line: int
    input: Path | str
    output: Path | str
    extra_inputs: tuple[Path | str | None, ...] = ()
    like: Path | str | None = None


@dataclasses.dataclass
class BatchResult:
    written: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  # (input, one-line reason)
    failed_lines: dict[int, str] = dataclasses.field(default_factory=dict)  # CSV line → the same reason


def read_inputs_csv(csv_path: str | Path, output_dir: str | Path, output_format: str,
                    base: str | None = None) -> list[BatchItem]:
    """The rows of `csv_path` as BatchItems with outputs under `output_dir` (see the module doc).
    `base` is the folder relative inputs are relative to (default: the CSV's; a URL such as
    `gs://bucket/cohort` for a CSV copied from an object store); inputs and an `output_dir` with a
    scheme (`gs://…`) stay strings.

    Raises UserError for a missing or headerless CSV, one without an `input`/`source` column, an
    empty input cell, extra source columns with a gap, or two rows writing the same output.
    """
    from medgan_tf.data.io import output_name
    from medgan_tf.data.pairs import extra_source_columns, read_extra_sources

    csv_path = Path(csv_path)
    output_dir = str(output_dir) if _is_url(str(output_dir)) else Path(output_dir)
    base = base or str(csv_path.parent)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = [(reader.line_num, row) for row in reader]  # line numbers as an editor shows them
            columns = [str(name).strip() for name in reader.fieldnames or []]
    except OSError as error:
        raise UserError(f"cannot read --inputs {csv_path}: {error.strerror or error}") from None
    column = "input" if "input" in columns else "source" if "source" in columns else None
    if column is None:
        raise UserError(f"--inputs {csv_path} has columns {columns}; expected an 'input' (or 'source') column, "
                        "optionally 'patient_id' and 'output'")
    extra_source_columns(csv_path, columns)  # a gap in source_2, source_3, … is refused before any row
    items, seen = [], {}
    for line, row in rows:
        row = {str(k).strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get(column):
            raise UserError(f"--inputs {csv_path} line {line}: empty {column!r} cell")
        source = _resolve(base, row[column])
        output = _output_path(output_dir, row.get("output") or output_name(row.get("patient_id"), source, output_format))
        if output in seen:
            raise UserError(f"--inputs {csv_path}: lines {seen[output]} and {line} both write {output}; "
                            "give them different patient_id or output values")
        seen[output] = line
        extra = read_extra_sources(csv_path, base, row, columns)
        like = _resolve(base, row["like"]) if row.get("like") else None
        items.append(BatchItem(line, source, output, tuple(_as_path(path) if path else None for path in extra), like))
    return items


def check_sources(csv_path: str | Path, items: list[BatchItem], extra_modalities: tuple[str, ...]) -> None:
    """UserError unless the CSV's extra source columns are the model's (`extra_modalities`:
    source_2, … of its training data); see `channels.check_extra_columns`."""
    given = len(items[0].extra_inputs) if items else len(extra_modalities)
    check_extra_columns(f"--inputs {csv_path}", given, extra_modalities)


def failure_reason(error: BaseException) -> str:
    """One line saying why a row failed: a UserError's message, else the error's type and text."""
    reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    return " ".join(reason.split())


def extra_inputs_of(item: BatchItem, extra_modalities: tuple[str, ...]) -> list[Path | str]:
    """The row's extra source paths; UserError naming the line and the empty column(s)."""
    empty = empty_extra_cells(item.extra_inputs)
    if empty:
        raise UserError(f"line {item.line}: empty {', '.join(empty)} cell; this model takes "
                        f"{sources_text(extra_modalities)}")
    return [path for path in item.extra_inputs if path is not None]


def uncertainty_name(output: Path | str) -> Path | str:
    """Where the uncertainty of `output` goes: `x.nii.gz` → `x_uncertainty.nii.gz`, a DICOM series
    folder `x` → `x_uncertainty` (an object store's URL alike)."""
    from medgan_tf.data.io import formats

    name = output.name if isinstance(output, Path) else output.rstrip("/").rsplit("/", 1)[-1]
    suffix = next((s for f in formats() for s in f.suffixes if s and name.endswith(s)), "")
    renamed = f"{name[: len(name) - len(suffix)]}_uncertainty{suffix}"
    return output.with_name(renamed) if isinstance(output, Path) else f"{output.rstrip('/')[: -len(name)]}{renamed}"


def _is_url(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def _as_path(text: str) -> Path | str:
    """A local path as a Path; a URL (`gs://…`) as it is (a Path would fold its `//`)."""
    return text if _is_url(text) else Path(text)


def _resolve(base: str, text: str) -> Path | str:
    if _is_url(text) or _is_url(base):
        from medgan_tf.data.pairs import resolve_input

        return resolve_input(base, text)
    path = Path(text).expanduser()
    return path if path.is_absolute() else Path(base) / path


def _output_path(output_dir: Path | str, name: str) -> Path | str:
    if _is_url(name) or Path(name).is_absolute():
        return _as_path(name)
    if isinstance(output_dir, str):
        return f"{output_dir.rstrip('/')}/{name}"
    return output_dir / name


def translate_many(
    model: Any,
    items: list[BatchItem],
    *,
    output_format: str,
    echo: Callable[[str], None] = print,
    **options: Any,
) -> BatchResult:
    """Translate every item with the one loaded `model` (`translation.translate_file(model,
    input, output, output_format=…, extra_inputs=…, **options)` per row). Says "[n/N] input →
    output" before each row and names the input and reason of a row that fails (a UserError, e.g.
    an empty extra source cell, or an unexpected error); the loop goes on."""
    from medgan_tf.serving.translation import translate_file

    extra_modalities = tuple(model.config.data.extra_source_modalities)
    spread = options.get("tta", "none") != "none" or bool(getattr(model, "has_uncertainty", False))
    result = BatchResult()
    for number, item in enumerate(items, start=1):
        echo(f"[{number}/{len(items)}] {item.input} → {item.output}")
        try:
            extra_inputs = extra_inputs_of(item, extra_modalities)
            translate_file(model, item.input, item.output, output_format=output_format, extra_inputs=extra_inputs,
                           like=item.like, uncertainty_path=uncertainty_name(item.output) if spread else None,
                           **options)
        except Exception as error:  # noqa: BLE001 — one broken volume must not stop the others
            reason = failure_reason(error)
        else:
            result.written.append(item.output)
            echo(f"[{number}/{len(items)}] wrote {item.output}")
            continue
        result.failed.append((item.input, reason))
        result.failed_lines[item.line] = reason
        echo(f"[{number}/{len(items)}] FAILED {item.input}: {reason}")
    return result


# --------------------------------------------------------------------------- re-runs and the report

REPORT_COLUMNS = ("line", "input", "output", "outcome", "reason")


def split_complete(items: list[BatchItem], is_complete: Callable[[Path | str], bool]) -> tuple[list[BatchItem], list[BatchItem]]:
    """(rows still to translate, rows whose output is complete) for `--skip-existing`: outputs are
    written atomically, so one that exists is whole (`is_complete(output)`)."""
    todo = [item for item in items if not is_complete(item.output)]
    return todo, [item for item in items if item not in todo]


def output_exists(path: Path | str) -> bool:
    """A local output that exists: a file, or a folder with something in it."""
    path = Path(path)
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def report_text(items: list[BatchItem], failed: dict[int, str], skipped: list[BatchItem] = ()) -> str:
    """The report CSV (REPORT_COLUMNS) of `items`, in CSV order: outcome `written`, `failed` (with
    its reason; `failed` maps a row's line to it) or `skipped` (its output was complete before)."""
    import io

    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    skipped_lines = {item.line for item in skipped}
    for item in sorted(items, key=lambda item: item.line):
        outcome = "skipped" if item.line in skipped_lines else "failed" if item.line in failed else "written"
        reason = "the output was complete already" if outcome == "skipped" else failed.get(item.line, "")
        writer.writerow((item.line, item.input, item.output, outcome, reason))
    return handle.getvalue()
