"""Writing a Volume as a DICOM series: one file per k-slice, a new series of the source's study.

What the files carry (README "From the scanner and back" lists every tag):

- new identity: SeriesInstanceUID, SOPInstanceUIDs (pydicom `generate_uid`, never the source's),
  SeriesNumber (the source's + 1000), InstanceNumber 1…K along the slice normal;
- the source's Patient, General Study and Frame of Reference modules, copied from
  `Volume.dicom_header` (a volume read from a NIfTI file has none: a minimal new Patient/Study
  with PatientID "ANONYMOUS" and new Study and Frame of Reference UIDs is made, and logged);
- the geometry of the volume's own grid: ImageOrientationPatient, ImagePositionPatient,
  PixelSpacing, SliceThickness and SpacingBetweenSlices from its affine (RAS+ → LPS);
- ImageType DERIVED\\SECONDARY, SeriesDescription and DerivationDescription naming the model;
- values as 16-bit integers with one RescaleSlope/Intercept for the whole series: CT as int16 in
  HU (slope 1, intercept −1024 whenever the range fits), PET as Units BQML (SUV is turned back
  into Bq/ml with the source header's factor, `dicom_headers.suv_factor`, and the radiopharmaceutical and
  decay tags are copied so SUV stays computable; intercept 0, as the PET image module requires),
  MR in the volume's own units.

The series is built in a temporary sibling folder and renamed into place, so a folder with this
name is either complete or absent. An existing folder is replaced only when it is empty or holds
a series written here before (every file a DICOM of Manufacturer "medgan-tf"); anything else is
refused. A replacement killed midway leaves the earlier series in place, or moved aside where the
file system cannot swap two folders in one step: the next write puts it back, and removes the work
folders of dead runs first (`medgan_tf.files.recover_leftovers`).
"""

from __future__ import annotations

import copy
import datetime
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medgan_tf import files, modalities
from medgan_tf.data.io import Volume
from medgan_tf.data.io.dicom_headers import LPS_TO_RAS, suv_factor

log = logging.getLogger(__name__)

MANUFACTURER = "medgan-tf"

# Modules copied from the source header (DICOM PS3.3 C.7.1.1, C.7.2.1, C.7.2.2, C.7.4.1).
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDsSequence", "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate",
    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
)
# PET series and image tags that keep SUV computable (PS3.3 C.8.9.1, C.8.9.2, C.8.9.4).
PET_KEYWORDS = (
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "RadiopharmaceuticalInformationSequence",
    "DecayCorrection", "CorrectedImage", "SeriesType", "CountsSource", "RandomsCorrectionMethod",
    "AttenuationCorrectionMethod", "ReconstructionMethod", "DecayFactor", "FrameReferenceTime",
    "ActualFrameDuration", "EnergyWindowRangeSequence", "PatientGantryRelationshipCodeSequence",
)
# MR acquisition description (PS3.3 C.8.3.1), kept when MR becomes MR.
MR_KEYWORDS = (
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime",
    "EchoTrainLength", "InversionTime", "MagneticFieldStrength", "ImagedNucleus", "FlipAngle",
)


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
    datasets = series_datasets(volume, description=description, derivation=derivation)
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


def series_datasets(volume: Volume, *, description: str | None = None, derivation: str | None = None) -> list[Any]:
    """The K pydicom Datasets (with file meta) of `volume` as a DICOM series, in slice order."""
    entry = modalities.by_dicom(volume.modality)
    if entry is None:
        codes = sorted({m.dicom for _, m in modalities.MODALITIES.items()})
        raise ValueError(f"cannot write modality {volume.modality!r} as DICOM; expected one of {', '.join(codes)}")
    hounsfield = entry.hounsfield
    geometry = slice_geometry(volume.affine)
    values, unit_tags = _values_to_store(volume)
    stored, slope, intercept = quantize(values, signed=hounsfield or float(np.min(values)) < 0,
                                        preferred_intercept=-1024.0 if hounsfield else 0.0,
                                        fixed_intercept=not hounsfield, unit_slope=hounsfield)
    base = _series_base(volume, description, derivation)
    base.update(unit_tags)
    base.RescaleSlope, base.RescaleIntercept = _ds(slope), _ds(intercept)
    if hounsfield:
        base.RescaleType = "HU"
    _pixel_description(base, signed=stored.dtype == np.int16)
    base.Rows, base.Columns = stored.shape[1], stored.shape[0]  # i runs along a row: Columns = I
    datasets = []
    for k in range(stored.shape[2]):
        ds = copy.deepcopy(base)
        _slice_tags(ds, geometry, k, stored.shape[2])
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


def quantize(values: np.ndarray, *, signed: bool, preferred_intercept: float = 0.0,
             fixed_intercept: bool = False, unit_slope: bool = False) -> tuple[np.ndarray, float, float]:
    """float `values` → (16-bit integers, slope, intercept) with values ≈ stored · slope + intercept.

    With `unit_slope` (CT in HU), slope 1 and `preferred_intercept` whenever the range fits:
    exact to 1 HU, as scanners store CT. Otherwise the range is spread over the integer range
    (SUV 0…20 or MR a.u. keep 16 bits of precision), so the error is at most half a slope. With
    `fixed_intercept` the intercept stays `preferred_intercept` (PET requires 0). The slope is
    the value the DS tag carries, so readers get exactly what is computed here.
    """
    dtype = np.int16 if signed else np.uint16
    info = np.iinfo(dtype)
    low, high = float(np.min(values)), float(np.max(values))
    intercept = preferred_intercept
    if unit_slope and low - intercept >= info.min and high - intercept <= info.max:
        slope = 1.0
    elif fixed_intercept:  # only values below the intercept need the negative range (none for uint16)
        slope = max(max(intercept - low, 0.0) / max(-info.min, 1), (high - intercept) / info.max, 1e-12)
    elif high == low:  # a constant: stored 0 everywhere
        slope, intercept = 1.0, low
    else:
        slope = (high - low) / (info.max - info.min)
        intercept = low - info.min * slope
    if slope != 1.0:  # rounded as the DS tag stores it, a hair up so nothing overflows
        slope = float(_ds(slope * (1 + 1e-9)))
    intercept = float(_ds(intercept))
    stored = np.clip(np.round((np.asarray(values, np.float64) - intercept) / slope), info.min, info.max)
    return stored.astype(dtype), slope, intercept


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


def _series_base(volume: Volume, description: str | None, derivation: str | None) -> Any:
    """The tags every file of the series shares (identity, patient/study, modality modules)."""
    from pydicom.uid import generate_uid

    import medgan_tf

    header = volume.dicom_header
    now = datetime.datetime.now()
    ds = _patient_study(header, now)
    ds.Modality = volume.modality
    source_modality = str(header.get("Modality", "")) if header is not None else ""
    same = {"PT": PET_KEYWORDS, "MR": MR_KEYWORDS}.get(volume.modality, ()) if source_modality == volume.modality else ()
    for keyword in same:
        if keyword in header:
            setattr(ds, keyword, copy.deepcopy(header[keyword].value))
    ds.SOPClassUID = modalities.by_dicom(volume.modality).sop_class
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = (int(header.get("SeriesNumber") or 0) if header is not None else 0) + 1000
    ds.SeriesDate = ds.get("SeriesDate") or now.strftime("%Y%m%d")
    ds.SeriesTime = ds.get("SeriesTime") or now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    text = volume.metadata.get("translated_by", f"{MANUFACTURER} output")
    ds.SeriesDescription = (description or text)[:64]
    ds.DerivationDescription = (derivation or text)[:1024]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Manufacturer, ds.SoftwareVersions = MANUFACTURER, medgan_tf.__version__
    ds.BodyPartExamined = header.get("BodyPartExamined", "") if header is not None else ""
    ds.PatientPosition = header.get("PatientPosition", "") if header is not None else ""
    _modality_defaults(ds)
    return ds


def _patient_study(header: Any, now: datetime.datetime) -> Any:
    """Patient, General Study and Frame of Reference modules: the source header's, or (no header)
    a minimal new one. Type 2 tags the source lacks stay empty; a missing UID is made new."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    if header is None:
        log.info("the source has no DICOM header (e.g. NIfTI): the series gets a new minimal Patient and Study "
                 "(PatientID ANONYMOUS, new StudyInstanceUID and FrameOfReferenceUID)")
        ds.PatientName, ds.PatientID = "ANONYMOUS", "ANONYMOUS"
        ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    else:
        for keyword in PATIENT_STUDY_KEYWORDS:
            if keyword in header:
                setattr(ds, keyword, copy.deepcopy(header[keyword].value))
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        if not ds.get(keyword):
            if header is not None:
                log.warning("the source DICOM has no %s: the output gets a new one", keyword)
            setattr(ds, keyword, generate_uid())
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _modality_defaults(ds: Any) -> None:
    """Type 1/2 tags of the modality's image module not copied from the source (PS3.3 C.8)."""
    if ds.Modality == "CT":
        ds.KVP, ds.AcquisitionNumber = "", ""
    elif ds.Modality == "PT":
        ds.SeriesType = ds.get("SeriesType") or ["STATIC", "IMAGE"]
        ds.CorrectedImage = ds.get("CorrectedImage") or ["DECY", "ATTN"]
        ds.DecayCorrection = ds.get("DecayCorrection") or "NONE"
        ds.CountsSource = ds.get("CountsSource") or "EMISSION"
        ds.FrameReferenceTime = ds.get("FrameReferenceTime") or "0"
    else:
        for keyword, value in (("ScanningSequence", "RM"), ("SequenceVariant", "NONE"), ("ScanOptions", ""),
                               ("MRAcquisitionType", "2D"), ("EchoTime", ""), ("EchoTrainLength", "")):
            if keyword not in ds:
                setattr(ds, keyword, value)


def _pixel_description(ds: Any, signed: bool) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0


def _slice_tags(ds: Any, geometry: dict[str, Any], k: int, num_slices: int) -> None:
    """Position, numbering, new SOP Instance UID and file meta of slice `k` (of `num_slices`)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    position = geometry["origin"] + k * geometry["step"]
    # Numbered along the slice normal (the order viewers sort by), whichever way k runs.
    ascending = float(geometry["step"] @ geometry["normal"]) > 0
    number = k + 1 if ascending else num_slices - k
    ds.ImageOrientationPatient = [_ds(v) for v in (*geometry["row_cosine"], *geometry["column_cosine"])]
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing"]]
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(geometry["slice_spacing"])
    ds.SliceLocation = _ds(float(position @ geometry["normal"]))
    ds.InstanceNumber = number
    if ds.Modality == "PT":
        ds.ImageIndex, ds.NumberOfSlices = number, num_slices
    ds.SOPInstanceUID = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta


def _ds(value: float) -> str:
    """A float as a DICOM decimal string (≤ 16 characters)."""
    text = f"{float(value):.10g}"
    if len(text) > 16:
        text = f"{float(value):.8g}"
    return "0" if text == "-0" else text
