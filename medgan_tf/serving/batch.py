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
from pathlib import Path
from typing import Any, Callable

from medgan_tf.errors import UserError
from medgan_tf.serving.channels import check_extra_columns, empty_extra_cells, sources_text


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """One CSV row: its line number in the file, the input, where its output goes, its extra
    sources (source_2, … in order; None for an empty cell) and its --like series (or None)."""

    line: int
    input: Path
    output: Path
    extra_inputs: tuple[Path | None, ...] = ()
    like: Path | None = None


@dataclasses.dataclass
class BatchResult:
    written: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  # (input, one-line reason)


def read_inputs_csv(csv_path: str | Path, output_dir: str | Path, output_format: str) -> list[BatchItem]:
    """The rows of `csv_path` as BatchItems with outputs under `output_dir` (see the module doc).

    Raises UserError for a missing or headerless CSV, one without an `input`/`source` column, an
    empty input cell, extra source columns with a gap, or two rows writing the same output.
    """
    from medgan_tf.data.io import output_name
    from medgan_tf.data.pairs import extra_source_columns, read_extra_sources

    csv_path, output_dir = Path(csv_path), Path(output_dir)
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
        source = _resolve(csv_path.parent, row[column])
        output = Path(row["output"]) if row.get("output") else Path(output_name(row.get("patient_id"), source, output_format))
        output = output if output.is_absolute() else output_dir / output
        if output in seen:
            raise UserError(f"--inputs {csv_path}: lines {seen[output]} and {line} both write {output}; "
                            "give them different patient_id or output values")
        seen[output] = line
        extra = read_extra_sources(csv_path, str(csv_path.parent), row, columns)
        like = _resolve(csv_path.parent, row["like"]) if row.get("like") else None
        items.append(BatchItem(line, source, output, tuple(Path(path) if path else None for path in extra), like))
    return items


def check_sources(csv_path: str | Path, items: list[BatchItem], extra_modalities: tuple[str, ...]) -> None:
    """UserError unless the CSV's extra source columns are the model's (`extra_modalities`:
    source_2, … of its training data); see `channels.check_extra_columns`."""
    given = len(items[0].extra_inputs) if items else len(extra_modalities)
    check_extra_columns(f"--inputs {csv_path}", given, extra_modalities)


def _extra_inputs(item: BatchItem, extra_modalities: tuple[str, ...]) -> list[Path]:
    """The row's extra source paths; UserError naming the line and the empty column(s)."""
    empty = empty_extra_cells(item.extra_inputs)
    if empty:
        raise UserError(f"line {item.line}: empty {', '.join(empty)} cell; this model takes "
                        f"{sources_text(extra_modalities)}")
    return [path for path in item.extra_inputs if path is not None]


def uncertainty_name(output: Path) -> Path:
    """Where the uncertainty of `output` goes: `x.nii.gz` → `x_uncertainty.nii.gz`, a DICOM series
    folder `x` → `x_uncertainty`."""
    from medgan_tf.data.io import formats

    suffix = next((s for f in formats() for s in f.suffixes if s and output.name.endswith(s)), "")
    return output.with_name(f"{output.name[: len(output.name) - len(suffix)]}_uncertainty{suffix}")


def _resolve(folder: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


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
            extra_inputs = _extra_inputs(item, extra_modalities)
            translate_file(model, item.input, item.output, output_format=output_format, extra_inputs=extra_inputs,
                           like=item.like, uncertainty_path=uncertainty_name(item.output) if spread else None,
                           **options)
        except UserError as error:
            reason = str(error)
        except Exception as error:  # noqa: BLE001 — one broken volume must not stop the others
            reason = f"{type(error).__name__}: {error}"
        else:
            result.written.append(item.output)
            echo(f"[{number}/{len(items)}] wrote {item.output}")
            continue
        reason = " ".join(reason.split())
        result.failed.append((item.input, reason))
        echo(f"[{number}/{len(items)}] FAILED {item.input}: {reason}")
    return result
