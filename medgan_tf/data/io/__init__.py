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

from medgan_tf.registry import Registry

UNITS = ("HU", "SUV", "Bq/ml", "a.u.")  # and the unit of every modality of `medgan_tf.modalities` (`units()`)
DEFAULT_OUTPUT_FORMAT = "nifti"  # the format key of outputs whose name does not choose one (`translate --inputs`)


def units() -> tuple[str, ...]:
    """The units a volume may be in: `UNITS` and each registered modality's own (a modality added
    to the table brings its unit)."""
    from medgan_tf import modalities

    return UNITS + tuple(dict.fromkeys(m.unit for _, m in modalities.MODALITIES.items() if m.unit not in UNITS))


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
    unit:     "HU" | "SUV" | "Bq/ml" | "a.u." | another modality's unit (`units()`).
    metadata: non-identifying facts only (source format, file count, SUV factor, ...).
    dicom_header: for a DICOM series, the first slice's pydicom Dataset (pixel data dropped) —
              the Patient, Study, Frame of Reference and PET modules a DICOM output copies; for a
              volume derived from one (a translation), the header of its source; None otherwise.
              It identifies the patient: nothing that stores data (records, manifests) keeps it.
    dicom_slices: alongside `dicom_header`, each source slice's (SOPClassUID, SOPInstanceUID,
              ImagePositionPatient [mm, LPS]) in k order: what a derived DICOM series references.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    unit: str = "a.u."
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    dicom_header: Any = dataclasses.field(default=None, repr=False, compare=False)
    dicom_slices: tuple[tuple[str, str, tuple[float, float, float]], ...] = dataclasses.field(
        default=(), repr=False, compare=False)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.array.shape)


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What a derived volume was made from and by: `description` (a short name of the model, e.g.
    for DICOM SeriesDescription, ≤ 64 characters), `derivation` (one sentence), and the `source`
    Volume whose header a DICOM output copies (Patient, Study, Frame of Reference, PET tags)."""

    description: str = ""
    derivation: str = ""
    source: Volume | None = None


class VolumeFormat(Protocol):
    """A file format for volumes: one row of the format table (`formats()`).

    `key` is its name on the command line (`--output-format`), `name` its name in messages,
    `suffixes` the file-name endings that choose it ("" for a folder format: `folder`), and
    `name_rule` how an output name for it looks. `claims(path)` says whether it reads the existing
    file or folder `path`, `writes(path)` whether that name asks for it; `read` returns a Volume in
    physical units (or raises VolumeReadError); `check_destination` raises a UserError for a path
    it cannot write (before any work is done); `write` stores a volume atomically (complete or
    absent), copying what `provenance` gives where the format can hold it.
    """

    key: str
    name: str
    suffixes: tuple[str, ...]
    folder: bool
    name_rule: str

    def claims(self, path: Path) -> bool: ...

    def writes(self, path: Path) -> bool: ...

    def read(self, path: Path, modality_hint: str | None) -> Volume: ...

    def check_destination(self, path: Path) -> None: ...

    def write(self, volume: Volume, path: Path, provenance: Provenance | None = None) -> Path: ...


# The format table, by key: NIfTI and DICOM series are entered at the first use (their modules import
# this one); another format is one `FORMATS.add(key, MyFormat())`.
FORMATS: Registry[VolumeFormat] = Registry("volume format")


def formats() -> list[VolumeFormat]:
    """The format table in registration order: the one list every reader, writer and command-line
    choice of a volume format comes from."""
    if "nifti" not in FORMATS:
        from medgan_tf.data.io.dicom import DicomSeriesFormat
        from medgan_tf.data.io.nifti import NiftiFormat

        for built_in in (NiftiFormat(), DicomSeriesFormat()):
            FORMATS.add(built_in.key, built_in)
    return [volume_format for _, volume_format in FORMATS.items()]


def format_for(path: str | Path) -> VolumeFormat:
    """The format that reads `path`: one whose suffix the name ends with, else the first that claims it."""
    path = Path(path)
    table = formats()
    by_suffix = [f for f in table if f.suffixes and path.name.endswith(tuple(f.suffixes))]
    for candidate in by_suffix + [f for f in table if f not in by_suffix]:
        if candidate.claims(path):
            return candidate
    names = ", ".join(f.name for f in formats())
    raise VolumeReadError(path, f"no volume format reads this path (known: {names})")


def dicom_code(modality: str) -> str:
    """The DICOM Modality code of `modality`: a key of the modality table gives its `dicom`
    ("CBCT" → "CT"); anything else is taken as a code already."""
    from medgan_tf import modalities

    return modalities.MODALITIES.get(modality).dicom if modality in modalities.MODALITIES else modality


def read_volume(path: str | Path, modality_hint: str | None = None) -> Volume:
    """Read a NIfTI file (.nii / .nii.gz) or a DICOM series folder.

    `modality_hint` (a DICOM Modality code, or a key of `medgan_tf.modalities`: "CBCT" reads as
    "CT") fills in modality and unit for NIfTI files, whose header has no standard field for them
    (files written by `write_nifti` carry both in `descrip`).
    Raises VolumeReadError for a missing path, unreadable or truncated data, a non-image DICOM,
    inconsistent series geometry, NaN/inf voxels, a singular or non-finite affine or a volume that
    is not 3-D; also for any other error of a reader (reason: the format and the error's type).
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(path, "path does not exist")
    modality_hint = dicom_code(modality_hint) if modality_hint is not None else None
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


def read_input(what: str, path: str | Path, modality_hint: str | None = None) -> Volume:
    """`read_volume` for a command's input: a VolumeReadError becomes the UserError "cannot read
    `what` PATH: reason"."""
    from medgan_tf.errors import UserError

    try:
        return read_volume(path, modality_hint=modality_hint)
    except VolumeReadError as error:
        raise UserError(f"cannot read {what} {error.path}: {error.reason}") from None


def output_format(path: str | Path, key: str | None = None) -> VolumeFormat:
    """The format an output at `path` is written in: the one named `key` (`--output-format`), else
    the one the name asks for (a NIfTI suffix, or a folder name). UserError when none fits, when
    the name asks for another format than `key`, or when the destination cannot be written."""
    from medgan_tf.errors import UserError

    path = Path(path)
    table = formats()
    keys = [f.key for f in table]
    if key is not None and key not in keys:
        raise UserError(f"unknown output format {key!r}; expected one of {', '.join(keys)}")
    named = next((f for f in table if f.suffixes and str(path).endswith(f.suffixes)), None)
    chosen = next((f for f in table if f.key == key), None) or named or next((f for f in table if f.writes(path)), None)
    if chosen is None or (not chosen.folder and named is not chosen):
        rules = ", or ".join(f.name_rule for f in table)
        raise UserError(f"output {path} must be {rules}")
    if chosen.folder and named is not None:
        raise UserError(f"output {path} is a {named.name} file name; a {chosen.name} output is a folder")
    chosen.check_destination(path)
    return chosen


def output_name(name: str | None, source: str | Path, key: str) -> str:
    """The name of the output of `source` in the format `key`: `name` (e.g. a patient ID), else the
    source's own name without a format's suffix, made safe as a file name, with the format's
    suffix (a file) or as it is (a folder)."""
    import re

    table = formats()
    source_name = Path(source).name
    stem = name or next((source_name[: -len(suffix)] for f in table for suffix in f.suffixes
                         if source_name.endswith(suffix)), source_name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "volume"
    volume_format = next(f for f in table if f.key == key)
    return stem if volume_format.folder else f"{stem}{volume_format.suffixes[-1]}"


def write_output(volume: Volume, path: str | Path, volume_format: VolumeFormat | None = None,
                 provenance: Provenance | None = None) -> Path:
    """Write `volume` to `path` in `volume_format` (default: `output_format(path)`), atomically.
    A destination that cannot be written (taken, permission, disk full) or a volume the format
    cannot hold is a UserError naming it; nothing is left under that name."""
    from medgan_tf.errors import UserError

    path = Path(path)
    volume_format = volume_format or output_format(path)
    try:
        return volume_format.write(volume, path, provenance)
    except FileExistsError as error:
        raise UserError(f"output {error}") from None
    except ValueError as error:
        raise UserError(f"cannot write {volume_format.name} {path}: {error}") from None
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or type(error).__name__}; nothing was written") from None


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write `volume` as NIfTI-1 (see `medgan_tf.data.io.nifti.NiftiFormat.write`)."""
    from medgan_tf.data.io.nifti import NiftiFormat

    return NiftiFormat().write(volume, Path(path))
