"""DICOM series through pydicom: a folder of one image series, sorted along the slice normal.

Rows/columns and the slice normal come from ImageOrientationPatient, positions from
ImagePositionPatient (LPS, converted to RAS+); values are rescaled with RescaleSlope/Intercept;
PET is converted to SUV when the header carries weight, dose, half-life and times (else Bq/ml).

Reasons name a file by its number in file-name order or a slice by its index along the normal,
never by its name (file names can name patients); the names go to `VolumeReadError.detail`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf import modalities
from medgan_tf.data.io import Volume, VolumeReadError, error_kind
from medgan_tf.data.io.dicom_headers import LPS_TO_RAS, suv_factor


class DicomSeriesFormat:
    """A folder holding the DICOM files of one series (a folder is never a NIfTI file). Writing
    is `medgan_tf.data.io.dicom_writer`: any name that is not a NIfTI file name is a folder."""

    key = "dicom"
    name = "DICOM series"
    suffixes = ()
    folder = True
    name_rule = "a DICOM series folder (a name without suffix, or --output-format dicom)"

    def claims(self, path: Path) -> bool:
        return path.is_dir()

    def writes(self, path: Path) -> bool:
        return path.is_dir() or not path.suffix  # "out.png" is no folder name

    def read(self, path: Path, modality_hint: str | None) -> Volume:  # noqa: ARG002 — DICOM names its modality
        return _read_dicom_series(path)

    def check_destination(self, path: Path) -> None:
        from medgan_tf.data.io.dicom_writer import check_destination
        from medgan_tf.errors import UserError

        try:
            check_destination(Path(path))
        except FileExistsError as error:
            raise UserError(f"output {error}") from None

    def write(self, volume: Volume, path: Path, provenance: Any = None) -> Path:
        """A new series in the study of `provenance.source` (its header's Patient, Study and Frame of
        Reference), named by `provenance.description` (`medgan_tf.data.io.dicom_writer`)."""
        import dataclasses

        from medgan_tf.data.io.dicom_writer import write_dicom_series

        if provenance is None:
            return write_dicom_series(volume, path)
        source = provenance.source
        derived = dataclasses.replace(volume, dicom_header=getattr(source, "dicom_header", None),
                                      dicom_slices=getattr(source, "dicom_slices", ()))
        return write_dicom_series(derived, path, description=provenance.description or None,
                                  derivation=provenance.derivation or None)


def _read_dicom_series(folder: Path) -> Volume:
    """The one image series in `folder` as a float32 (columns, rows, slices) Volume with a RAS+ affine in mm."""
    images = _series_images(folder)
    row_cosine, column_cosine, normal = _orientation(folder, images)
    images, positions, distances = _sort_along_normal(images, normal)
    pixel_spacing, rows, columns = _matrix_geometry(folder, images)
    slice_spacing = _slice_spacing(folder, images, positions, distances, normal, pixel_spacing)
    array = _pixel_volume(folder, images, rows, columns)

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cosine * pixel_spacing[1]
    affine_lps[:3, 1] = column_cosine * pixel_spacing[0]
    affine_lps[:3, 2] = normal * slice_spacing
    affine_lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ affine_lps

    first = images[0][1]
    slices = tuple((str(ds.SOPClassUID), str(ds.SOPInstanceUID), tuple(float(v) for v in position))
                   for (_, ds), position in zip(images, positions) if "SOPInstanceUID" in ds and "SOPClassUID" in ds)
    modality = str(first.get("Modality", "OT")).strip() or "OT"
    metadata: dict[str, Any] = {"format": "dicom", "num_files": len(images)}
    array, unit = _physical_units(first, modality, array, metadata)
    if "PixelData" in first:  # the header a DICOM output copies its modules from; pixels are in `array`
        del first.PixelData
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=affine,
        modality=modality,
        unit=unit,
        metadata=metadata,
        dicom_header=first,
        dicom_slices=slices if len(slices) == len(images) else (),
    )


def _series_images(folder: Path) -> list[tuple[Path, Any]]:
    """(file, dataset) of every DICOM image in `folder`, checked to be one placeable series (file order)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise VolumeReadError(folder, "empty folder; expected a DICOM series")
    datasets = []
    for number, file in enumerate(files, start=1):
        try:
            datasets.append((file, pydicom.dcmread(str(file))))
        except InvalidDicomError:
            continue  # not DICOM (e.g. a README next to the series): ignored
        except Exception as error:
            raise VolumeReadError(
                folder, f"unreadable DICOM file (file {number} of {len(files)} in name order; {error_kind(error)})",
                f"unreadable DICOM file {file.name} ({type(error).__name__}: {error})",
            ) from None
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
        layout = _unsupported_layout(ds)
        if layout:
            raise VolumeReadError(folder, layout)
        for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
            if keyword not in ds:
                raise VolumeReadError(folder, f"DICOM image without {keyword}; cannot place it in world space")
    return images


def _unsupported_layout(ds: Any) -> str | None:
    """Why `ds` is not one slice per file (the layout this reader takes), or None when it is."""
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        sop = ds.get("SOPClassUID", None)
        return (f"enhanced multi-frame DICOM ({frames} frames in one file, {getattr(sop, 'name', 'unknown SOP class')}); "
                "this reader takes one slice per file: convert the series to NIfTI (e.g. with dcm2niix) and give that")
    if "MOSAIC" in [str(value).upper() for value in (ds.get("ImageType") or [])]:
        return ("Siemens MOSAIC image (several slices tiled into one image); this reader takes one slice per file: "
                "convert the series to NIfTI (e.g. with dcm2niix, which unpacks mosaics) and give that")
    return None


def _orientation(folder: Path, images: list[tuple[Path, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and slice normal (unit 3-vectors, LPS) shared by all `images`."""
    orientation = np.array([float(v) for v in images[0][1].ImageOrientationPatient], dtype=np.float64)
    for _, ds in images:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-4):
            raise VolumeReadError(folder, "slices have different ImageOrientationPatient; expected one orientation")
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    if not math.isclose(float(np.linalg.norm(normal)), 1.0, abs_tol=1e-3):
        raise VolumeReadError(folder, f"ImageOrientationPatient {orientation.tolist()} is not orthonormal")
    return row_cosine, column_cosine, normal


def _sort_along_normal(
    images: list[tuple[Path, Any]], normal: np.ndarray
) -> tuple[list[tuple[Path, Any]], np.ndarray, np.ndarray]:
    """`images` sorted along `normal`, with their positions (N, 3) [mm, LPS] and distances (N,) [mm] on it."""
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in images])
    distances = positions @ normal
    # Stable: slices at one distance keep file order, so checks report the same file every run.
    order = np.argsort(distances, kind="stable")
    return [images[i] for i in order], positions[order], distances[order]


def _matrix_geometry(folder: Path, images: list[tuple[Path, Any]]) -> tuple[list[float], int, int]:
    """PixelSpacing [mm] (between rows, between columns), Rows and Columns shared by all `images`."""
    pixel_spacing = [float(v) for v in images[0][1].PixelSpacing]  # (between rows, between columns)
    rows, columns = int(images[0][1].Rows), int(images[0][1].Columns)
    for _, ds in images:
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise VolumeReadError(folder, "slices have different Rows/Columns; expected one matrix size")
        if not np.allclose([float(v) for v in ds.PixelSpacing], pixel_spacing, rtol=1e-4):
            raise VolumeReadError(folder, "slices have different PixelSpacing; expected one")
    return pixel_spacing, rows, columns


def _slice_spacing(
    folder: Path,
    images: list[tuple[Path, Any]],
    positions: np.ndarray,
    distances: np.ndarray,
    normal: np.ndarray,
    pixel_spacing: list[float],
) -> float:
    """Distance [mm] between neighbouring sorted slices, checked to be even and along `normal`."""
    if len(images) == 1:
        # One slice has no neighbour to measure against: its nominal thickness stands in.
        return float(images[0][1].get("SliceThickness", 1.0) or 1.0)
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
    return slice_spacing


def _pixel_volume(folder: Path, images: list[tuple[Path, Any]], rows: int, columns: int) -> np.ndarray:
    """Rescaled pixel values as float64 (columns, rows, slices), in the modality's stored unit."""
    slices = []
    for index, (file, ds) in enumerate(images):
        where = f"slice {index} of {len(images)} (along the slice normal)"
        try:
            pixels = ds.pixel_array
        except Exception as error:
            reason = _pixel_error_reason(ds, error)
            raise VolumeReadError(folder, f"{where}: {reason}", f"{file.name}: {reason}: {error}") from None
        if pixels.ndim != 2 or pixels.shape != (rows, columns):
            kind = "multi-frame or colour DICOM (not supported)" if pixels.ndim > 2 else "pixel data"
            reason = f"{kind} of shape {pixels.shape}; expected one {rows}×{columns} frame per file"
            raise VolumeReadError(folder, f"{where}: {reason}", f"{file.name}: {reason}")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels.astype(np.float64) * slope + intercept)
    # pixel_array is [row, column]; our (i, j, k) is (column, row, slice).
    return np.stack(slices, axis=-1).transpose(1, 0, 2)


def _physical_units(first: Any, modality: str, array: np.ndarray, metadata: dict[str, Any]) -> tuple[np.ndarray, str]:
    """`array` in its physical unit (PET Bq/ml → SUV when possible) and that unit; notes SUV details in `metadata`."""
    entry = modalities.by_dicom(modality)
    if entry is not None and entry.hounsfield:
        return array, entry.unit
    if modality != "PT":
        return array, "a.u."
    units_tag = str(first.get("Units", "")).strip().upper()
    if units_tag in ("GML", "SUV"):
        return array, "SUV"
    if units_tag != "BQML":
        return array, "a.u."
    factor, why = suv_factor(first)
    if factor is None:
        metadata["suv_unavailable"] = why
        return array, "Bq/ml"
    metadata["suv_factor"] = factor
    return array * factor, "SUV"


def _pixel_error_reason(ds: Any, error: Exception) -> str:
    syntax = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return f"compressed transfer syntax {syntax.name} that no installed decoder could read ({error_kind(error)})"
    return f"truncated or corrupt pixel data ({error_kind(error)})"
