"""Translate whole volumes with an exported model (or a run directory).

The input (a NIfTI file or a DICOM series folder) is resampled to the model's spacing (a slice
smaller than the model's S×S is centre-padded; a larger one is covered by overlapping S×S tiles,
blended without seams, so nothing is cropped), normalized with parameters fitted on this volume
(as the converter did for the training data), run through the generator in tile batches, mapped back to
the target's physical unit (HU / SUV / MR a.u.) and resampled onto the input's own voxel grid.

The output has the input's grid and is written atomically, as NIfTI (`--output` ending in .nii or
.nii.gz) or as a DICOM series (`--output` a folder name without suffix, or `--output-format dicom`):
one file per slice, a new series (new Series and SOP Instance UIDs) in the source's study with its
Patient, Study and Frame of Reference modules, the input's geometry tags, references to the
source's series and instances and a SeriesDescription naming the model; CT as int16 in HU, PET in Bq/ml
(Units BQML) with the source's radiopharmaceutical and decay tags, MR as the source's. A NIfTI
input gets a new minimal Patient/Study (PatientID ANONYMOUS) and the log says so, unless `--like
SERIES_FOLDER` names a DICOM series of the same patient and frame of reference: then the output
joins that series' patient, study and frame of reference (on its grid, when the two hold the same
voxels). An existing output folder is replaced only when it is empty or an earlier medgan-tf series.

Many volumes, one model load: `--inputs CSV --output-dir DIR`. The CSV needs an `input` (or
`source`, so a pairs CSV works as it is) column; optional `patient_id` names each output
(`DIR/<patient_id>.nii.gz`, or `DIR/<patient_id>/` for DICOM) and optional `output` sets it. A
multi-source model reads its extra sources from the columns `source_2`, `source_3`, … (as in the
converter's pairs CSV, in training order, relative to the CSV like `source`); a CSV whose extra
columns do not match the model's sources is refused before anything runs. A volume that fails (an
empty extra source cell is reported with its line) is reported with its path and reason, the others
go on; the exit status is 1 when any failed. `--skip-existing` leaves rows whose output exists (outputs
are written whole or not at all, so one that exists is complete) and `--report CSV` lists every
row's outcome (written, failed with its reason, skipped).

A whole archive: with `--runner` (DirectRunner, PortableRunner, DataflowRunner, FlinkRunner, …) the
same `--inputs` job runs as an Apache Beam pipeline: the model is loaded once per worker process
(RunInference), the rows are spread over the workers, inputs and outputs may be on an object store
(gs://, s3://, … for the CSV, its volumes and --output-dir; NIfTI outputs there), and the report
goes to DIR/translate-report.csv unless --report names another place. Other Beam pipeline options
are passed through (e.g. --job_endpoint=embed --environment_type=LOOPBACK for a PortableRunner in
this process); `--num-workers N` runs N local worker processes under the DirectRunner.

Examples:
  medgan-tf translate --model savedmodels/denoise --input low_dose.nii.gz --output denoised.nii.gz
  medgan-tf translate --model savedmodels/sct/3 --input dicom/PET_series/ --output pseudo_ct.nii.gz
  medgan-tf translate --model savedmodels/sct/4 --input pet.nii.gz --extra-input dixon.nii.gz --output ct.nii.gz
  medgan-tf translate --model savedmodels/sct --input dicom/PET_series/ --output dicom/synthetic_CT
  medgan-tf translate --model savedmodels/sct --inputs phantoms/pairs.csv --output-dir out/ --output-format dicom
  medgan-tf translate --model savedmodels/sct/4 --inputs pairs_with_source_2.csv --output-dir out/
  medgan-tf translate --model savedmodels/sct --inputs cohort.csv --output-dir out/ --runner DirectRunner --num-workers 2
  medgan-tf translate --model savedmodels/sct --inputs gs://archive/cohort.csv --output-dir gs://archive/sct \
      --runner DataflowRunner --project P --region R --temp_location gs://archive/tmp --skip-existing
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medgan_tf.data.io import DEFAULT_OUTPUT_FORMAT, formats
from medgan_tf.serving.uncertainty import TTA_MODES

HELP = "translate whole NIfTI volumes or DICOM series with an exported model → NIfTI or DICOM on the input's grid"
PASS_THROUGH_UNKNOWN_ARGS = True  # Beam pipeline options, with --runner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="SAVEDMODEL",
                        help="export folder (a version, or the base folder → highest version) or a run directory; "
                        "also an ONNX model.onnx, an OpenVINO model.xml or its folder, a LiteRT model.tflite "
                        "(`export --format`), run by its own runtime")
    parser.add_argument("--input", type=Path, metavar="VOL", help="NIfTI file or DICOM series folder (one volume)")
    parser.add_argument("--extra-input", type=Path, action="append", default=[], metavar="VOL",
                        help="multi-source models, with --input: the extra source volume(s), repeated in training "
                        "order (the pairs CSV's source_2, source_3, …); each is resampled onto --input's grid and "
                        "normalized by its modality (with --inputs: the CSV's source_2, … columns instead). 2.5D "
                        "context slices are assembled from the volumes automatically")
    parser.add_argument("--output", type=Path, metavar="VOL",
                        help="with --input: output NIfTI (.nii or .nii.gz) or DICOM series folder (a name without suffix)")
    parser.add_argument("--inputs", metavar="CSV",
                        help="many volumes: a CSV with an 'input' (or 'source') column and optional 'patient_id' and "
                        "'output' columns, plus 'source_2', 'source_3', … (training order) for a multi-source model; "
                        "relative inputs are relative to the CSV; needs --output-dir")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="with --inputs: where the outputs go (<patient_id>.nii.gz, or <patient_id>/ for DICOM)")
    parser.add_argument("--output-format", choices=[f.key for f in formats()], default=None,
                        help="nifti or dicom (a series folder: one file per slice, a new series in the source's study); "
                        f"default: from the --output name, {DEFAULT_OUTPUT_FORMAT} for --inputs")
    parser.add_argument("--like", type=Path, metavar="SERIES_FOLDER",
                        help="with a NIfTI --input: a DICOM series of the same patient and frame of reference; a "
                        "DICOM output joins its patient, study and frame of reference, on its grid when the two "
                        "hold the same voxels (without it, a NIfTI input's DICOM output is a new study)")
    parser.add_argument("--batch-size", type=int, default=8, help="S×S tiles (slices) per forward pass (default 8)")
    parser.add_argument("--tile-overlap", type=float, default=0.25, metavar="FRACTION",
                        help="overlap of neighbouring tiles on slices larger than the model's field of view, "
                        "as a fraction of the tile, in [0, 1) (default 0.25)")
    parser.add_argument("--precision", choices=("export", "auto", "float32", "bfloat16"), default="export",
                        help="compute precision: export (default) = what the model carries (an export's own, float32 "
                             "for a run directory); for a run directory auto|float32|bfloat16 (auto = bfloat16 where "
                             "this processor computes it natively); an export refuses a precision it was not written in")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="test-time augmentation: none (default, one pass); flips = the model also sees each tile "
                        "flipped left-right, up-down and both, in one batch (about 4x the time), and the output is "
                        "the mean; flips+shifts adds four copies shifted by S/16 pixels (about 8x). The standard "
                        "deviation across the copies is the uncertainty (--uncertainty)")
    parser.add_argument("--uncertainty", type=Path, metavar="VOL",
                        help="with --input: also write the voxel-wise uncertainty (standard deviation across TTA "
                        "copies and/or ensemble members, in the target's unit) as NIfTI (.nii/.nii.gz) or, beside a "
                        "DICOM output, as a second DICOM series (a folder name) in the output's study and frame of "
                        "reference. Needs --tta flips|flips+shifts or an ensemble export (`export --ensemble`)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="with --inputs: leave rows whose output exists (a re-run after an interruption)")
    parser.add_argument("--report", metavar="CSV", help="with --inputs: write every row's outcome (line, input, output, "
                        "written|failed|skipped, reason) to CSV (with --runner: default DIR/translate-report.csv)")
    parser.add_argument("--runner", metavar="RUNNER", help="with --inputs: run as an Apache Beam pipeline on this runner "
                        "(DirectRunner, PortableRunner, DataflowRunner, FlinkRunner, ...); other Beam options pass "
                        "through; default: translate here, one volume after the other")
    parser.add_argument("--num-workers", type=int, default=None, metavar="N",
                        help="with --runner DirectRunner: N local worker processes")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from medgan_tf.errors import UserError
    from medgan_tf.serving.loading import load_model
    from medgan_tf.data.io import output_format as resolve_format
    from medgan_tf.serving.translation import translate_file

    if args.inputs is not None:
        return _run_archive(args) if args.runner is not None else _run_many(args)
    if args.extra_args:
        raise UserError(f"unrecognized arguments: {' '.join(args.extra_args)} (Beam options go with --inputs and --runner)")
    if args.runner is not None or args.skip_existing or args.report is not None:
        raise UserError("--runner, --skip-existing and --report go with --inputs CSV --output-dir DIR")
    if args.input is None or args.output is None:
        raise UserError("give --input VOL --output VOL (one volume) or --inputs CSV --output-dir DIR (many)")
    if args.output_dir is not None:
        raise UserError("--output-dir goes with --inputs; with --input give --output")
    volume_format = resolve_format(args.output, args.output_format)
    if not args.input.exists():
        raise UserError(f"input {args.input} does not exist; expected a NIfTI file or a DICOM series folder")
    for path in args.extra_input:
        if not path.exists():
            raise UserError(f"extra input {path} does not exist; expected a NIfTI file or a DICOM series folder")
    model = load_model(args.model, precision=args.precision)
    translation = translate_file(
        model, args.input, args.output, batch_size=args.batch_size, tile_overlap=args.tile_overlap, quiet=args.quiet,
        extra_inputs=args.extra_input,
        output_format=volume_format.key, like=args.like, tta=args.tta, uncertainty_path=args.uncertainty,
    )
    volume = translation.volume
    if not args.quiet:
        height, width, num_slices = translation.grid_shape
        size = model.config.data.image_size
        tiles = "" if translation.tiles_per_slice == 1 else f" in {translation.tiles_per_slice} tiles of {size}² each"
        kind = f"{volume_format.name} " if volume_format.folder else ""
        print(
            f"wrote {kind}{args.output}: {volume.modality} in {volume.unit}, shape {volume.shape}, "
            f"{num_slices} slices of {height}×{width}{tiles} through the model"
        )
        if args.uncertainty is not None:
            spread = translation.uncertainty
            print(f"wrote {args.uncertainty}: uncertainty (standard deviation) in {spread.unit}, "
                  f"median {float(np.median(spread.array)):.4g}, max {float(spread.array.max()):.4g}")
    return 0


def _check_many(args: argparse.Namespace) -> None:
    from medgan_tf.errors import UserError

    if args.output_dir is None or args.input is not None or args.output is not None:
        raise UserError("--inputs CSV goes with --output-dir DIR (not --input/--output)")
    if args.like is not None:
        raise UserError("--like goes with --input (one volume); with --inputs give each row's series in a 'like' column")
    if args.uncertainty is not None:
        raise UserError("--uncertainty VOL goes with --input (one volume); with --inputs the uncertainty is written "
                        "beside each output as <name>_uncertainty when --tta or an ensemble gives one")
    if args.extra_input:
        raise UserError("--extra-input goes with --input (one volume); with --inputs give the extra sources as the "
                        "CSV's source_2, source_3, … columns")


def _run_many(args: argparse.Namespace) -> int:
    import sys

    from medgan_tf import files
    from medgan_tf.errors import UserError
    from medgan_tf.serving import batch
    from medgan_tf.serving.loading import load_model

    _check_many(args)
    if args.extra_args:
        raise UserError(f"unrecognized arguments: {' '.join(args.extra_args)} (Beam options go with --runner)")
    if args.num_workers is not None:
        raise UserError("--num-workers goes with --runner DirectRunner")
    output_format = args.output_format or DEFAULT_OUTPUT_FORMAT
    items = batch.read_inputs_csv(args.inputs, args.output_dir, output_format)
    todo, skipped = batch.split_complete(items, batch.output_exists) if args.skip_existing else (items, [])
    model = load_model(args.model, precision=args.precision)
    batch.check_sources(args.inputs, items, tuple(model.config.data.extra_source_modalities))
    result = batch.translate_many(model, todo, output_format=output_format, batch_size=args.batch_size,
                                  tile_overlap=args.tile_overlap, quiet=args.quiet, tta=args.tta)
    if args.report is not None:
        files.write_text_atomic(args.report, batch.report_text(items, result.failed_lines, skipped))
    print(f"translated {len(result.written)} of {len(items)} volumes into {args.output_dir}"
          + (f", {len(skipped)} skipped (complete already)" if skipped else ""))
    for path, reason in result.failed:
        print(f"error: {path}: {reason}", file=sys.stderr)
    return 1 if result.failed else 0


def _run_archive(args: argparse.Namespace) -> int:
    """`--inputs` with `--runner`: the Beam pipeline of `medgan_tf.serving.archive`."""
    from medgan_tf.serving.archive import ArchiveOptions, translate_archive

    _check_many(args)
    options = ArchiveOptions(
        inputs=str(args.inputs), output_dir=str(args.output_dir), model=str(args.model),
        output_format=args.output_format or DEFAULT_OUTPUT_FORMAT, runner=args.runner, num_workers=args.num_workers,
        batch_size=args.batch_size, tile_overlap=args.tile_overlap, precision=args.precision,
        skip_existing=args.skip_existing, report=args.report, quiet=args.quiet,
    )
    return translate_archive(options, list(args.extra_args or ()))
