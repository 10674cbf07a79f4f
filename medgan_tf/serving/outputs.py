"""Where a translated volume goes: a NIfTI file or a DICOM series folder, chosen by name or flag.

`--output x.nii.gz` (or `.nii`) writes NIfTI; a name without suffix, an existing folder, or
`--output-format dicom` writes a DICOM series folder (`medgan_tf.data.io.dicom_writer`): a new series in the source's study, named
after the model. Both are written atomically; the checks run before the model is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from medgan_tf.data.io.nifti import SUFFIXES as NIFTI_SUFFIXES
from medgan_tf.errors import UserError

OUTPUT_FORMATS = ("nifti", "dicom")


def resolve_format(path: str | Path, output_format: str | None) -> str:
    """The output format for `path`: `output_format` when given, else by name (NIfTI suffix or
    folder). Raises UserError when the two disagree or the destination cannot be written."""
    path = Path(path)
    is_nifti_name = str(path).endswith(NIFTI_SUFFIXES)
    if output_format is None:
        # A folder name has no suffix (or the folder exists); "out.png" is a mistake, not a folder.
        output_format = "nifti" if is_nifti_name or (path.suffix and not path.is_dir()) else "dicom"
    if output_format not in OUTPUT_FORMATS:
        raise UserError(f"unknown output format {output_format!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    if output_format == "nifti" and not is_nifti_name:
        raise UserError(f"output {path} must be a NIfTI file name ending in .nii or .nii.gz, or a DICOM series "
                        "folder (a name without suffix, or --output-format dicom)")
    if output_format == "dicom":
        from medgan_tf.data.io.dicom_writer import check_destination

        if is_nifti_name:
            raise UserError(f"output {path} is a NIfTI file name; a DICOM series output is a folder")
        try:
            check_destination(path)
        except FileExistsError as error:
            raise UserError(f"output {error}") from None
    return output_format


def check_nifti_path(path: str | Path) -> Path:
    path = Path(path)
    if not str(path).endswith(NIFTI_SUFFIXES):
        raise UserError(f"output {path} must be a NIfTI file name ending in .nii or .nii.gz")
    return path


def write_nifti_atomic(volume: Any, path: str | Path) -> Path:
    """`io.write_nifti` through a temporary file in the same folder and a rename: a reader (or a
    crash) never sees half a file."""
    from medgan_tf.data.io import write_nifti

    path = check_nifti_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write_nifti(volume, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def model_description(model: Any) -> tuple[str, str]:
    """(SeriesDescription, DerivationDescription) naming the model, its task and its version."""
    import medgan_tf

    config = model.config
    path = Path(getattr(model, "path", "model"))
    version = f"export version {path.name}" if path.name.isdigit() else f"run {path.name}"
    short = f"medgan-tf {config.model} {config.task} v{path.name}" if path.name.isdigit() else f"medgan-tf {config.model} {config.task}"
    long = (f"Synthetic {config.data.target_modality} translated from {config.data.source_modality} by medgan-tf "
            f"{medgan_tf.__version__}, model {config.model} (task {config.task}, {version}); not acquired")
    return short[:64], long


def write_output(volume: Any, source: Any, model: Any, path: str | Path, output_format: str) -> Path:
    """Write the translated `volume` to `path` as `output_format`; a DICOM series copies the
    Patient, Study and Frame of Reference modules (and PET tags) of `source`'s DICOM header.
    A destination that cannot be written (permission, disk full) is a UserError naming it."""
    path = Path(path)
    try:
        if output_format == "nifti":
            return write_nifti_atomic(volume, path)
        from medgan_tf.data.io.dicom_writer import write_dicom_series

        description, derivation = model_description(model)
        derived = dataclasses.replace(volume, dicom_header=getattr(source, "dicom_header", None))
        return write_dicom_series(derived, path, description=description, derivation=derivation)
    except FileExistsError as error:
        raise UserError(f"output {error}") from None
    except ValueError as error:
        raise UserError(f"cannot write DICOM series {path}: {error}") from None
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or type(error).__name__}; nothing was written") from None
