"""Volume I/O: one interface, one class per format (NIfTI through nibabel, DICOM series through
pydicom), so a new format is a new class in `FORMATS`.

`read_volume(path)` returns a `Volume`: a float32 array indexed (i, j, k) in physical units and
the 4×4 affine mapping voxel indices to RAS+ world millimetres (the nibabel convention). For a
DICOM series, i runs along the image rows' direction (DICOM column index), j along the columns'
direction (DICOM row index) and k along the slice normal, so an axial series gives axial k-slices.

Anything that cannot become such a volume raises `VolumeReadError(path, reason, detail)`: `reason`
is one line that names no path, file or folder (the converter stores reasons in its manifest, and a
name may itself name a patient), so it is built from fixed text, numbers and exception types, never
from an exception's message; `detail` may name files and goes to the user's terminal only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import numpy as np

UNITS = ("HU", "SUV", "Bq/ml", "a.u.")


class VolumeReadError(Exception):
    """A path that does not hold one readable 3-D image volume. `reason`: one line without any
    path or name (for the manifest); `detail`: the same, possibly naming files (for stderr)."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        self.detail = " ".join(str(detail).split()) or self.reason
        super().__init__(f"{self.path}: {self.detail}")


def error_kind(error: BaseException) -> str:
    """An exception as a reason may quote it: its type, and for an OS error the system's fixed
    text ("Permission denied"), never its message (which may quote a path)."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return type(error).__name__


def affine_problem(affine: Any) -> str | None:
    """Why `affine` cannot map voxels to world mm (non-finite, singular), or None when it can."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        return f"voxel-to-world affine of shape {affine.shape}; expected 4×4"
    if not np.all(np.isfinite(affine)):
        return "voxel-to-world affine holds NaN/inf; expected finite values"
    axes = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(axes == 0) or abs(np.linalg.det(affine[:3, :3])) <= 1e-6 * float(np.prod(axes)):
        return "singular voxel-to-world affine (a zero-length or collinear voxel axis); expected three independent axes"
    return None


@dataclasses.dataclass
class Volume:
    """A 3-D image in physical units.

    array:    float32 (I, J, K), values in `unit`.
    affine:   float64 4×4, voxel (i, j, k, 1) → RAS+ world mm.
    modality: DICOM modality code ("CT", "PT", "MR", ...) or "OT" when unknown.
    unit:     "HU" | "SUV" | "Bq/ml" | "a.u.".
    metadata: non-identifying facts only (source format, file count, SUV factor, ...).
    dicom_header: for a DICOM series, the first slice's pydicom Dataset (pixel data dropped) —
              the Patient, Study, Frame of Reference and PET modules a DICOM output copies; for a
              volume derived from one (a translation), the header of its source; None otherwise.
              It identifies the patient: nothing that stores data (records, manifests) keeps it.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    unit: str = "a.u."
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    dicom_header: Any = dataclasses.field(default=None, repr=False, compare=False)

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
    inconsistent series geometry, NaN/inf voxels, a singular or non-finite affine or a volume that
    is not 3-D; also for any other error of a reader (reason: the format and the error's type).
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "path does not exist")
    volume_format = format_for(path)
    try:
        volume = volume_format.read(path, modality_hint)
    except VolumeReadError:
        raise
    except Exception as error:  # noqa: BLE001 — a reader's unforeseen failure is still one line
        raise VolumeReadError(path, f"cannot read this {volume_format.name} ({error_kind(error)})",
                              f"cannot read this {volume_format.name} ({type(error).__name__}: {error})") from None
    problem = affine_problem(volume.affine)
    if problem:
        raise VolumeReadError(path, problem)
    bad = int(np.count_nonzero(~np.isfinite(volume.array)))
    if bad:
        raise VolumeReadError(path, f"volume holds {bad} NaN/inf voxels; expected finite values")
    if min(volume.array.shape) < 1:
        raise VolumeReadError(path, f"empty volume of shape {volume.array.shape}")
    return volume


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write `volume` in the format `path` names: a `.nii`/`.nii.gz` file, or a DICOM series
    folder for any other name (see `medgan_tf.data.io.dicom_writer`)."""
    path = Path(path)
    for candidate in formats():
        if candidate.writes(path):
            return candidate.write(volume, path)
    raise ValueError(f"{path}: no volume format writes this path; expected a .nii or .nii.gz file name or a folder")


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write `volume` as NIfTI-1 (see `medgan_tf.data.io.nifti.NiftiFormat.write`)."""
    from medgan_tf.data.io.nifti import NiftiFormat

    return NiftiFormat().write(volume, Path(path))
