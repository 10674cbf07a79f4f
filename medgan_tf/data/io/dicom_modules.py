"""The modules a DICOM output shares across its slices: identity, the source's Patient, Study and
Frame of Reference, the target modality's series and image modules, and what a derived image says
about its origin (DICOM PS3.3 C.7, C.8, C.12).

`series_base` builds them; `source_image_reference` gives one slice its SourceImageSequence. The
source is `Volume.dicom_header` (the first slice of the series read, or of the `--like` series
of a NIfTI input) and `Volume.dicom_slices` (each source slice's SOP Class, SOP Instance and
position).
"""

from __future__ import annotations

import copy
import datetime
import logging
import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from medgan_tf import modalities

log = logging.getLogger(__name__)

MANUFACTURER = "medgan-tf"
SIBLINGS_READ = 200  # folders beside an output whose SeriesNumber a new series avoids

# Modules copied from the source header (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2, C.7.4.1).
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "OtherPatientIDsSequence", "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate",
    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
)
# Series tags of any source that describe the patient, not the acquisition (PS3.3 C.7.3.1).
PATIENT_SETUP_KEYWORDS = ("PatientPosition", "BodyPartExamined", "Laterality")
# PET series and image tags that keep SUV computable (PS3.3 C.8.9.1, C.8.9.2, C.8.9.4).
PET_KEYWORDS = (
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "RadiopharmaceuticalInformationSequence",
    "DecayCorrection", "CorrectedImage", "SeriesType", "CountsSource", "RandomsCorrectionMethod",
    "AttenuationCorrectionMethod", "ReconstructionMethod", "DecayFactor", "FrameReferenceTime",
    "ActualFrameDuration", "EnergyWindowRangeSequence", "CollimatorType", "PatientOrientationCodeSequence",
    "PatientGantryRelationshipCodeSequence",
)
# MR acquisition description (PS3.3 C.8.3.1), kept when MR becomes MR.
MR_KEYWORDS = (
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime",
    "EchoTrainLength", "InversionTime", "MagneticFieldStrength", "ImagedNucleus", "FlipAngle",
)
# Type 1 values and empty Type 2 tags of each image module not copied from a source (PS3.3 C.8).
MODALITY_DEFAULTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "CT": (("KVP", ""), ("AcquisitionNumber", "")),
    "PT": (("SeriesType", ["STATIC", "IMAGE"]), ("CorrectedImage", ["DECY", "ATTN"]), ("DecayCorrection", "NONE"),
           ("CountsSource", "EMISSION"), ("FrameReferenceTime", "0"), ("CollimatorType", ""),
           ("AcquisitionDate", ""), ("AcquisitionTime", ""), ("ActualFrameDuration", ""),
           ("RadiopharmaceuticalInformationSequence", []), ("PatientOrientationCodeSequence", []),
           ("PatientGantryRelationshipCodeSequence", [])),
    "MR": (("ScanningSequence", "RM"), ("SequenceVariant", "NONE"), ("ScanOptions", ""), ("MRAcquisitionType", "2D"),
           ("RepetitionTime", ""), ("EchoTime", ""), ("EchoTrainLength", "")),
}
# PatientPosition from the NM/PET orientation code sequences (SNOMED CT, and the older SRT codes).
_GANTRY = {"102540008": "HF", "F-10470": "HF", "102541007": "FF", "F-10480": "FF"}
_POSTURE = {"40199007": "S", "F-10340": "S", "1240000": "P", "F-10310": "P",
            "102536004": "DL", "F-10317": "DL", "102535000": "DR", "F-10319": "DR"}


def series_base(volume: Any, description: str | None, derivation: str | None, folder: Path | None) -> Any:
    """The Dataset of tags every slice of `volume`'s output series shares (no pixels, no position).

    `folder` is where the series will be written: earlier series of the same study beside it keep
    their SeriesNumbers (a new one is never one of them)."""
    from pydicom.uid import generate_uid

    import medgan_tf

    header = volume.dicom_header
    now = datetime.datetime.now()
    ds = _patient_study(header, now)
    ds.Modality = volume.modality
    ds.SOPClassUID = modalities.by_dicom(volume.modality).sop_class
    _copy(ds, header, PATIENT_SETUP_KEYWORDS)
    if _modality(header) == volume.modality:
        _copy(ds, header, {"PT": PET_KEYWORDS, "MR": MR_KEYWORDS}.get(volume.modality, ()))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = new_series_number(header, ds.StudyInstanceUID, folder)
    ds.SeriesDate = ds.get("SeriesDate") or now.strftime("%Y%m%d")
    ds.SeriesTime = ds.get("SeriesTime") or now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    text = volume.metadata.get("translated_by", f"{MANUFACTURER} output")
    ds.SeriesDescription = (description or text)[:64]
    ds.ImageType = list(modalities.by_dicom(volume.modality).dicom_encoding.image_type)
    ds.Manufacturer, ds.SoftwareVersions = MANUFACTURER, medgan_tf.__version__
    ds.BurnedInAnnotation = "NO"
    position = ds.get("PatientPosition") or patient_position(header)
    if volume.modality == "PT":  # the NM/PET orientation code sequences say it instead (C.8.4.6)
        ds.pop("PatientPosition", None)
        if position and not ds.get("PatientOrientationCodeSequence"):
            _orientation_codes(ds, position)
    else:
        ds.PatientPosition = position
    for keyword, value in (("BodyPartExamined", ""), ("Laterality", "")):
        if keyword not in ds:
            setattr(ds, keyword, value)
    for keyword, value in MODALITY_DEFAULTS.get(volume.modality, ()):
        if keyword not in ds or (ds[keyword].VR != "SQ" and ds[keyword].value in (None, "") and value != ""):
            setattr(ds, keyword, copy.deepcopy(value))
    _derivation(ds, derivation or text, header, volume.dicom_slices)
    return ds


def _modality(header: Any) -> str:
    return str(header.get("Modality", "")) if header is not None else ""


def _copy(ds: Any, header: Any, keywords: Iterable[str]) -> None:
    for keyword in keywords:
        if header is not None and keyword in header:
            setattr(ds, keyword, copy.deepcopy(header[keyword].value))


def _patient_study(header: Any, now: datetime.datetime) -> Any:
    """Patient, General Study and Frame of Reference modules: the source header's, or (no header)
    a minimal new one. Type 2 tags the source lacks stay empty; a missing UID is made new."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    if header is None:
        log.info("the source has no DICOM header (e.g. NIfTI) and no --like series: the output is a new study "
                 "(a minimal new Patient, PatientID ANONYMOUS, new StudyInstanceUID and FrameOfReferenceUID)")
        ds.PatientName, ds.PatientID = "ANONYMOUS", "ANONYMOUS"
        ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    else:
        _copy(ds, header, PATIENT_STUDY_KEYWORDS)
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


def new_series_number(header: Any, study_uid: str, folder: Path | None) -> int:
    """A SeriesNumber no series known to be in the study has: not the source's, not one of the
    series of this study written beside `folder`; drawn from 1001…99999 (after the scanner's
    own numbers, so viewers list derived series last)."""
    used = {int(header.get("SeriesNumber") or 0)} if header is not None else set()
    used |= set(_sibling_series_numbers(folder, study_uid))
    draw = random.SystemRandom()
    while True:
        number = draw.randint(1001, 99999)
        if number not in used:
            return number


def _sibling_series_numbers(folder: Path | None, study_uid: str) -> Iterable[int]:
    """SeriesNumbers of the DICOM series of study `study_uid` in the folders beside `folder` (up to
    `SIBLINGS_READ` of them: a batch of many patients writes many folders of other studies, and
    reading them all for each output would grow with the square of their number)."""
    import itertools

    import pydicom

    if folder is None or not folder.parent.is_dir():
        return
    for sibling in itertools.islice(folder.parent.iterdir(), SIBLINGS_READ):
        first = next((p for p in sorted(sibling.iterdir()) if p.is_file()), None) if sibling.is_dir() else None
        if first is None:
            continue
        try:
            ds = pydicom.dcmread(str(first), stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesNumber"])
        except Exception:  # noqa: BLE001 — not a DICOM series: not a number to avoid
            continue
        if str(ds.get("StudyInstanceUID", "")) == study_uid and ds.get("SeriesNumber") not in (None, ""):
            yield int(ds.SeriesNumber)


def patient_position(header: Any) -> str:
    """The source's PatientPosition, or the one its NM/PET orientation code sequences give
    (headfirst + supine → HFS, …); "" when neither says."""
    if header is None:
        return ""
    if header.get("PatientPosition"):
        return str(header.PatientPosition)
    try:
        gantry = _GANTRY.get(str(header.PatientGantryRelationshipCodeSequence[0].CodeValue))
        orientation = header.PatientOrientationCodeSequence[0]
        modifier = orientation.PatientOrientationModifierCodeSequence[0]
        posture = _POSTURE.get(str(modifier.CodeValue))
    except (AttributeError, IndexError, KeyError):
        return ""
    return f"{gantry}{posture}" if gantry and posture else ""


def _orientation_codes(ds: Any, position: str) -> None:
    """PatientOrientationCodeSequence and PatientGantryRelationshipCodeSequence of a
    PatientPosition such as HFS (recumbent, supine/prone/decubitus; headfirst/feet-first)."""
    from pydicom.sr.codedict import codes

    gantry = {"HF": codes.SCT.Headfirst, "FF": codes.SCT.FeetFirst}.get(position[:2])
    posture = {"S": codes.SCT.Supine, "P": codes.SCT.Prone, "DL": codes.SCT.LeftLateralDecubitus,
               "DR": codes.SCT.RightLateralDecubitus}.get(position[2:])
    if gantry is None or posture is None:
        return
    orientation = _code_item(codes.SCT.Recumbent)
    orientation.PatientOrientationModifierCodeSequence = [_code_item(posture)]
    ds.PatientOrientationCodeSequence = [orientation]
    ds.PatientGantryRelationshipCodeSequence = [_code_item(gantry)]


def _derivation(ds: Any, text: str, header: Any, slices: Any) -> None:
    """DerivationDescription and DerivationCodeSequence (image processing, spatial resampling,
    PS3.16 CID 7203), and the source series in ReferencedSeriesSequence (Common Instance Reference)."""
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    ds.DerivationDescription = text[:1024]
    ds.DerivationCodeSequence = [_code_item(codes.DCM.ImageProcessing), _code_item(codes.DCM.SpatialResampling)]
    if header is None or not header.get("SeriesInstanceUID") or not slices:
        return
    series = Dataset()
    series.SeriesInstanceUID = header.SeriesInstanceUID
    series.ReferencedInstanceSequence = [_instance_item(sop_class, sop_instance) for sop_class, sop_instance, _ in slices]
    if str(header.get("StudyInstanceUID", "")) == str(ds.StudyInstanceUID):
        ds.ReferencedSeriesSequence = [series]
    else:  # a --like series of another study: the source is referenced with its own study
        study = Dataset()
        study.StudyInstanceUID = header.StudyInstanceUID
        study.ReferencedSeriesSequence = [series]
        ds.StudiesContainingOtherReferencedInstancesSequence = [study]


def source_image_reference(slices: Any, position: np.ndarray, tolerance_mm: float) -> list[Any]:
    """SourceImageSequence of the output slice at `position` (LPS mm): the source instance at the
    same place (within `tolerance_mm`), or none when no source slice is there."""
    from pydicom.sr.codedict import codes

    for sop_class, sop_instance, source_position in slices or ():
        if float(np.max(np.abs(np.asarray(source_position) - position))) <= tolerance_mm:
            item = _instance_item(sop_class, sop_instance)
            item.PurposeOfReferenceCodeSequence = [_code_item(codes.DCM.SourceImageForImageProcessingOperation)]
            return [item]
    return []


def _instance_item(sop_class: str, sop_instance: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
    return item


def _code_item(code: Any) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item
