"""NIfTI volumes through nibabel: `.nii` and `.nii.gz` files, RAS+ affine as nibabel gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf import files
from medgan_tf.data.io import Volume, VolumeReadError, affine_problem, error_kind, units

SUFFIXES = (".nii", ".nii.gz")


class NiftiFormat:
    """NIfTI-1 files. Modality and unit, which the header has no standard field for, travel in
    `descrip` as "modality=CT;unit=HU" (written by `write`, read back by `read`)."""

    key = "nifti"
    name = "NIfTI"
    suffixes = SUFFIXES
    folder = False
    name_rule = "a NIfTI file name ending in .nii or .nii.gz"

    def claims(self, path: Path) -> bool:
        # Any file: nibabel tells NIfTI from what it is not, with a reason worth reporting.
        return not path.is_dir()

    def writes(self, path: Path) -> bool:
        return str(path).endswith(SUFFIXES)

    def read(self, path: Path, modality_hint: str | None) -> Volume:
        return _read_nifti(path, modality_hint)

    def check_destination(self, path: Path) -> None:
        from medgan_tf.errors import UserError

        if not self.writes(Path(path)):
            raise UserError(f"output {path} must be {self.name_rule}")

    def write(self, volume: Volume, path: Path, provenance: Any = None) -> Path:  # noqa: ARG002 — no such fields
        """Write `volume` as NIfTI-1 (float32, scanner sform/qform) atomically; modality and unit go
        in `descrip`. NIfTI has no place for provenance."""
        import nibabel as nib

        path = Path(path)
        self.check_destination(path)
        image = nib.Nifti1Image(np.asarray(volume.array, dtype=np.float32), np.asarray(volume.affine, dtype=np.float64))
        image.header.set_xyzt_units("mm", "sec")
        image.header["descrip"] = f"modality={volume.modality};unit={volume.unit}".encode()[:79]
        image.set_sform(volume.affine, code=1)
        image.set_qform(volume.affine, code=1)
        with files.atomic_file(path, suffix=".nii.gz" if str(path).endswith(".nii.gz") else ".nii") as temporary:
            nib.save(image, str(temporary))
        return path


def _read_nifti(path: Path, modality_hint: str | None) -> Volume:
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises many types for foreign/corrupt files
        # The reason keeps the type only: nibabel's messages quote the file name.
        raise VolumeReadError(path, f"not a readable NIfTI file ({error_kind(error)})",
                              f"not a readable NIfTI file ({type(error).__name__}: {error})") from None
    shape = tuple(int(v) for v in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeReadError(path, f"{len(image.shape)}-D image of shape {tuple(image.shape)}; expected a 3-D volume")
    affine = np.asarray(image.affine, dtype=np.float64)
    problem = affine_problem(affine)
    if problem:  # e.g. a zero voxel size or NaN in the sform: no world position for any voxel
        raise VolumeReadError(path, problem)
    try:
        array = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    except Exception as error:
        raise VolumeReadError(path, f"truncated or corrupt NIfTI data ({error_kind(error)})",
                              f"truncated or corrupt NIfTI data ({type(error).__name__}: {error})") from None
    fields = _parse_descrip(image.header.get("descrip", b""))
    modality = fields.get("modality") or (modality_hint or "OT")
    unit = fields.get("unit") or _default_unit(modality)
    if unit not in units():
        unit = "a.u."
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=affine,
        modality=modality,
        unit=unit,
        metadata={"format": "nifti"},
    )


def _parse_descrip(raw: Any) -> dict[str, str]:
    text = raw.item() if hasattr(raw, "item") else raw
    if isinstance(text, bytes):
        text = text.decode("latin-1", "replace")
    fields = {}
    for part in str(text).split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip().rstrip("\x00")
    return fields


def _default_unit(modality: str) -> str:
    # Only HU follows from the modality (the table's `hounsfield`); a NIfTI PET without our descrip
    # could be SUV or Bq/ml: say "a.u." rather than guess.
    from medgan_tf import modalities

    entry = modalities.by_dicom(modality)
    return entry.unit if entry is not None and entry.hounsfield else "a.u."


