"""Translate a whole volume with an exported model (or a run directory).

The input (a NIfTI file or a DICOM series folder) is resampled to the model's spacing (a slice
smaller than the model's S×S is centre-padded; a larger one is covered by overlapping S×S tiles,
blended without seams, so nothing is cropped), normalized with parameters fitted on this volume
(as the converter did for the training data), run through the generator in tile batches, mapped back to
the target's physical unit (HU / SUV / MR a.u.) and resampled onto the input's own voxel grid.
The output NIfTI has the input's shape and affine; it is written atomically.

Examples:
  medgan-tf translate --model savedmodels/pet_denoise --input low_dose.nii.gz --output denoised.nii.gz
  medgan-tf translate --model savedmodels/pet_ct/3 --input dicom/PET_series/ --output pseudo_ct.nii.gz
  medgan-tf translate --model savedmodels/pet_ct/4 --input pet.nii.gz --extra-input dixon.nii.gz --output ct.nii.gz
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "translate a whole NIfTI volume or DICOM series with an exported model → NIfTI on the input's grid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="SAVEDMODEL",
                        help="export folder (a version, or the base folder → highest version) or a run directory")
    parser.add_argument("--input", type=Path, required=True, metavar="VOL", help="NIfTI file or DICOM series folder")
    parser.add_argument("--extra-input", type=Path, action="append", default=[], metavar="VOL",
                        help="multi-source models: the extra source volume(s), repeated in training order (the "
                        "pairs CSV's source_2, source_3, …); each is resampled onto --input's grid and normalized "
                        "by its modality. 2.5D context slices are assembled from the volumes automatically")
    parser.add_argument("--output", type=Path, required=True, metavar="VOL", help="output NIfTI (.nii or .nii.gz)")
    parser.add_argument("--batch-size", type=int, default=8, help="S×S tiles (slices) per forward pass (default 8)")
    parser.add_argument("--tile-overlap", type=float, default=0.25, metavar="FRACTION",
                        help="overlap of neighbouring tiles on slices larger than the model's field of view, "
                        "as a fraction of the tile, in [0, 1) (default 0.25)")
    parser.add_argument("--precision", choices=("export", "auto", "float32", "bfloat16"), default="export",
                        help="compute precision: export (default) = what the model carries (an export's own, float32 "
                             "for a run directory); for a run directory auto|float32|bfloat16 (auto = bfloat16 where "
                             "this processor computes it natively); an export refuses a precision it was not written in")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from medgan_tf.serving.loading import load_model
    from medgan_tf.serving.translation import check_nifti_path, translate_file

    check_nifti_path(args.output)
    if not args.input.exists():
        from medgan_tf.errors import UserError

        raise UserError(f"input {args.input} does not exist; expected a NIfTI file or a DICOM series folder")
    for path in args.extra_input:
        if not path.exists():
            from medgan_tf.errors import UserError

            raise UserError(f"extra input {path} does not exist; expected a NIfTI file or a DICOM series folder")
    model = load_model(args.model, precision=args.precision)
    translation = translate_file(
        model, args.input, args.output, batch_size=args.batch_size, tile_overlap=args.tile_overlap, quiet=args.quiet,
        extra_inputs=args.extra_input,
    )
    volume = translation.volume
    if not args.quiet:
        height, width, num_slices = translation.grid_shape
        size = model.config.data.image_size
        tiles = "" if translation.tiles_per_slice == 1 else f" in {translation.tiles_per_slice} tiles of {size}² each"
        print(
            f"wrote {args.output}: {volume.modality} in {volume.unit}, shape {volume.shape}, "
            f"{num_slices} slices of {height}×{width}{tiles} through the model"
        )
    return 0
