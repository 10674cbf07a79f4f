"""Writing a Volume as a DICOM series: one file per k-slice, a new series of the source's study.

What the files carry (README "What the output series carries" lists every tag):

- new identity: SeriesInstanceUID, SOPInstanceUIDs (pydicom `generate_uid`, never the source's),
  a SeriesNumber no known series of the study has, InstanceNumber 1…K along the slice normal;
- the source's Patient, General Study and Frame of Reference modules, copied from
  `Volume.dicom_header` (a volume read from a NIfTI file has none: a minimal new Patient/Study
  with PatientID "ANONYMOUS" and new Study and Frame of Reference UIDs is made, and logged);
- where it came from: SourceImageSequence per slice, ReferencedSeriesSequence,
  DerivationCodeSequence and DerivationDescription (`dicom_modules`);
- the geometry of the volume's own grid: ImageOrientationPatient, ImagePositionPatient,
  PixelSpacing, SliceThickness and SpacingBetweenSlices from its affine (RAS+ → LPS);
- values as 16-bit integers with one RescaleSlope/Intercept for the whole series and the
  modality's windows, as its entry in the modality table says (`dicom_values`): CT as int16 in HU,
  PET as Units BQML (SUV is turned back into Bq/ml with the source header's factor,
  `dicom_headers.suv_factor`, and the radiopharmaceutical and decay tags are copied so SUV stays
  computable; intercept 0, as the PET image module requires), MR in the volume's own units.

The series is built in a temporary sibling folder and renamed into place, so a folder with this
name is either complete or absent. An existing folder is replaced only when it is empty or holds
a series written here before (every file a DICOM of Manufacturer "medgan-tf"); anything else is
refused. A replacement killed midway leaves the earlier series in place, or moved aside where the
file system cannot swap two folders in one step: the next write puts it back, and removes the work
folders of dead runs first (`medgan_tf.files.recover_leftovers`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf import files, modalities
from medgan_tf.data.io import Volume
from medgan_tf.data.io.dicom_headers import LPS_TO_RAS, suv_factor
from medgan_tf.data.io.dicom_modules import MANUFACTURER, series_base, source_image_reference
from medgan_tf.data.io.dicom_values import decimal_string, encode


def write_dicom_series(
    volume: Volume, folder: str | Path, *, description: str | None = None, derivation: str | None = None
) -> Path:
    """Write `volume` (I, J, K) as a DICOM series folder `folder`, atomically (see the module doc).

    `description` (SeriesDescription, ≤ 64 characters) and `derivation` (DerivationDescription)
    default to `volume.metadata["translated_by"]`. Raises ValueError for a volume DICOM cannot
    hold (a modality other than CT/PT/MR, a sheared grid) and FileExistsError for a folder that
    is neither empty nor an earlier output of this writer.
    """
    folder = Path(folder)
    files.recover_leftovers(folder.parent, [folder.name])  # an earlier series a killed run moved aside comes back
    check_destination(folder)
    datasets = series_datasets(volume, description=description, derivation=derivation, folder=folder)
    with files.atomic_folder(folder) as temporary:
        for number, ds in enumerate(datasets, start=1):
            ds.save_as(temporary / f"IM{number:05d}.dcm", enforce_file_format=True)
    return folder


def check_destination(folder: Path) -> None:
    """Refuse a destination that is a file, or a folder holding anything but an earlier series of ours."""
    if folder.is_file():
        raise FileExistsError(f"{folder} is a file; a DICOM output is a folder")
    if folder.is_dir() and not is_replaceable(folder):
        raise FileExistsError(
            f"{folder} is a folder that holds other files; a DICOM output replaces only an empty folder or "
            "an earlier medgan-tf series"
        )


def is_replaceable(folder: Path) -> bool:
    """Whether `folder` is empty or holds only DICOM files this writer made (Manufacturer medgan-tf)."""
    import pydicom

    for entry in folder.iterdir():
        if not entry.is_file():
            return False
        try:
            ds = pydicom.dcmread(str(entry), stop_before_pixels=True, specific_tags=["Manufacturer"])
        except Exception:  # noqa: BLE001 — anything unreadable is not ours to delete
            return False
        if str(ds.get("Manufacturer", "")) != MANUFACTURER:
            return False
    return True


def series_datasets(volume: Volume, *, description: str | None = None, derivation: str | None = None,
                    folder: Path | None = None) -> list[Any]:
    """The K pydicom Datasets (with file meta) of `volume` as a DICOM series, in slice order;
    `folder` (where they will be written) keeps the SeriesNumber apart from the series beside it."""
    entry = modalities.by_dicom(volume.modality)
    if entry is None:
        codes = sorted({m.dicom for _, m in modalities.MODALITIES.items()})
        raise ValueError(f"cannot write modality {volume.modality!r} as DICOM; expected one of {', '.join(codes)}")
    geometry = slice_geometry(volume.affine)
    values, unit_tags = _values_to_store(volume)
    stored, pixel_tags = encode(values, entry.dicom_encoding)
    base = series_base(volume, description, derivation, folder)
    for keyword, value in {**unit_tags, **pixel_tags}.items():
        setattr(base, keyword, value)
    if entry.hounsfield:
        base.RescaleType = "HU"
    base.Rows, base.Columns = stored.shape[1], stored.shape[0]  # i runs along a row: Columns = I
    tolerance = 0.01 * min(geometry["pixel_spacing"] + (geometry["slice_spacing"],))
    datasets = []
    for k in range(stored.shape[2]):
        ds = copy.deepcopy(base)
        position = _slice_tags(ds, geometry, k, stored.shape[2])
        reference = source_image_reference(volume.dicom_slices, position, tolerance)
        if reference:
            ds.SourceImageSequence = reference
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # [row, column]
        datasets.append(ds)
    return datasets


def slice_geometry(affine: Any) -> dict[str, Any]:
    """DICOM geometry of a RAS+ voxel→world `affine`: row/column cosines, PixelSpacing (between
    rows, between columns) and the slice step [mm, LPS]; ValueError for a grid DICOM cannot hold."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)  # the flip is its own inverse
    axes = lps[:3, :3]
    lengths = np.linalg.norm(axes, axis=0)
    cosines = axes / lengths
    if abs(float(cosines[:, 0] @ cosines[:, 1])) > 1e-4:
        raise ValueError("the volume's i and j axes are not perpendicular; a DICOM image's rows and columns are")
    normal = np.cross(cosines[:, 0], cosines[:, 1])
    if abs(abs(float(normal @ cosines[:, 2])) - 1.0) > 1e-4:
        raise ValueError("the volume's slices are sheared (k not along the slice normal); DICOM cannot hold that grid")
    return {
        "row_cosine": cosines[:, 0],
        "column_cosine": cosines[:, 1],
        "normal": normal,
        "pixel_spacing": (float(lengths[1]), float(lengths[0])),
        "origin": lps[:3, 3],
        "step": lps[:3, 2],
        "slice_spacing": float(lengths[2]),
    }


def _values_to_store(volume: Volume) -> tuple[np.ndarray, dict[str, Any]]:
    """The values the files hold and the tags that name their unit; PET SUV back to Bq/ml when it can."""
    array = np.asarray(volume.array, dtype=np.float64)
    if volume.modality != "PT":
        return array, {}
    header = volume.dicom_header
    if volume.unit == "SUV":
        factor = suv_factor(header)[0] if header is not None and str(header.get("Modality", "")) == "PT" else None
        if factor:
            return array / factor, {"Units": "BQML"}
        return array, {"Units": "GML"}  # SUV body weight: g/ml
    return array, {"Units": "BQML" if volume.unit == "Bq/ml" else "CNTS"}


def _slice_tags(ds: Any, geometry: dict[str, Any], k: int, num_slices: int) -> np.ndarray:
    """Position, numbering, new SOP Instance UID and file meta of slice `k` (of `num_slices`);
    returns its position [mm, LPS]."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    position = geometry["origin"] + k * geometry["step"]
    # Numbered along the slice normal (the order viewers sort by), whichever way k runs.
    ascending = float(geometry["step"] @ geometry["normal"]) > 0
    number = k + 1 if ascending else num_slices - k
    ds.ImageOrientationPatient = [decimal_string(v) for v in (*geometry["row_cosine"], *geometry["column_cosine"])]
    ds.ImagePositionPatient = [decimal_string(v) for v in position]
    ds.PixelSpacing = [decimal_string(v) for v in geometry["pixel_spacing"]]
    ds.SliceThickness = ds.SpacingBetweenSlices = decimal_string(geometry["slice_spacing"])
    ds.SliceLocation = decimal_string(float(position @ geometry["normal"]))
    ds.InstanceNumber = number
    if ds.Modality == "PT":
        ds.ImageIndex, ds.NumberOfSlices = number, num_slices
    ds.SOPInstanceUID = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return position
