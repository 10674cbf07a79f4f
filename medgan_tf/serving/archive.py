"""A whole archive on Apache Beam: `translate --inputs CSV --output-dir DIR --runner R`.

The rows of the inputs CSV (`medgan_tf.serving.batch`) go through labelled steps:

  ReadRows → Prepare (stage each row's volumes from wherever Beam reads them, read, the one
  preparation path `medgan_tf.data.preparation.prepare`, the volume's S×S tiles keyed by the row's
  plan) → Translate (RunInference with `model_handler.SliceModelHandler`: the model loaded once per
  worker process, the tiles in forward passes of --batch-size) → RestoreAndWrite (tiles stitched,
  `restore`, written through the format table; on an object store uploaded under a temporary name
  and renamed). Each step that ends a row (Prepare for a row it cannot read, RestoreAndWrite for
  the others) writes the row's outcome as one small file beside the outputs.

A volume stays whole from Prepare to RestoreAndWrite, so a runner fuses the three into one step:
no volume or tile crosses a shuffle and no step waits for the whole cohort (regrouping the tiles
by volume through the runner's shuffle, and collecting the outcomes with WriteToText after it,
took 13 of the 35 seconds of a 16-volume run on two workers), and the volumes spread over the
workers as the rows do.

Every row ends in one outcome: written, failed (its reason, as the local loop gives it) or skipped
(`--skip-existing`: its output was complete). The driver reads the outcomes back and writes the
report CSV (`batch.REPORT_COLUMNS`; default DIR/translate-report.csv) last. Outputs are written
atomically and keyed by row, so a bundle the runner retries replaces an output with the same
complete one: nothing partial, nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from pipelines import filesystems
from pipelines.runners import beam, check_beam_args, run_pipeline
from medgan_tf.errors import UserError
from medgan_tf.serving import batch

REPORT_NAME = "translate-report.csv"


@dataclasses.dataclass(frozen=True)
class ArchiveOptions:
    """One archive translation: the inputs CSV and output folder (local, or any URL Beam reads and
    writes), the model (a folder every worker sees), the output format key, the Beam runner and
    local worker processes, translate's batch size, tile overlap and precision, whether complete
    outputs are skipped, where the report goes (None: DIR/translate-report.csv), and TensorFlow's
    threads per worker process (None: with --num-workers N, this machine's cores ÷ N; else all)."""

    inputs: str
    output_dir: str
    model: str
    output_format: str = "nifti"
    runner: str = "DirectRunner"
    num_workers: int | None = None
    batch_size: int = 8
    tile_overlap: float = 0.25
    precision: str = "export"
    skip_existing: bool = False
    report: str | None = None
    quiet: bool = False
    threads_per_worker: int | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """What every worker needs, picklable: the model's path, config and descriptions and the options."""

    model_path: str
    config: Any  # ExperimentConfig
    descriptions: tuple[str, str]
    output_format: str
    batch_size: int
    tile_overlap: float
    quiet: bool
    threads: int | None = None  # TensorFlow threads per worker process (local worker processes share the cores)


# --------------------------------------------------------------------------- the Beam steps


class PrepareFn(beam.DoFn):
    """A row → (its plan: what RestoreAndWrite needs, its tiles (N, S, S, C_in) float32); a row
    that cannot be read or prepared ends here: its outcome `failed` is recorded (`outcomes`)."""

    def __init__(self, job: Job, outcomes: str | None = None):
        self._job, self._outcomes = job, outcomes

    def process(self, row: dict[str, Any]):
        from medgan_tf.serving.translation import grid_tiles, prepare_input

        job, item = self._job, batch.BatchItem(**row)
        try:
            volume, extra_volumes, like_volume = _read_row(item, job.config)
            prepared = prepare_input(job.config, volume, extra_volumes)
            tiles, positions = grid_tiles(prepared.inputs(), int(job.config.data.image_size), job.tile_overlap)
        except Exception as error:  # noqa: BLE001 — one broken volume must not stop the others
            record_outcome(self._outcomes, item, "failed", batch.failure_reason(error))
            return
        yield {"item": row, "prepared": prepared, "positions": positions, "like": like_volume, "tiles": len(tiles)}, tiles


def _read_row(item: batch.BatchItem, config: Any) -> tuple[Any, list[Any], Any]:
    """(input volume, extra volumes, --like volume or None) of a row, each staged locally from
    wherever it is (`pipelines.filesystems.staged`) for the time of reading."""
    from medgan_tf.data import io
    from medgan_tf.data.rejections import PairRejected
    from medgan_tf.serving.translation import like_series

    def read(path: Any, what: str, hint: str | None, reader: Any = None) -> Any:
        try:
            with filesystems.staged(str(path), what) as local:
                try:
                    return reader(local) if reader else io.read_input(what, local, hint)
                except UserError as error:  # name the path the CSV gave, not the staged copy
                    raise UserError(str(error).replace(str(local), str(path))) from None
        except PairRejected as error:
            raise UserError(error.detail or error.reason) from None

    data = config.data
    extra_paths = batch.extra_inputs_of(item, tuple(data.extra_source_modalities))
    volume = read(item.input, "input", data.source_modality)
    extra_volumes = [read(path, "extra input", hint) for path, hint in zip(extra_paths, data.extra_source_modalities)]
    like_volume = None
    if item.like is not None:
        like_volume = read(item.like, "--like series", None, lambda local: like_series(local, volume))
    return volume, extra_volumes, like_volume


class RestoreAndWriteFn(beam.DoFn):
    """(plan, RunInference's result for its tiles: inference (N, S, S, 1)) → the row's output
    written, and its outcome (JSON) recorded (`outcomes`) and yielded."""

    def __init__(self, job: Job, outcomes: str | None = None):
        self._job, self._outcomes = job, outcomes

    def process(self, element: tuple[dict[str, Any], Any]):
        plan, result = element
        item = batch.BatchItem(**plan["item"])
        try:
            write_row(self._job, plan, result.inference)
        except Exception as error:  # noqa: BLE001
            reason = batch.failure_reason(error)
            if not self._job.quiet:
                print(f"FAILED {item.input}: {reason}", flush=True)
            yield record_outcome(self._outcomes, item, "failed", reason)
            return
        if not self._job.quiet:
            print(f"wrote {item.output}", flush=True)
        yield record_outcome(self._outcomes, item, "written")


def write_row(job: Job, plan: dict[str, Any], output: Any) -> None:
    """Stitch, restore and write one row (`plan` from PrepareFn, `output` the model's (N, S, S, 1)
    for its N tiles)."""
    from medgan_tf.data import io
    from medgan_tf.serving.translation import check_outputs, restore_output, stitch_grid, write_translation

    prepared, positions = plan["prepared"], plan["positions"]
    if len(output) != plan["tiles"]:
        raise UserError(f"{plan['tiles']} tiles went to the model, {len(output)} came back; nothing was written")
    grid = stitch_grid(check_outputs(output), positions, prepared.grid_shape[:2], job.tile_overlap)
    translation = restore_output(job.config, prepared, grid, len(positions))
    output = str(plan["item"]["output"])
    if filesystems.is_local(output):
        volume_format = io.output_format(output, job.output_format)
        write_translation(translation.volume, prepared.source, plan["like"], output, volume_format, job.descriptions)
        return
    with tempfile.TemporaryDirectory(prefix="medgan-output-") as folder:
        local = Path(folder) / output.rstrip("/").rsplit("/", 1)[-1]
        volume_format = io.output_format(local, job.output_format)
        write_translation(translation.volume, prepared.source, plan["like"], local, volume_format, job.descriptions)
        filesystems.upload(local, output)


def record_outcome(outcomes: str | None, item: batch.BatchItem, outcome: str, reason: str = "") -> str:
    """The row's outcome as JSON, written (when `outcomes` is a prefix) to `<outcomes>-<line>.jsonl`
    atomically on any filesystem: a retried bundle rewrites the same file with the same line."""
    text = json.dumps({"line": item.line, "outcome": outcome, "reason": reason})
    if outcomes is not None:
        _write_text(f"{outcomes}-{item.line}.jsonl", text + "\n")
    return text


def build_pipeline(pipeline: beam.Pipeline, items: list[batch.BatchItem], job: Job, outcomes_prefix: str,
                   precision: str = "export") -> None:
    """Labelled steps from the rows `items` to their outputs and one JSON outcome per row at
    `<outcomes_prefix>-<line>.jsonl` (any filesystem Beam writes)."""
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    from medgan_tf.serving.model_handler import SliceModelHandler

    rows = [{field.name: getattr(item, field.name) for field in dataclasses.fields(item)} for item in items]
    handler = SliceModelHandler(job.model_path, precision, max_elements=1, threads=job.threads, batch_size=job.batch_size)
    (
        pipeline
        | "ReadRows" >> beam.Create(rows, reshuffle=True)
        | "Prepare" >> beam.ParDo(PrepareFn(job, outcomes_prefix))
        | "Translate" >> RunInference(KeyedModelHandler(handler))  # keyed by the plan: one volume per call
        | "RestoreAndWrite" >> beam.ParDo(RestoreAndWriteFn(job, outcomes_prefix))
    )


# --------------------------------------------------------------------------- the driver


def translate_archive(options: ArchiveOptions, beam_args: Sequence[str] = (), echo: Any = print) -> int:
    """Translate every row of `options.inputs` on `options.runner`; returns the exit status: 0 when
    every row was written (or skipped), 1 when any failed (the others are written). `beam_args` are
    Beam pipeline options as command-line words (e.g. "--job_endpoint=embed").

    Raises UserError for a bad option or Beam flag, an unreadable CSV or model, a DICOM output on an
    object store, or a job service that does not answer; nothing is written then.
    """
    from medgan_tf.serving.loading import model_info
    from medgan_tf.serving.outputs import model_description
    from medgan_tf.serving.translation import check_tile_overlap

    check_beam_args(beam_args, _own_arguments, "translate")
    if logging.getLogger("apache_beam").level == logging.NOTSET:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if options.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; received {options.batch_size}")
    tile_overlap = check_tile_overlap(options.tile_overlap)
    items = _read_items(options)
    _check_remote_format(options)
    model = model_info(options.model, precision=options.precision)  # the workers load the network
    batch.check_sources(options.inputs, items, tuple(model.config.data.extra_source_modalities))
    todo, skipped = batch.split_complete(items, filesystems.exists) if options.skip_existing else (items, [])
    job = Job(str(options.model), model.config, model_description(model), options.output_format, options.batch_size,
              tile_overlap, options.quiet, options.threads_per_worker or _threads_per_worker(options.num_workers))
    echo(f"translating {len(todo)} of {len(items)} volumes on {options.runner}"
         + (f" ({len(skipped)} complete already, skipped)" if skipped else ""))
    outcomes = _run(options, beam_args, todo, job) if todo else []
    failed = {int(o["line"]): o["reason"] for o in outcomes if o["outcome"] == "failed"}
    done = {int(o["line"]) for o in outcomes}
    failed.update({item.line: "no outcome came back from the pipeline" for item in todo if item.line not in done})
    report = options.report or _join(options.output_dir, REPORT_NAME)
    _write_text(report, batch.report_text(items, failed, skipped))
    echo(f"translated {len(todo) - len(failed)} of {len(items)} volumes into {options.output_dir}"
         + (f", {len(skipped)} skipped" if skipped else "") + f"; report {report}")
    for item in items:
        if item.line in failed:
            print(f"error: {item.input}: {failed[item.line]}", file=sys.stderr)
    return 1 if failed else 0


def _run(options: ArchiveOptions, beam_args: Sequence[str], items: list[batch.BatchItem], job: Job) -> list[dict]:
    """Run the pipeline over `items`; their outcomes, read back from a work folder in the output
    folder (the one place every worker of any runner can write), which is removed after."""
    work = _join(options.output_dir, f".translate-work-{os.getpid()}-{secrets.token_hex(4)}")
    summaries = filesystems.RemoteOutput(work)
    try:
        run_pipeline(options, beam_args, lambda pipeline: build_pipeline(
            pipeline, items, job, summaries.join("_summaries", "outcomes"), options.precision))
        return summaries.read_jsonl("outcomes")
    finally:
        if filesystems.is_local(work):
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            summaries.discard()


def _read_items(options: ArchiveOptions) -> list[batch.BatchItem]:
    """The CSV's rows (`batch.read_inputs_csv`), the CSV copied from an object store first."""
    from medgan_tf.data.rejections import PairRejected

    if filesystems.is_local(options.inputs):
        return batch.read_inputs_csv(options.inputs, options.output_dir, options.output_format)
    try:
        with filesystems.staged(options.inputs, "--inputs CSV") as local:
            return batch.read_inputs_csv(local, options.output_dir, options.output_format,
                                         base=options.inputs.rsplit("/", 1)[0])
    except PairRejected as error:
        raise UserError(f"cannot read --inputs {options.inputs}: {error.reason}") from None


def _check_remote_format(options: ArchiveOptions) -> None:
    from medgan_tf.data.io import formats

    volume_format = next(f for f in formats() if f.key == options.output_format)
    if volume_format.folder and not filesystems.is_local(options.output_dir):
        raise UserError(f"--output-dir {options.output_dir}: a {volume_format.name} output is a folder of files, which an "
                        "object store cannot publish at once; write it to a local or mounted folder, or use "
                        "--output-format nifti")


def _threads_per_worker(num_workers: int | None) -> int | None:
    """With N local worker processes (--num-workers), each gets its share of this machine's cores."""
    return max(1, (os.cpu_count() or 1) // num_workers) if num_workers else None


def _own_arguments(parser: Any) -> None:
    """The archive options as flags, for the nearest-flag hint of an unknown option."""
    for field in dataclasses.fields(ArchiveOptions):
        parser.add_argument("--" + field.name.replace("_", "-"))


def _join(folder: str, name: str) -> str:
    return f"{str(folder).rstrip('/')}/{name}"


def _write_text(path: str, text: str) -> None:
    """`text` at `path` atomically (local: temporary name and rename; any other scheme: upload)."""
    from medgan_tf import files

    if filesystems.is_local(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        files.write_text_atomic(path, text)
        return
    with tempfile.TemporaryDirectory(prefix="medgan-report-") as folder:
        local = Path(folder) / "report.csv"
        local.write_text(text)
        filesystems.upload(local, path)
