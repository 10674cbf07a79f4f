"""Apache Beam pipeline: pairs CSV of DICOM/NIfTI volumes → sharded TFRecords + manifest.json.

    python -m pipelines.convert --pairs pairs.csv --task pet_ct --out data/pet_ct [--image-size 256]
        [--strict] [--salt SECRET] [--overwrite] [--runner DirectRunner] [--num-workers 2]
        [any other Beam pipeline option, e.g. --direct_running_mode=multi_threading]

Steps (SPEC.md §3): ReadPairs → Convert (read both volumes, target onto the source grid by world
coordinates, resample to the task spacing, centre crop/pad to image_size, normalize per task,
axial slices → tf.train.Example; rejected pairs go to a tagged output) → SplitByPatient →
Write{Train,Val} (GZIP TFRecord shards) and WriteVolumes/WriteRejected summaries, from which the
driver writes `manifest.json` last.

Output layout (DIR):

    DIR/manifest.json                              counts, config, normalization, rejected pairs
    DIR/train/data-SSSSS-of-NNNNN.tfrecord.gz      schema: medgan_tf.data.schema
    DIR/val/data-SSSSS-of-NNNNN.tfrecord.gz

Atomicity: everything is written into `DIR.partial/` and renamed to DIR only when complete, so an
interrupted run never leaves a directory that looks converted (readers require manifest.json).

Privacy: records and manifest carry only `patient_key` = HMAC-SHA256(salt, patient_id) truncated
to 16 hex digits; no header value (names, IDs, dates, UIDs) and no input path is written. The salt
comes from --salt, else $MEDGAN_TF_SALT, else a random per-user secret created once in
$XDG_CONFIG_HOME/medgan-tf/pseudonym-salt (mode 600): stable keys across conversions by one user,
not reversible by anyone without that file. The salt itself is never written to the outputs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

# Importing Beam logs notices about optional Google Cloud clients this pipeline does not use.
_root_level = logging.getLogger().level
logging.getLogger().setLevel(logging.ERROR)
try:
    import apache_beam as beam
finally:
    logging.getLogger().setLevel(_root_level)
import numpy as np

from medgan_tf.config import DataConfig, to_dict
from medgan_tf.presets import TASK_PRESETS
from medgan_tf.errors import UserError
from pipelines.options import add_arguments

MANIFEST_VERSION = 1
REJECTED = "rejected"
VOLUMES = "volumes"
SPLITS = ("train", "val")


# --------------------------------------------------------------------------- options


def pipeline_options(args: argparse.Namespace, beam_args: Sequence[str]) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions

    options = list(beam_args) + [f"--runner={args.runner}"]
    if not any(arg.startswith("--default_sdk_harness_log_level") for arg in beam_args):
        # Beam's worker processes log every channel and bundle at INFO on our stderr; keep the
        # user's terminal for this converter's own messages (pass the option to see them again).
        options.append("--default_sdk_harness_log_level=ERROR")
        for name in ("apache_beam", "root.apache_beam"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if args.num_workers:
        options += [f"--direct_num_workers={args.num_workers}", "--direct_running_mode=multi_processing"]
    return PipelineOptions(options)


def pipeline_runner(args: argparse.Namespace, options: Any) -> Any:
    """The runner to use: for DirectRunner, Beam's local FnApiRunner itself.

    Since Beam 2.68 the DirectRunner first tries Prism, which downloads a Go binary from GitHub
    (and, offline, fails before falling back); the FnApiRunner is the engine it falls back to and
    the one that implements direct_num_workers / multi_processing. Other runners are used as named.
    """
    if args.runner.lower() not in ("directrunner", "direct"):
        return None  # taken from --runner in the options
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=provision)


# --------------------------------------------------------------------------- pseudonyms and splits


def resolve_salt(explicit: str | None) -> tuple[bytes, str]:
    """(salt bytes, where it came from) — see the module docstring for the order."""
    if explicit:
        return explicit.encode(), "--salt"
    if os.environ.get("MEDGAN_TF_SALT"):
        return os.environ["MEDGAN_TF_SALT"].encode(), "MEDGAN_TF_SALT"
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = config_home / "medgan-tf" / "pseudonym-salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode(), "per-user secret file"


def pseudonym(patient_id: str, salt: bytes) -> str:
    """16 hex digits of HMAC-SHA256(salt, patient_id): stable, not reversible without the salt."""
    return hmac.new(salt, patient_id.strip().encode(), hashlib.sha256).hexdigest()[:16]


def assign_splits(patient_keys: Iterable[str], val_fraction: float) -> dict[str, str]:
    """Patient key → "train" | "val", deterministic: patients ranked by SHA-256 of their key,
    the first round(val_fraction·n) (at least 1 when n ≥ 2, at most n − 1) go to val. Ranking by
    hash (rather than thresholding it) keeps both splits non-empty even for 2–4 patients."""
    keys = sorted(set(patient_keys), key=lambda key: hashlib.sha256(key.encode()).hexdigest())
    if len(keys) < 2:
        return {key: "train" for key in keys}
    num_val = min(len(keys) - 1, max(1, int(round(val_fraction * len(keys)))))
    return {key: ("val" if rank < num_val else "train") for rank, key in enumerate(keys)}


def read_pairs_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of the pairs CSV with paths resolved against the CSV folder; UserError on a bad header."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs CSV {path} does not exist; expected a CSV with header patient_id,source,target")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"patient_id", "source", "target"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}: header {reader.fieldnames} lacks {sorted(missing)}; expected patient_id,source,target")
        rows = []
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            resolved = {}
            for side in ("source", "target"):
                value = (row.get(side) or "").strip()
                resolved[side] = str((path.parent / value).resolve()) if value else ""
            rows.append({"row": number, "patient_id": (row.get("patient_id") or "").strip(), **resolved})
    if not rows:
        raise UserError(f"{path} has no pairs; expected at least one row after the header")
    return rows


# --------------------------------------------------------------------------- the per-pair work (plain numpy)


class PairRejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail or reason
        super().__init__(reason)


def convert_pair(
    source_path: str,
    target_path: str,
    patient_key: str,
    data_config: DataConfig,
) -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
    """One pair → ([(slice_index, serialized Example)], volume summary). Raises PairRejected.

    Pure function of its inputs (no Beam): read → pair onto the model grid → normalize → slices.
    """
    from medgan_tf.data import geometry, normalization, schema
    from medgan_tf.data.io import VolumeReadError, read_volume

    volumes = {}
    for side, path, modality in (
        ("source", source_path, data_config.source_modality),
        ("target", target_path, data_config.target_modality),
    ):
        if not path:
            raise PairRejected(f"{side}: empty path")
        try:
            volume = read_volume(path, modality_hint=modality)
        except VolumeReadError as error:
            raise PairRejected(f"{side}: {error.reason}", f"{side} {error}") from None
        if volume.modality not in ("OT", modality):
            raise PairRejected(f"{side}: modality {volume.modality}; task expects {modality}")
        volumes[side] = volume
    source, target = volumes["source"], volumes["target"]
    size, spacing = data_config.image_size, tuple(data_config.spacing_mm)
    try:
        source_array, target_array, grid_affine = geometry.pair_to_model_grid(source, target, spacing, size)
    except geometry.GeometryError as error:
        raise PairRejected(error.reason) from None
    # Keep slices that both volumes cover (a PET longer than its CT gives no pair beyond the CT).
    source_mask = geometry.coverage(source, source_array.shape, grid_affine)
    target_mask = geometry.coverage(target, source_array.shape, grid_affine)
    source_cover, target_cover = source_mask.mean(axis=(0, 1)), target_mask.mean(axis=(0, 1))
    keep = np.flatnonzero((source_cover > 0) & (target_cover >= 0.5 * source_cover))
    if keep.size == 0:
        raise PairRejected("no axial slice is covered by both volumes")

    # Per-volume statistics over the voxels each volume really covers (not the crop/pad fill).
    source_params = normalization.fit(source_array[..., keep][source_mask[..., keep]], data_config.source_normalization, unit=source.unit)
    if data_config.target_normalization.share_source:
        target_params = dict(source_params, unit=target.unit)
    else:
        target_params = normalization.fit(target_array[..., keep][target_mask[..., keep]], data_config.target_normalization, unit=target.unit)
    source_norm = normalization.normalize(source_array, source_params)
    target_norm = normalization.normalize(target_array, target_params)
    records = [
        (
            int(k),
            schema.encode_example(
                source_norm[:, :, k], target_norm[:, :, k], patient_key, int(k), spacing, source_params, target_params
            ),
        )
        for k in keep
    ]
    summary = {
        "patient_key": patient_key,
        "slices": len(records),
        "grid_affine": np.round(grid_affine, 6).tolist(),
        "grid_shape": list(source_array.shape),
        "source": _volume_summary(source, source_params),
        "target": _volume_summary(target, target_params),
    }
    return records, summary


def _volume_summary(volume: Any, params: dict[str, Any]) -> dict[str, Any]:
    facts = {k: v for k, v in volume.metadata.items() if k in ("format", "num_files", "suv_factor", "suv_unavailable")}
    return {
        "modality": volume.modality,
        "unit": volume.unit,
        "shape": list(volume.shape),
        "spacing_mm": [round(v, 6) for v in volume.spacing],
        "normalization": params,
        **facts,
    }


class ConvertPairFn(beam.DoFn):
    """Beam step around `convert_pair`: main output (patient_key, record); tagged outputs
    `volumes` (JSON summary per converted pair) and `rejected` (JSON, row + reason)."""

    def __init__(self, data_config: dict[str, Any], salt: bytes):
        self._data_config = data_config  # plain dict: picklable for any runner
        self._salt = salt

    def setup(self) -> None:
        from medgan_tf.config import from_dict

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self._config = from_dict(DataConfig, self._data_config)

    def process(self, row: dict[str, Any]):
        key = pseudonym(row["patient_id"], self._salt) if row["patient_id"] else ""
        try:
            if not key:
                raise PairRejected("empty patient_id")
            records, summary = convert_pair(row["source"], row["target"], key, self._config)
        except PairRejected as error:
            yield beam.pvalue.TaggedOutput(REJECTED, json.dumps({"row": row["row"], "patient_key": key, "reason": error.reason}))
            return
        except Exception as error:  # unexpected: still one pair, still one line
            reason = f"unexpected {type(error).__name__}: {' '.join(str(error).split())[:200]}"
            yield beam.pvalue.TaggedOutput(REJECTED, json.dumps({"row": row["row"], "patient_key": key, "reason": reason}))
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
    work_dir: Path,
    num_shards: int,
) -> None:
    """Labelled steps from the CSV rows to shards and summary files under `work_dir`.

    The split is assigned after conversion, over the patients that converted (a side input),
    so rejected pairs cannot leave a split empty.
    """
    from apache_beam.io.filesystem import CompressionTypes

    converted = (
        pipeline
        | "ReadPairs" >> beam.Create(rows, reshuffle=True)
        | "Convert" >> beam.ParDo(ConvertPairFn(to_dict(data_config), salt)).with_outputs(REJECTED, VOLUMES, main="records")
    )
    splits = (
        converted[VOLUMES]
        | "PatientKeys" >> beam.Map(lambda summary: json.loads(summary)["patient_key"])
        | "AllPatients" >> beam.combiners.ToList()
        | "AssignSplits" >> beam.Map(assign_splits, data_config.val_fraction)
    )
    by_split = (
        converted.records
        | "SplitByPatient"
        >> beam.Partition(lambda item, _, assignment: SPLITS.index(assignment[item[0]]), len(SPLITS), beam.pvalue.AsSingleton(splits))
    )
    for split, records in zip(SPLITS, by_split):
        shards = num_shards if split == "train" else max(1, num_shards // 2)
        (
            records
            | f"Drop{split.title()}Key" >> beam.Map(lambda item: item[1])
            | f"Write{split.title()}"
            >> beam.io.WriteToTFRecord(
                str(work_dir / split / "data"),
                file_name_suffix=".tfrecord.gz",
                num_shards=shards,
                compression_type=CompressionTypes.GZIP,
            )
        )
    converted[VOLUMES] | "WriteVolumes" >> beam.io.WriteToText(str(work_dir / "_summaries" / "volumes"), file_name_suffix=".jsonl")
    converted[REJECTED] | "WriteRejected" >> beam.io.WriteToText(str(work_dir / "_summaries" / "rejected"), file_name_suffix=".jsonl")


def _read_jsonl(pattern: str) -> list[dict[str, Any]]:
    items = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as handle:
            items += [json.loads(line) for line in handle if line.strip()]
    return items


def run(argv: Sequence[str] | None = None) -> int:
    """Convert a pairs CSV; returns the exit status (0 ok, 1 nothing converted or --strict failure).

    Unknown options are passed to Beam as PipelineOptions.
    """
    parser = add_arguments(argparse.ArgumentParser(prog="python -m pipelines.convert", description=__doc__.split("\n")[0]))
    args, beam_args = parser.parse_known_args(argv)
    return run_with_args(args, beam_args)


def run_with_args(args: argparse.Namespace, beam_args: Sequence[str] = ()) -> int:
    """`run` with parsed converter options and the remaining (Beam) options."""
    started = time.monotonic()
    if logging.getLogger("apache_beam").level == logging.NOTSET:
        logging.getLogger("apache_beam").setLevel(logging.WARNING)  # Beam's INFO is per-stage noise
    preset = TASK_PRESETS[args.task]
    data_config = dataclasses.replace(preset, image_size=args.image_size or preset.image_size)
    if data_config.image_size < 8:
        raise UserError(f"--image-size {data_config.image_size} is too small; expected ≥ 8")
    out = Path(args.out).absolute()
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"{out} exists and is not empty; pass --overwrite to replace it")
    rows = read_pairs_csv(args.pairs)
    salt, salt_source = resolve_salt(args.salt)
    if len(salt) < 16:
        logging.warning("the pseudonym salt has %d characters; a short salt lets patient IDs be guessed back", len(salt))
    num_shards = args.num_shards or data_config.num_shards

    work_dir = out.with_name(out.name + ".partial")
    if work_dir.exists():
        shutil.rmtree(work_dir)  # left over from an interrupted run
    work_dir.mkdir(parents=True)
    logging.info("converting %d pairs for task %s at %d² → %s", len(rows), args.task, data_config.image_size, out)
    options = pipeline_options(args, beam_args)
    with beam.Pipeline(runner=pipeline_runner(args, options), options=options) as pipeline:
        build_pipeline(pipeline, rows, data_config, salt, work_dir, num_shards)

    volumes = sorted(_read_jsonl(str(work_dir / "_summaries" / "volumes*")), key=lambda v: v["patient_key"])
    rejected = sorted(_read_jsonl(str(work_dir / "_summaries" / "rejected*")), key=lambda r: r["row"])
    shutil.rmtree(work_dir / "_summaries")
    splits = assign_splits([v["patient_key"] for v in volumes], data_config.val_fraction)  # as in the pipeline
    for summary in volumes:
        summary["split"] = splits[summary["patient_key"]]
    paths_by_row = {row["row"]: row for row in rows}
    for item in rejected:
        row = paths_by_row[item["row"]]
        print(f"rejected pair (CSV line {item['row']}: {row['source']} | {row['target']}): {item['reason']}", file=sys.stderr)

    counts = {}
    for split in SPLITS:
        in_split = [v for v in volumes if v["split"] == split]
        counts[split] = {
            "patients": len({v["patient_key"] for v in in_split}),
            "pairs": len(in_split),
            "slices": sum(v["slices"] for v in in_split),
            "shards": sorted(p.name for p in (work_dir / split).glob("*.tfrecord.gz")),
        }
    pet_units = sorted({side["unit"] for v in volumes for side in (v["source"], v["target"]) if side["modality"] == "PT"})
    manifest = {
        "format": "medgan-tf tfrecords",
        "manifest_version": MANIFEST_VERSION,
        "schema_version": _schema_version(),
        "task": args.task,
        "image_size": data_config.image_size,
        "spacing_mm": list(data_config.spacing_mm),
        "config": to_dict(data_config),
        "counts": counts,
        "converted_pairs": len(volumes),
        "rejected_pairs": len(rejected),
        "pet_unit": pet_units[0] if len(pet_units) == 1 else (pet_units or None),
        "volumes": volumes,
        "rejected": rejected,
        "pseudonym": {
            "method": "HMAC-SHA256(salt, patient_id), first 16 hex digits",
            # No salt fingerprint on purpose: it would let anyone test guesses of a weak salt.
            "salt_source": salt_source,
        },
        "split": "converted patients ranked by SHA-256 of patient_key; the first round(val_fraction * n) (≥ 1, ≤ n − 1) go to val",
        "compression": "GZIP",
        "seconds": round(time.monotonic() - started, 2),
    }
    if not volumes or (args.strict and rejected):
        why = "no pair converted" if not volumes else f"--strict and {len(rejected)} pair(s) rejected"
        print(f"error: {why}; no output written to {out}", file=sys.stderr)
        shutil.rmtree(work_dir)
        return 1
    for split in SPLITS:
        if counts[split]["slices"] == 0:
            logging.warning("the %s split is empty (%d patient(s) converted)", split, len(volumes))
    # manifest.json last, then one rename: DIR never looks complete before it is.
    (work_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if out.exists():
        shutil.rmtree(out)
    os.replace(work_dir, out)
    logging.info(
        "wrote %d train / %d val slices (%d pairs, %d rejected) to %s",
        counts["train"]["slices"], counts["val"]["slices"], len(volumes), len(rejected), out,
    )
    return 0


def _schema_version() -> int:
    from medgan_tf.data.schema import SCHEMA_VERSION

    return SCHEMA_VERSION


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return run(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
