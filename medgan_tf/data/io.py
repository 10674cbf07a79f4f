"""One reader interface for medical volumes: NIfTI files (nibabel) and DICOM series folders (pydicom).

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
import datetime
import math
from pathlib import Path
from typing import Any

import numpy as np

UNITS = ("HU", "SUV", "Bq/ml", "a.u.")

# LPS (DICOM patient coordinates) → RAS (nibabel world coordinates): flip x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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
    if path.is_dir():
        volume = _read_dicom_series(path)
    else:
        volume = _read_nifti(path, modality_hint)
    bad = int(np.count_nonzero(~np.isfinite(volume.array)))
    if bad:
        raise VolumeReadError(path, f"volume holds {bad} NaN/inf voxels; expected finite values")
    if min(volume.array.shape) < 1:
        raise VolumeReadError(path, f"empty volume of shape {volume.array.shape}")
    return volume


def write_nifti(volume: Volume, path: str | Path) -> Path:
    """Write `volume` as NIfTI-1 (float32, scanner sform/qform); modality and unit go in `descrip`."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(volume.array, dtype=np.float32), np.asarray(volume.affine, dtype=np.float64))
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = f"modality={volume.modality};unit={volume.unit}".encode()[:79]
    image.set_sform(volume.affine, code=1)
    image.set_qform(volume.affine, code=1)
    nib.save(image, str(path))
    return path


# --------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path, modality_hint: str | None) -> Volume:
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as error:  # nibabel raises many types for foreign/corrupt files
        raise VolumeReadError(path, f"not a readable NIfTI file ({type(error).__name__}: {error})") from None
    shape = tuple(int(v) for v in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise VolumeReadError(path, f"{len(image.shape)}-D image of shape {tuple(image.shape)}; expected a 3-D volume")
    try:
        array = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    except Exception as error:
        raise VolumeReadError(path, f"truncated or corrupt NIfTI data ({type(error).__name__})") from None
    fields = _parse_descrip(image.header.get("descrip", b""))
    modality = fields.get("modality") or (modality_hint or "OT")
    unit = fields.get("unit") or _default_unit(modality)
    if unit not in UNITS:
        unit = "a.u."
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=np.asarray(image.affine, dtype=np.float64),
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
    # A NIfTI PET without our descrip could be SUV or Bq/ml: say "a.u." rather than guess.
    return "HU" if modality == "CT" else "a.u."


# --------------------------------------------------------------------------- DICOM


def _read_dicom_series(folder: Path) -> Volume:
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise VolumeReadError(folder, "empty folder; expected a DICOM series")
    datasets = []
    for file in files:
        try:
            datasets.append((file, pydicom.dcmread(str(file))))
        except InvalidDicomError:
            continue  # not DICOM (e.g. a README next to the series): ignored
        except Exception as error:
            raise VolumeReadError(folder, f"unreadable DICOM file {file.name} ({type(error).__name__})") from None
    if not datasets:
        raise VolumeReadError(folder, f"none of {len(files)} files is DICOM")
    images = [(file, ds) for file, ds in datasets if "PixelData" in ds]
    if not images:
        sop = str(datasets[0][1].get("SOPClassUID", "unknown")).strip()
        name = getattr(datasets[0][1].get("SOPClassUID", None), "name", sop)
        raise VolumeReadError(folder, f"DICOM without pixel data ({name}); expected an image series")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in images}
    if len(series) > 1:
        raise VolumeReadError(folder, f"folder holds {len(series)} image series; expected one")
    for _, ds in images:
        for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if keyword not in ds:
                raise VolumeReadError(folder, f"DICOM image without {keyword}; cannot place it in world space")

    orientation = np.array([float(v) for v in images[0][1].ImageOrientationPatient], dtype=np.float64)
    for _, ds in images:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-4):
            raise VolumeReadError(folder, "slices have different ImageOrientationPatient; expected one orientation")
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    if not math.isclose(float(np.linalg.norm(normal)), 1.0, abs_tol=1e-3):
        raise VolumeReadError(folder, f"ImageOrientationPatient {orientation.tolist()} is not orthonormal")

    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in images])
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    images = [images[i] for i in order]
    positions, distances = positions[order], distances[order]

    pixel_spacing = [float(v) for v in images[0][1].PixelSpacing]  # (between rows, between columns)
    rows, columns = int(images[0][1].Rows), int(images[0][1].Columns)
    for _, ds in images:
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise VolumeReadError(folder, "slices have different Rows/Columns; expected one matrix size")
        if not np.allclose([float(v) for v in ds.PixelSpacing], pixel_spacing, rtol=1e-4):
            raise VolumeReadError(folder, "slices have different PixelSpacing; expected one")

    if len(images) > 1:
        gaps = np.diff(distances)
        if np.any(gaps < 1e-3):
            raise VolumeReadError(folder, "two slices share one position along the slice normal (duplicates?)")
        slice_spacing = float(np.median(gaps))
        if np.max(np.abs(gaps - slice_spacing)) > 0.01 * slice_spacing + 1e-3:
            raise VolumeReadError(
                folder, f"uneven slice spacing {gaps.min():.3f}–{gaps.max():.3f} mm; expected one spacing"
            )
        # Positions must lie on the normal through the first slice (no shear / gantry tilt).
        offsets = positions - positions[0] - np.outer(distances - distances[0], normal)
        if np.max(np.abs(offsets)) > 0.01 * max(pixel_spacing) + 1e-3:
            raise VolumeReadError(folder, "slice positions are sheared (gantry tilt?); expected a stack along the normal")
    else:
        slice_spacing = float(images[0][1].get("SliceThickness", 1.0) or 1.0)

    slices = []
    for file, ds in images:
        try:
            pixels = ds.pixel_array
        except Exception as error:
            raise VolumeReadError(folder, _pixel_error_reason(ds, file, error)) from None
        if pixels.ndim != 2 or pixels.shape != (rows, columns):
            kind = "multi-frame or colour DICOM (not supported)" if pixels.ndim > 2 else "pixel data"
            raise VolumeReadError(folder, f"{file.name}: {kind} of shape {pixels.shape}; expected one {rows}×{columns} frame per file")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels.astype(np.float64) * slope + intercept)
    # pixel_array is [row, column]; our (i, j, k) is (column, row, slice).
    array = np.stack(slices, axis=-1).transpose(1, 0, 2)

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cosine * pixel_spacing[1]
    affine_lps[:3, 1] = column_cosine * pixel_spacing[0]
    affine_lps[:3, 2] = normal * slice_spacing
    affine_lps[:3, 3] = positions[0]
    affine = _LPS_TO_RAS @ affine_lps

    first = images[0][1]
    modality = str(first.get("Modality", "OT")).strip() or "OT"
    metadata: dict[str, Any] = {"format": "dicom", "num_files": len(images)}
    unit = "a.u."
    if modality == "CT":
        unit = "HU"
    elif modality == "PT":
        units_tag = str(first.get("Units", "")).strip().upper()
        if units_tag == "BQML":
            unit = "Bq/ml"
            factor, why = _suv_factor(first)
            if factor is not None:
                array = array * factor
                unit = "SUV"
                metadata["suv_factor"] = factor
            else:
                metadata["suv_unavailable"] = why
        elif units_tag in ("GML", "SUV"):
            unit = "SUV"
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=affine,
        modality=modality,
        unit=unit,
        metadata=metadata,
    )


def _pixel_error_reason(ds: Any, file: Path, error: Exception) -> str:
    syntax = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return f"{file.name}: compressed transfer syntax {syntax.name} that no installed decoder could read ({type(error).__name__})"
    return f"{file.name}: truncated or corrupt pixel data ({type(error).__name__})"


def _suv_factor(ds: Any) -> tuple[float | None, str]:
    """Bq/ml → SUV body-weight factor: weight [g] / (injected dose [Bq] decayed to the image time).

    SUV_bw = C(t) · W / (D · 2^(−Δt / T½)), with Δt the time from injection to the series start
    when the images are decay-corrected to the series start (DecayCorrection = START), Δt = 0 when
    corrected to the administration time (ADMIN).
    """
    try:
        weight_kg = float(ds.get("PatientWeight") or 0.0)
        info = ds.RadiopharmaceuticalInformationSequence[0]
        dose = float(info.get("RadionuclideTotalDose") or 0.0)
        half_life = float(info.get("RadionuclideHalfLife") or 0.0)
        start = info.get("RadiopharmaceuticalStartTime") or str(info.get("RadiopharmaceuticalStartDateTime", ""))[8:]
        series_time = ds.get("SeriesTime") or ds.get("AcquisitionTime")
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None, "no RadiopharmaceuticalInformationSequence"
    if weight_kg <= 0 or dose <= 0 or half_life <= 0:
        return None, "missing patient weight, injected dose or half-life"
    correction = str(ds.get("DecayCorrection", "START")).strip().upper()
    if correction == "ADMIN":
        elapsed = 0.0
    elif correction == "START":
        if not start or not series_time:
            return None, "missing injection or series time"
        try:
            elapsed = _seconds(str(series_time)) - _seconds(str(start))
        except ValueError:
            return None, "unreadable injection or series time"
        if elapsed < 0:  # acquisition after midnight
            elapsed += 24 * 3600
    else:
        return None, f"DecayCorrection {correction!r} not supported for SUV"
    decayed_dose = dose * 2.0 ** (-elapsed / half_life)
    return weight_kg * 1000.0 / decayed_dose, ""


def _seconds(dicom_time: str) -> float:
    """DICOM TM 'HHMMSS.ffffff' (or with colons) → seconds after midnight."""
    text = dicom_time.strip().replace(":", "")
    if len(text) < 2:
        raise ValueError(dicom_time)
    hours = int(text[0:2])
    minutes = int(text[2:4] or 0) if len(text) >= 4 else 0
    seconds = float(text[4:] or 0) if len(text) > 4 else 0.0
    return float(datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds).total_seconds())
