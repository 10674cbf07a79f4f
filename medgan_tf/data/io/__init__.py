"""Volume I/O: one interface, one class per format (NIfTI through nibabel, DICOM series through
pydicom), so a new format is a new class in `FORMATS`.

`read_volume(path)` returns a `Volume`: a float32 array indexed (i, j, k) in physical units and
the 4×4 affine mapping voxel indices to RAS+ world millimetres (the nibabel convention). For a
DICOM series, i runs along the image rows' direction (DICOM column index), j along the columns'
direction (DICOM row index) and k along the slice normal, so an axial series gives axial k-slices.

Anything that cannot become such a volume raises `VolumeReadError(path, reason)` whose `reason`
is one line without the path (the converter stores reasons in its manifest, paths only on stderr,
because a path may itself name a patient).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import numpy as np

UNITS = ("HU", "SUV", "Bq/ml", "a.u.")


class VolumeReadError(Exception):
    """A path that does not hold one readable 3-D image volume."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")


@dataclasses.dataclass
class Volume:
    """A 3-D image in physical units.

    array:    float32 (I, J, K), values in `unit`.
    affine:   float64 4×4, voxel (i, j, k, 1) → RAS+ world mm.
    modality: DICOM modality code ("CT", "PT", "MR", ...) or "OT" when unknown.
    unit:     "HU" | "SUV" | "Bq/ml" | "a.u.".
    metadata: non-identifying facts only (source format, file count, SUV factor, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    unit: str = "a.u."
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.array.shape)


class VolumeFormat(Protocol):
    """A file format for volumes. `claims(path)` says whether this format reads the existing file
    or folder `path`, `writes(path)` whether it writes to that name; `read` returns a Volume in
    physical units (or raises VolumeReadError); `write` stores one."""

    name: str

    def claims(self, path: Path) -> bool: ...

    def writes(self, path: Path) -> bool: ...

    def read(self, path: Path, modality_hint: str | None) -> Volume: ...

    def write(self, volume: Volume, path: Path) -> Path: ...


def formats() -> list[VolumeFormat]:
    """The known formats, most specific first."""
    from medgan_tf.data.io.dicom import DicomSeriesFormat
    from medgan_tf.data.io.nifti import NiftiFormat

    return [NiftiFormat(), DicomSeriesFormat()]


def format_for(path: str | Path) -> VolumeFormat:
    path = Path(path)
    for candidate in formats():
        if candidate.claims(path):
            return candidate
    names = ", ".join(f.name for f in formats())
    raise VolumeReadError(path, f"no volume format reads this path (known: {names})")


def read_volume(path: str | Path, modality_hint: str | None = None) -> Volume:
    """Read a NIfTI file (.nii / .nii.gz) or a DICOM series folder.

    `modality_hint` ("CT", "PT", "MR") fills in modality and unit for NIfTI files, whose header
    has no standard field for them (files written by `write_nifti` carry both in `descrip`).
    Raises VolumeReadError for a missing path, unreadable or truncated data, a non-image DICOM,
    inconsistent series geometry, NaN/inf voxels or a volume that is not 3-D.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "path does not exist")
    volume = format_for(path).read(path, modality_hint)
    bad = int(np.count_nonzero(~np.isfinite(volume.array)))
    if bad:
        raise VolumeReadError(path, f"volume holds {bad} NaN/inf voxels; expected finite values")
    if min(volume.array.shape) < 1:
        raise VolumeReadError(path, f"empty volume of shape {volume.array.shape}")
    return volume


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write `volume` in the format `path` names (a `.nii`/`.nii.gz` file)."""
    path = Path(path)
    for candidate in formats():
        if candidate.writes(path):
            return candidate.write(volume, path)
    raise ValueError(f"{path}: no volume format writes this path; expected a .nii or .nii.gz file name")


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write `volume` as NIfTI-1 (see `medgan_tf.data.io.nifti.NiftiFormat.write`)."""
    from medgan_tf.data.io.nifti import NiftiFormat

    return NiftiFormat().write(volume, Path(path))
