"""Evaluate a model, or any tool's output volumes, by the paper's protocol or the field's.

Two inputs:

  --data DIR --split S   a converted dataset split (medgan-tf convert): the paper's protocol per
                         slice — SSIM, PSNR, MSE, VIF (pixel domain), UQI on the 0–255 scale, MAE
                         in the target's physical unit, LPIPS when its weights can be loaded —
                         for the model output, the untouched input and the task's classical
                         baselines (as below, in normalized units), per slice and per patient.
                         Writes metrics.json, metrics.md (like the paper's Table II), figure.png.
  --pairs CSV            whole volumes (columns patient_id, target, source and/or prediction,
                         optional mask, labels, split, SUV columns): with --model each source
                         volume is translated (any field of view), without it the prediction
                         column is scored, in physical units on the target's grid, by --protocol:
                           synthrad2023  MAE, PSNR, masked SSIM in the body mask (HU, [−1024, 3000])
                           synthrad2025  MAE, PSNR, masked MS-SSIM (HU, [−1024, 3071])
                           pet           NRMSE, PSNR, SSIM (Bq/ml); SUVmean/SUVmax/activity % error
                                         per region of the labels column
                           paper         the paper's metrics per axial slice (0–255 scale)
                         Default: the task's (`medgan-tf tasks`): synthrad2023 for CT targets,
                         pet for PET targets, paper otherwise. Rows: model, input (where units
                         allow) and the task's classical baselines (Gaussian and non-local means
                         when source and target are one modality, fitted on the CSV's val rows;
                         otherwise an intensity map, fitted on its train rows). Without a mask column or --mask-dir, a body mask is computed and
                         the report says so. Writes metrics.json, per_patient.csv, metrics.md,
                         slices.png (three planes), histogram.png, bland_altman.png (pet regions).
                         A multi-source --model reads its extra sources from the columns
                         source_2, source_3, … (training order, as in the converter's pairs
                         CSV); a patient with an empty one is reported with its line and the
                         others are scored; extra columns that are not the model's sources are
                         refused. The input row and the baselines use the first source only.

With `--runner R` (a Beam runner, as for `translate --inputs`; other Beam options pass through,
`--num-workers N` for local worker processes) the sources of --pairs are first translated as a
whole archive on that runner, the model loaded once per worker; the scoring is the same.

`--json` prints the summary on stdout: {"summary": {"model": {"mae": {"mean", "sd", "median",
...}}, "input": {...}, "gaussian": {...}}} (with --data: rows "output", "input" and the baselines).

Examples:
  medgan-tf evaluate --model savedmodels/denoise --data data/denoise --out reports/denoise
  medgan-tf evaluate --model savedmodels/sct --pairs test.csv --protocol synthrad2023 --out reports/sct
  medgan-tf evaluate --pairs other_tool.csv --task my_task.toml --protocol synthrad2025 --json
  medgan-tf evaluate --model savedmodels/sct --pairs cohort.csv --runner DirectRunner --num-workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from medgan_tf.serving.uncertainty import TTA_MODES

HELP = "score a model or existing outputs: the paper's metrics on records, or SynthRAD/PET protocols on volumes"
PASS_THROUGH_UNKNOWN_ARGS = True  # Beam pipeline options, with --runner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from medgan_tf import tasks
    from medgan_tf.data.pairs import SPLITS
    from medgan_tf.evaluation.protocols import PROTOCOLS

    parser.add_argument("--model", type=Path, metavar="SAVEDMODEL|RUN",
                        help="export folder (version or base folder; or model.onnx, an OpenVINO model.xml or its "
                             "folder, a model.tflite: `export --format`) or a run directory; required with --data; "
                             "with --pairs, omit it to score the CSV's prediction column")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="DIR", help="converted dataset (medgan-tf convert)")
    source.add_argument("--pairs", type=Path, metavar="CSV",
                        help="whole volumes: patient_id,target,source|prediction[,source_2,source_3,…,mask,labels,split,"
                             "suv_factor|weight_kg,injected_dose_bq,half_life_s,delay_s]; paths relative to the CSV; "
                             "source_2, … (training order) are a multi-source --model's extra sources")
    parser.add_argument("--split", default="val", choices=SPLITS,
                        help="--data: split to score (default val; test = the held-out split of convert "
                             "--test-fraction or the pairs CSV's split column)")
    parser.add_argument("--protocol", choices=PROTOCOLS.names(), help=_protocol_help())
    parser.add_argument("--task", metavar="NAME|FILE.toml",
                        help="--pairs without --model: " + tasks.flag_help(what="the task the volumes belong to") +
                             " (sets units, masks, baselines, default protocol); with --model it is the model's")
    parser.add_argument("--mask-dir", type=Path, metavar="DIR",
                        help="--pairs: body/evaluation masks DIR/<patient_id>.nii.gz (or .nii, or a DICOM folder) for "
                             "rows without a mask column; otherwise a body mask is computed (synthrad protocols)")
    parser.add_argument("--out", type=Path, metavar="REPORT_DIR",
                        help="report folder (default reports/<task>-<split> or reports/<task>-<protocol>)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices (tiles) per forward pass (default 8)")
    parser.add_argument("--tile-overlap", type=float, default=0.25,
                        help="--pairs with --model: overlap of the S×S tiles of large slices (default 0.25)")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="--pairs with --model: test-time augmentation as in `translate --tta`; with it (or an "
                        "ensemble export) the model row also reports how well the uncertainty predicts the error "
                        "(Spearman ρ over the mask, MAE in the 5%% most uncertain voxels vs the rest) and the "
                        "figure shows the uncertainty")
    parser.add_argument("--figure-slices", type=int, default=4, metavar="K", help="--data: slices in figure.png (default 4)")
    parser.add_argument("--max-slices", type=int, help="--data: score only the first N slices (quick checks)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    from pipelines.options import add_registration_arguments

    add_registration_arguments(parser, what="evaluate --pairs")
    parser.add_argument("--precision", choices=("export", "auto", "float32", "bfloat16"), default="export",
                        help="compute precision: export (default) = what the model carries (an export's own, float32 "
                             "for a run directory); for a run directory auto|float32|bfloat16 (auto = bfloat16 where "
                             "this processor computes it natively); an export refuses a precision it was not written in")
    parser.add_argument("--runner", metavar="RUNNER", help="--pairs with --model: translate the sources as an Apache "
                        "Beam pipeline on this runner first (as translate --inputs --runner); other Beam options pass through")
    parser.add_argument("--num-workers", type=int, default=None, metavar="N",
                        help="with --runner DirectRunner: N local worker processes")


def _protocol_help() -> str:
    """--protocol's help from the registry, e.g. "yardstick: paper (default for --data), pet
    (default for --pairs of PT targets); --data takes paper only"."""
    from medgan_tf import modalities
    from medgan_tf.evaluation.protocols import PROTOCOLS, records_protocol

    entries = []
    for name, protocol in PROTOCOLS.items():
        notes = ["default for --data"] if protocol.records else []
        targets = [key for key, modality in modalities.MODALITIES.items() if modality.protocol == name]
        notes += [f"default for --pairs of {', '.join(targets)} targets"] if targets else []
        entries.append(f"{name} ({', '.join(notes)})" if notes else name)
    return f"yardstick: {', '.join(entries)}; --data takes {records_protocol().name} only"


def run(args: argparse.Namespace) -> int:
    from medgan_tf.errors import UserError
    from medgan_tf.evaluation.protocols import PROTOCOLS

    if args.runner is not None and (args.pairs is None or args.model is None):
        raise UserError("--runner goes with --pairs CSV and --model (the sources are translated on that runner)")
    if args.runner is not None and args.tta != "none":
        raise UserError("--tta runs locally: leave out --runner, or --tta")
    if args.extra_args and args.runner is None:
        raise UserError(f"unrecognized arguments: {' '.join(args.extra_args)} (Beam options go with --runner)")
    if args.pairs is not None:
        if args.tta != "none" and args.model is None:
            raise UserError("--tta needs --model (it runs the model on transformed copies)")
        return _run_pairs(args)
    if getattr(args, "register", "none") != "none":
        raise UserError("--register registers whole volumes: give them with --pairs CSV (converted records are "
                        "registered at conversion: convert --register)")
    if args.model is None:
        raise UserError("--data needs --model (the records hold no predictions); score existing volumes with --pairs")
    if args.protocol is not None and not PROTOCOLS.get(args.protocol).records:
        raise UserError(f"--protocol {args.protocol} scores whole volumes in physical units: give them with --pairs CSV")
    if args.tta != "none":
        raise UserError("--tta goes with --pairs (whole volumes, where the uncertainty is scored against the error); "
                        "--data scores the records' slices one model pass each")
    return _run_records(args)


def _run_records(args: argparse.Namespace) -> int:
    from medgan_tf.errors import UserError
    from medgan_tf.evaluation.consistency import consistency_line, write_consistency
    from medgan_tf.evaluation.datasets import evaluate_dataset
    from medgan_tf.evaluation.protocols import records_protocol
    from medgan_tf.evaluation.reports import report_markdown, write_report
    from medgan_tf.serving.loading import load_model

    if args.figure_slices < 0:
        raise UserError(f"--figure-slices must be ≥ 0; received {args.figure_slices}")
    model = load_model(args.model, precision=args.precision)
    result = evaluate_dataset(model, args.data, args.split, batch_size=args.batch_size,
                              num_examples=max(args.figure_slices, 1), max_slices=args.max_slices, baselines=True)
    out_dir = args.out if args.out is not None else Path("reports") / f"{model.config.task}-{args.split}"
    title = f"{model.config.model} on {model.config.task} ({args.split} split of {args.data.name or args.data})"
    paths = write_report(result, out_dir, title=title, figure_slices=args.figure_slices)
    paths.update(write_consistency(result.slice_consistency, out_dir))
    summary = result.to_dict()
    if args.json:
        payload = {"model": str(args.model), "data": str(args.data), "split": args.split,
                   "protocol": records_protocol().name,
                   "report": {key: str(value) for key, value in paths.items()},
                   **{key: summary[key] for key in ("unit", "num_slices", "num_patients", "lpips", "summary")},
                   "slice_consistency": result.slice_consistency}
        _print_json(payload)
    else:
        print(report_markdown(result, title=title))
        print(consistency_line(result.slice_consistency))
        print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0


def _run_pairs(args: argparse.Namespace) -> int:
    from medgan_tf.errors import UserError
    from medgan_tf.evaluation.cases import read_evaluation_csv
    from medgan_tf.evaluation.volume_reports import report_dict, report_markdown, write_volume_report
    from medgan_tf import tasks
    from medgan_tf.evaluation.volumes import evaluate_volumes

    model = None
    if args.model is not None:
        from medgan_tf.serving.loading import load_model, model_info

        # on --runner the workers load the network; here only what it is
        model = (model_info if args.runner is not None else load_model)(args.model, precision=args.precision)
        task = tasks.from_experiment(model.config.task, model.config.data)
        if args.task is not None and tasks.get(args.task).name != task.name:
            raise UserError(f"--task {args.task} but the model {args.model} is a {task.name} model")
    elif args.task is None:
        raise UserError(f"--pairs without --model scores the CSV's prediction column; give --task "
                        f"({', '.join(tasks.TASKS.names())}, or a TOML file) so units, baselines and the default "
                        "protocol are known")
    else:
        task = tasks.get(args.task)
    rows = read_evaluation_csv(args.pairs, mask_dir=args.mask_dir)
    protocol = args.protocol or task.protocol

    def progress(message: str) -> None:
        print(f"evaluate {message}", file=sys.stderr, flush=True)

    from medgan_tf.data.registration import RegistrationSettings

    registration = RegistrationSettings(method=args.register, max_rotation_deg=args.max_rotation,
                                        max_translation_mm=args.max_translation, min_similarity=args.min_similarity)
    with tempfile.TemporaryDirectory(prefix="medgan-evaluate-") as work_dir:  # the translations on --runner
        translated = _translate_on_runner(args, rows, work_dir, progress) if args.runner is not None else None
        result = evaluate_volumes(rows, task, protocol, model=model, batch_size=args.batch_size,
                                  tile_overlap=args.tile_overlap, progress=progress, registration=registration,
                                  tta=args.tta, translated=translated)
    who = f"{model.config.model}" if model is not None else "predictions"
    registered = f", targets registered ({args.register})" if registration.enabled else ""
    title = f"{who} on {task.name} ({args.pairs.name}, protocol {protocol}{registered})"
    out_dir = args.out if args.out is not None else Path("reports") / f"{task.name}-{protocol}"
    paths = write_volume_report(result, out_dir, title=title)
    if args.json:
        report = report_dict(result, title)
        _print_json({"model": None if args.model is None else str(args.model), "pairs": str(args.pairs),
                     "report": {key: str(value) for key, value in paths.items()},
                     **{key: report[key] for key in ("protocol", "task", "unit", "num_patients", "rows", "baselines",
                                                     "notes", "failures", "summary")}})
    else:
        print(report_markdown(result, title))
        print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0


def _translate_on_runner(args: argparse.Namespace, rows: list, work_dir: str, progress) -> dict:
    """The rows' sources translated on --runner into `work_dir` (`evaluation.archive.translate_rows`)."""
    from medgan_tf.evaluation.archive import translate_rows
    from pipelines.runners import check_beam_args

    check_beam_args(args.extra_args or (), add_arguments, "evaluate")
    return translate_rows(rows, args.model, work_dir, runner=args.runner, num_workers=args.num_workers,
                          beam_args=args.extra_args or (), batch_size=args.batch_size, tile_overlap=args.tile_overlap,
                          precision=args.precision, progress=progress)


def _print_json(payload: dict) -> None:
    json.dump(payload, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")
