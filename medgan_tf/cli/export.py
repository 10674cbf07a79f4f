"""Export a run's generator as a SavedModel for TF Serving.

Writes OUT/<version>/ (saved_model.pb, variables/, assets/config.json, assets/normalization.json);
OUT defaults to savedmodels/<task>, the version to the next free number. For TF Serving it adds
OUT/<version>/assets.extra/tf_serving_warmup_requests (requests TF Serving runs before it serves the
version), and OUT/models.config and OUT/batching_parameters.txt (kept once they exist; README
"5. Export and serve"). Signatures:
`serving_default` (normalized slices `source` → `output`, float32 (B, S, S, 1) in [-1, 1]),
`physical` (the same in HU / SUV / MR units; per-volume normalizations take the volume's
`source_low`/`source_high` per slice) and, for per-volume normalizations,
`fit_source_normalization` (a whole volume → its `source_low`/`source_high`).

--precision sets what the graph computes in (inputs and outputs stay float32): float32 (default,
exact), bfloat16 (about half the time on processors with native bfloat16 — CPUs with avx512_bf16 or
amx_bf16, GPUs of compute capability ≥ 8.0 — and slower elsewhere; a trained model's outputs stay
within PSNR ≥ 45 dB, SSIM ≥ 0.999 of float32 on the 0–255 scale, see README "5. Export and
serve"), or auto (bfloat16 when the exporting machine has it natively: export
on the machine you serve from). The choice is recorded in assets/precision.json.

--ensemble A B C writes one export of several models of one task (run directories, a run of
`train --folds K` standing for its fold-1 … fold-K runs, or exports): serving_default and physical
return `output` (the members' mean) and `uncertainty` (their standard deviation, in the output's
units); `translate` writes the uncertainty with --uncertainty.

--format writes other runtimes' artefacts beside it, comma-separated for several (default
savedmodel): onnx (ONNX Runtime) → OUT/onnx/<version>/model.onnx, openvino → OUT/openvino/<version>/
model.xml + model.bin, litert (LiteRT / TFLite) → OUT/litert/<version>/model.tflite; each with the
same assets/ and the same version number. `translate --model` and `evaluate --model` take any of
them (the file or its folder) and run it with its own runtime. ONNX and LiteRT compute float32;
OpenVINO computes bfloat16 too (--precision bfloat16). Which runtime is fastest where: README
"5. Export and serve".

--precision int8 (never the default, never chosen by auto) quantizes the litert, onnx or openvino
artefact after training (TFLiteConverter, onnxruntime's quantize_static, NNCF), calibrated on 100
slices drawn (seeded) from --calibration, the model's training records; input and output stay
float32. The export then runs the int8 artefact and the float32 generator on 20 further slices and
publishes it only when the worst slice holds PSNR ≥ 45 dB and SSIM ≥ 0.999 (0–255 scale), recorded
in precision.json; otherwise it refuses with the measured figures and writes nothing.

Examples:
  medgan-tf export runs/pd                         # → savedmodels/<the run's task>/1
  medgan-tf export --ensemble runs/pd_folds        # its fold-1 … fold-K runs, one SavedModel
  medgan-tf export --ensemble runs/a runs/b savedmodels/pd/3 --out savedmodels/pd_ensemble
  medgan-tf export runs/pd --out /models/medgan --version 7
  medgan-tf export runs/pd --precision bfloat16     # bfloat16 convolutions, float32 in and out
  medgan-tf export runs/pd --format savedmodel,onnx,openvino,litert
  medgan-tf export runs/pd --format litert --precision int8 --calibration data/pd
  medgan-tf translate --model savedmodels/pd/onnx/1/model.onnx --input pet.nii.gz --output out.nii.gz
  saved_model_cli show --dir /models/medgan/7 --all
  docker run -p 8501:8501 -v /models/medgan:/models/medgan \\
      -e MODEL_NAME=medgan tensorflow/serving
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("export a run's generator as a TF Serving SavedModel (normalized and physical-unit signatures) "
        "and/or ONNX, OpenVINO, LiteRT artefacts")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, metavar="RUN", nargs="?",
                        help="run directory written by `medgan-tf train` (or give --ensemble)")
    parser.add_argument("--ensemble", type=Path, nargs="+", metavar="RUN_OR_EXPORT",
                        help="export several models of one task as one ensemble (mean `output`, standard deviation "
                        "`uncertainty`): run directories, exports, or a `train --folds` run (its fold-* runs)")
    parser.add_argument("--out", type=Path, help="model base folder (default savedmodels/<task>)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--checkpoint", metavar="best|latest|STEP|PREFIX",
                        help="which checkpoint of RUN: best (by the run's validation metric, --select-by), latest, "
                             "a step number, or a checkpoint prefix (default: best when the run has validated, "
                             "else latest)")
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16", "int8"), default="float32",
                        help="what the served graph computes in (default float32; auto = bfloat16 where this "
                             "processor has it natively, never int8); inputs and outputs stay float32. int8: "
                             "post-training quantization of --format litert, onnx or openvino with --calibration, "
                             "published only within PSNR ≥ 45 dB / SSIM ≥ 0.999 of float32")
    parser.add_argument("--calibration", type=Path, metavar="DATA_DIR_OR_TFRECORDS",
                        help="--precision int8 only: the model's training records (a `medgan-tf convert` output "
                             "folder, or its .tfrecord.gz files) the int8 ranges are calibrated on (100 slices, "
                             "seeded) and checked against float32 on (20 further slices)")
    parser.add_argument("--format", default="savedmodel", metavar="FORMAT[,FORMAT...]",
                        help="what to write, comma-separated: savedmodel (TF Serving, default), onnx (ONNX Runtime), "
                             "openvino (OpenVINO IR), litert (LiteRT .tflite); all with the same assets and version")


def run(args: argparse.Namespace) -> int:
    from medgan_tf.errors import UserError

    if args.ensemble:
        if args.run is not None or args.checkpoint is not None:
            raise UserError("--ensemble takes the members itself (each run's best checkpoint, else its latest); "
                            "leave out RUN and --checkpoint")
        if args.format != "savedmodel" or args.calibration is not None or args.precision == "int8":
            raise UserError("--ensemble writes a SavedModel only (float32 or bfloat16); leave out --format, "
                            "--calibration and --precision int8")
        return _run_ensemble(args)
    if args.run is None:
        raise UserError("give a run directory RUN, or --ensemble RUN_OR_EXPORT [...]")
    return _run_one(args)


def _run_ensemble(args: argparse.Namespace) -> int:
    import json

    from medgan_tf.serving.ensemble import ENSEMBLE_ASSET, export_ensemble
    from medgan_tf.serving.export import read_precision
    from medgan_tf.serving.serving_kit import kit_summary

    version_dir = export_ensemble(args.ensemble, args.out, args.version, precision=args.precision)
    ensemble = json.loads((version_dir / "assets" / ENSEMBLE_ASSET).read_text())
    print(f"exported {version_dir}: an ensemble of {ensemble['count']} members")
    for member in ensemble["members"]:
        print(f"  member: {member}")
    print("  serving_default and physical: source → output (the members' mean), uncertainty (their standard deviation)")
    print(f"  computes in:     {read_precision(version_dir)['compute_dtype']} (run members)")
    print(f"  {kit_summary(version_dir)}")
    return 0


def _run_one(args: argparse.Namespace) -> int:
    from medgan_tf.serving.export import read_precision, run_generator
    from medgan_tf.serving.format_export import export_formats
    from medgan_tf.serving.formats import FORMATS, parse_formats
    from medgan_tf.serving.serving_kit import kit_summary
    from medgan_tf.serving.signatures import normalization_description
    from medgan_tf.training import checkpoints

    parse_formats(args.format)  # an unknown format fails before the checkpoint is read
    which = args.checkpoint or ("best" if checkpoints.best_checkpoint(args.run) else "latest")
    source = checkpoints.resolve_checkpoint(args.run, which)
    generator, experiment, out_dir = run_generator(args.run, args.out, which)
    written = export_formats(generator, experiment, out_dir, args.version, args.precision, args.format,
                             calibration=args.calibration)
    description = normalization_description(experiment)
    size = experiment.data.image_size
    for key, version_dir in written.items():
        row = FORMATS[key]
        shown = version_dir if key == "savedmodel" else version_dir / row.marker
        print(f"exported {shown} ({row.name}, run by {row.package}) from the {which} checkpoint ({source})")
    channels = description["input_channels"]
    if channels == 1:
        print(f"  serving_default: source float32 (-1, {size}, {size}, 1) in [-1, 1] → output (same shape)")
    else:
        print(f"  serving_default: source float32 (-1, {size}, {size}, {channels}) in [-1, 1] "
              f"({2 * description['context_slices'] + 1} slices × {description['source_channels']} source(s)) "
              f"→ output (-1, {size}, {size}, 1)")
    if "savedmodel" in written:
        print(f"  physical:        {', '.join(description['physical_inputs'])} → output in {description['target']['unit']}")
    for key, version_dir in written.items():
        precision = read_precision(version_dir)
        label = f"{key}: " if len(written) > 1 else ""
        print(f"  computes in:     {precision['compute_dtype']} ({label}{precision['chosen']})")
        gate = precision.get("quantization", {}).get("gate")
        if gate:
            print(f"  int8 vs float32: worst of {precision['quantization']['calibration']['held_out_slices']} "
                  f"held-out slices PSNR {gate['min_psnr_db']:.2f} dB, SSIM {gate['min_ssim']:.5f} (bound "
                  f"{gate['bound']['min_psnr_db']:g} dB / {gate['bound']['min_ssim']:g})")
    if "savedmodel" in written:
        print(f"  {kit_summary(written['savedmodel'])}")
    return 0
