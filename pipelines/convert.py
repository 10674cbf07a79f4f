"""Apache Beam pipeline: pairs CSV of DICOM/NIfTI volumes → sharded TFRecords + manifest.json.

    python -m pipelines.convert --pairs pairs.csv --task NAME|my_task.toml --out data/sct [--image-size 256]
        [--strict] [--salt SECRET] [--overwrite] [--runner DirectRunner] [--num-workers 2]
        [--register none|rigid|affine|deformable [--max-rotation DEG] [--max-translation MM]]
        [any other Beam pipeline option, e.g. --direct_running_mode=multi_threading]

From Python: `convert(ConvertOptions(pairs=..., task=..., out=..., image_size=...), beam_args=())`
returns the same exit status; `run(argv)` parses the command line into those two and calls it.

Steps: ReadPairs → Convert (`medgan_tf.data.pairs.convert_pair`: read both volumes, with --register
the target registered to the source (`medgan_tf.data.registration`; a registration not to be trusted
rejects the pair), target onto the source grid by world coordinates, resample to the task spacing, centre crop/pad to image_size,
normalize per task, axial slices → tf.train.Example; rejected pairs go to a tagged output) →
SplitByPatient (the split a CSV row names, else the hash split: `pipelines.settings`) →
Write{Train,Val,Test} (GZIP TFRecord shards; test only when asked for) and WriteVolumes/WriteRejected
summaries, from which the driver writes `manifest.json` last (`medgan_tf.data.manifest`). Inputs and
outputs go through Beam's FileSystems (`pipelines.filesystems`): local paths as below, an object
store's (`gs://`, `s3://`, ...) staged for the readers and written in place, manifest.json last.

The per-pair work, the pseudonyms and the manifest live in `medgan_tf.data`; this module is the
Beam shell around them.

Output layout (DIR):

    DIR/manifest.json                              counts, config, normalization, rejected pairs
    DIR/train/data-SSSSS-of-NNNNN.tfrecord.gz      schema: medgan_tf.data.schema
    DIR/val/data-SSSSS-of-NNNNN.tfrecord.gz
    DIR/test/data-SSSSS-of-NNNNN.tfrecord.gz       with --test-fraction > 0 or a CSV row naming test
    DIR/previews/<patient_key>-line<N>.png         with --preview: each pair before / after --register

One writer per output: the run holds `DIR.convert.lock` (PID and host) and works in its own
`DIR.partial-<pid>-<random>/`, renamed to DIR only when complete (`pipelines.output`), so an
interrupted run never leaves a directory that looks converted (readers require manifest.json),
two runs never mix, and `--overwrite` swaps old for new so that one complete dataset always
exists. A full disk or a denied write ends in one message, the partial folder removed. With
`--num-workers N` the worker processes are `pipelines.worker`, which exit when this process ends.

Privacy: records and manifest carry only `patient_key`, a salted pseudonym
(`medgan_tf.data.pseudonyms`); no header value (names, IDs, dates, UIDs) and no input path is
written. A rejection's reason in the manifest names the CSV line, the side and the problem (built
from exception types, never their messages, which may quote a path); the paths and details go to
stderr only.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

# Importing Beam logs notices about optional Google Cloud clients this pipeline does not use.
_root_level = logging.getLogger().level
logging.getLogger().setLevel(logging.ERROR)
try:
    import apache_beam as beam
finally:
    logging.getLogger().setLevel(_root_level)
from medgan_tf.config import DataConfig, to_dict
from medgan_tf.data.manifest import build_manifest, write_manifest
from medgan_tf.data.pairs import SPLITS, PairRejected, check_row, convert_pair, unexpected_reason
from medgan_tf.data.pseudonyms import pseudonym, resolve_salt
from medgan_tf.data.registration import RegistrationSettings, log_line
from medgan_tf.errors import UserError
from pipelines import filesystems, output, previews
from pipelines.runners import check_beam_args, run_pipeline
from pipelines.settings import converter_data_config, splits_of, with_windows, written_splits
from pipelines.options import ConvertOptions, add_arguments, options_from_namespace

REJECTED = "rejected"
VOLUMES = "volumes"


# --------------------------------------------------------------------------- the Beam step


class ConvertPairFn(beam.DoFn):
    """Beam step around `convert_pair`: main output (patient_key, record); tagged outputs
    `volumes` (JSON summary per converted pair) and `rejected` (JSON: row, patient_key, reason
    without paths, detail for stderr)."""

    def __init__(self, data_config: dict[str, Any], salt: bytes, allow_different_patients: bool = False,
                 registration: dict[str, Any] | None = None, preview_dir: str | None = None):
        self._data_config = data_config  # plain dict: picklable for any runner
        self._salt = salt
        self._allow_different_patients = allow_different_patients
        self._registration = registration  # `RegistrationSettings` fields, or None
        self._preview_dir = preview_dir  # where each pair's picture goes (`pipelines.previews`), or None

    def setup(self) -> None:
        from medgan_tf.config import from_dict

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self._config = from_dict(DataConfig, self._data_config)
        self._register = RegistrationSettings(**self._registration) if self._registration else None

    def process(self, row: dict[str, Any]):
        key = pseudonym(row["patient_id"], self._salt) if row["patient_id"] else ""
        try:
            if not key:
                raise PairRejected("empty patient_id")
            named_split = check_row(row)
            preview = previews.PreviewWriter(self._preview_dir, self._config, row["row"], key) if self._preview_dir else None
            with filesystems.staged_row(row) as local:
                records, summary = convert_pair(local["source"], local["target"], key, self._config, local["extra_sources"],
                                                **({"mask_path": local["mask"]} if local["mask"] else {}),
                                                allow_different_patients=self._allow_different_patients,
                                                **({"registration": self._register} if self._register else {}),
                                                **({"preview": preview} if preview else {}))
            summary["split_named"] = named_split
        except Exception as error:  # noqa: BLE001 — unexpected errors too: still one pair, one line
            rejected = error if isinstance(error, PairRejected) else PairRejected(unexpected_reason(error), f"{type(error).__name__}: {error}")
            item = {"row": row["row"], "patient_key": key, "reason": rejected.reason, "detail": rejected.detail}
            yield beam.pvalue.TaggedOutput(REJECTED, json.dumps(item))
            return
        yield beam.pvalue.TaggedOutput(VOLUMES, json.dumps(summary, sort_keys=True))
        for _, record in records:
            yield key, record


# --------------------------------------------------------------------------- the pipeline


def build_pipeline(
    pipeline: beam.Pipeline,
    rows: list[dict[str, Any]],
    data_config: DataConfig,
    salt: bytes,
    work_dir: Path | str,
    num_shards: int,
    allow_different_patients: bool = False,
    registration: RegistrationSettings | None = None,
    preview: bool = False,
) -> None:
    """Labelled steps from the CSV rows to shards and summary files under `work_dir` (a local
    folder or a folder on any filesystem Beam writes).

    The split is assigned after conversion, over the patients that converted (a side input),
    so rejected pairs cannot leave a split empty. The test split is written only when asked
    for (`test_fraction` > 0, or a CSV row names it). `allow_different_patients` and `registration`
    (when enabled) go to every pair (`convert_pair`); with `preview`, every pair whose volumes
    were read draws its picture into `work_dir`/previews/ (`pipelines.previews`).
    """
    from apache_beam.io.filesystem import CompressionTypes

    base = str(work_dir).rstrip("/")
    registered = dataclasses.asdict(registration) if registration is not None and registration.enabled else None
    converted = (
        pipeline
        | "ReadPairs" >> beam.Create(rows, reshuffle=True)
        | "Convert" >> beam.ParDo(ConvertPairFn(to_dict(data_config), salt, allow_different_patients, registered,
                                                f"{base}/{previews.FOLDER}" if preview else None))
        .with_outputs(REJECTED, VOLUMES, main="records")
    )
    splits = (
        converted[VOLUMES]
        | "PatientKeys" >> beam.Map(json.loads)
        | "AllPatients" >> beam.combiners.ToList()
        | "AssignSplits" >> beam.Map(splits_of, data_config)
    )
    by_split = (
        converted.records
        | "SplitByPatient"
        >> beam.Partition(lambda item, _, assignment: SPLITS.index(assignment[item[0]]), len(SPLITS), beam.pvalue.AsSingleton(splits))
    )
    for split, records in zip(SPLITS, by_split):
        if split not in written_splits(rows, data_config):
            continue
        shards = num_shards if split == "train" else max(1, num_shards // 2)
        (
            records
            | f"Drop{split.title()}Key" >> beam.Map(lambda item: item[1])
            | f"Write{split.title()}"
            >> beam.io.WriteToTFRecord(
                f"{base}/{split}/data",
                file_name_suffix=".tfrecord.gz",
                num_shards=shards,
                compression_type=CompressionTypes.GZIP,
            )
        )
    converted[VOLUMES] | "WriteVolumes" >> beam.io.WriteToText(f"{base}/_summaries/volumes", file_name_suffix=".jsonl")
    converted[REJECTED] | "WriteRejected" >> beam.io.WriteToText(f"{base}/_summaries/rejected", file_name_suffix=".jsonl")


def _read_jsonl(pattern: str) -> list[dict[str, Any]]:
    items = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as handle:
            items += [json.loads(line) for line in handle if line.strip()]
    return items


# --------------------------------------------------------------------------- the driver


def run(argv: Sequence[str] | None = None) -> int:
    """Convert a pairs CSV named on the command line (`argv`, default sys.argv[1:]); returns the
    exit status of `convert`. Bad or missing flags exit through argparse (status 2).

    Other options are passed to Beam as PipelineOptions; one Beam does not know either is an error.
    """
    parser = add_arguments(argparse.ArgumentParser(prog="python -m pipelines.convert", description=__doc__.split("\n")[0]))
    args, beam_args = parser.parse_known_args(argv)
    return convert(options_from_namespace(args), beam_args)


def convert(options: ConvertOptions, beam_args: Sequence[str] = ()) -> int:
    """Convert `options.pairs` into `options.out`; returns the exit status: 0 written, 1 no pair
    converted or (`options.strict`) a pair rejected, nothing written. `beam_args` are Beam
    pipeline options as command-line words (e.g. "--direct_running_mode=in_memory").

    Raises UserError for a bad option, an unreadable pairs CSV or an output it may not write.
    """
    started = time.monotonic()
    check_beam_args(beam_args)  # Beam drops what it does not know: a typo would silently convert with a default
    if logging.getLogger("apache_beam").level == logging.NOTSET:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)  # Beam's INFO is per-stage noise
    data_config = converter_data_config(options)  # options first: a bad one is named before any input is read
    rows = filesystems.read_pairs(options.pairs)
    data_config = with_windows(data_config, rows, options)
    salt, salt_source = resolve_salt(options.salt)
    if len(salt) < 16:
        logging.warning("the pseudonym salt has %d characters; a short salt lets patient IDs be guessed back", len(salt))
    if not filesystems.is_local(options.out):
        return _run_remote(options, beam_args, rows, data_config, salt, salt_source, started)
    out = Path(options.out).absolute()
    try:
        with output.exclusive_output(out):
            _check_target(out, options.overwrite)
            work_dir = output.new_work_dir(out)
            try:
                _convert(options, beam_args, rows, data_config, salt, work_dir, out)
                volumes = _read_jsonl(str(work_dir / "_summaries" / "volumes*"))
                rejected = _read_jsonl(str(work_dir / "_summaries" / "rejected*"))
                shutil.rmtree(work_dir / "_summaries")
                shards = {split: [p.name for p in (work_dir / split).glob("*.tfrecord.gz")] for split in SPLITS}

                def publish(manifest: dict[str, Any]) -> None:
                    # manifest.json last, then one swap of names: DIR never looks complete before it is.
                    write_manifest(work_dir, manifest)
                    output.publish(work_dir, out)

                return _finish(options, rows, data_config, salt_source, (volumes, rejected, shards), out, started, publish)
            finally:
                output.discard(work_dir)  # gone already when published
    except UserError:
        raise
    except Exception as error:
        failure = output.write_failure(error, out)
        if failure is None:
            raise
        logging.debug("the write that failed", exc_info=True)
        raise failure from None


def _convert(options: ConvertOptions, beam_args: Sequence[str], rows: list[dict[str, Any]], data_config: DataConfig,
             salt: bytes, work_dir: Path | str, out: Path | str) -> None:
    logging.info("converting %d pairs for task %s at %d² and %s mm → %s", len(rows), options.resolved_task().name, data_config.image_size,
                 "×".join(f"{v:g}" for v in data_config.spacing_mm), out)
    run_pipeline(options, beam_args, lambda pipeline: build_pipeline(
        pipeline, rows, data_config, salt, work_dir, options.num_shards or data_config.num_shards,
        options.allow_different_patients, options.registration(), options.preview))


def _run_remote(options: ConvertOptions, beam_args: Sequence[str], rows: list[dict[str, Any]], data_config: DataConfig,
                salt: bytes, salt_source: str, started: float) -> int:
    """Convert into a folder on an object store: written in place, manifest.json last."""
    target = filesystems.RemoteOutput(options.out)
    target.prepare(options.overwrite)
    published = False
    try:
        _convert(options, beam_args, rows, data_config, salt, target.out, target.out)
        volumes, rejected = target.read_jsonl("volumes"), target.read_jsonl("rejected")
        target.drop_summaries()
        shards = {split: target.shard_names(split) for split in SPLITS}

        def publish(manifest: dict[str, Any]) -> None:
            nonlocal published
            target.finish(manifest)
            published = True

        return _finish(options, rows, data_config, salt_source, (volumes, rejected, shards), target.out, started, publish)
    finally:
        if not published:
            target.discard()


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to replace it")


def _finish(options: ConvertOptions, rows: list[dict[str, Any]], data_config: DataConfig, salt_source: str,
            written: tuple[list, list, dict], out: Path | str, started: float, publish: Any) -> int:
    """From the pipeline's summaries (volumes, rejected, shard names per split) to the manifest,
    then `publish(manifest)`."""
    volumes = sorted(written[0], key=lambda v: v["patient_key"])
    rejected = sorted(written[1], key=lambda r: r["row"])
    splits = splits_of(volumes, data_config)  # as in the pipeline
    for summary in volumes:
        summary["split"] = splits[summary["patient_key"]]
        summary["split_from"] = "pairs CSV" if summary.pop("split_named", "") else "hash"
    rows_by_line = {row["row"]: row for row in rows}
    for item in rejected:
        row = rows_by_line[item["row"]]
        detail = item.pop("detail", "") or ""
        extra = f" [{detail}]" if detail and detail != item["reason"] else ""
        print(f"rejected pair (CSV line {item['row']}: {row['source']} | {row['target']}): {item['reason']}{extra}", file=sys.stderr)
        item["reason"] = _identity_free(item["reason"], row)

    for summary in volumes:
        if "registration" in summary:  # one line per pair: its pseudonym, never a path
            logging.info("registered pair %s: %s", summary["patient_key"][:12], log_line(summary["registration"]))
    shards = written[2]
    manifest = build_manifest(options.resolved_task().name, data_config, volumes, rejected, shards, salt_source, time.monotonic() - started)
    if options.register != "none":
        manifest["registration"] = dataclasses.asdict(options.registration())
    counts = manifest["counts"]
    if not volumes or (options.strict and rejected):
        why = "no pair converted" if not volumes else f"--strict and {len(rejected)} pair(s) rejected"
        print(f"error: {why}; no output written to {out}", file=sys.stderr)
        return 1
    for split in written_splits(rows, data_config):
        if counts[split]["slices"] == 0:
            logging.warning("the %s split is empty (%d patient(s) converted)", split, len(volumes))
    publish(manifest)
    logging.info(
        "wrote %d train / %d val / %d test slices (%d pairs, %d rejected) to %s",
        counts["train"]["slices"], counts["val"]["slices"], counts["test"]["slices"], len(volumes), len(rejected), out,
    )
    if options.preview:
        logging.info("a picture of each pair (rejected ones too): %s/%s/<patient_key>-line<N>.png", out, previews.FOLDER)
    return 0


def _identity_free(reason: str, row: dict[str, Any]) -> str:
    """`reason` for the manifest, withheld if it quotes the pair's paths, file names or patient ID
    (reasons are built without them; this is the last line of defence). A name that is a plain
    word ("truncated", "PET") is not checked: reasons use words."""
    quoted = [row["source"], row["target"], *row.get("extra_sources", ()), row["patient_id"]]
    quoted += [name for name in (Path(p).name for p in quoted[:-1] if p) if not name.isalpha()]
    if any(len(text) >= 4 and text in reason for text in quoted):
        return "reason withheld: it quoted the input's path or patient ID (see the converter's messages)"
    return reason


def main(argv: Sequence[str] | None = None) -> int:
    # force: importing Beam may already have configured the root logger (at WARNING).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", force=True)
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return run(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def terminate(signum: int, _frame: Any) -> None:
    """SIGTERM → SystemExit, so that the lock is released and the partial folder removed."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
