"""DICOM series as scanners write them, and the real tools that judge DICOM: dciodvfy (Debian's
dicom3tools) for conformance to the IODs, dcm2niix (in helpers) for values and geometry. A test
that needs a tool that is not installed skips and says how to install it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from helpers import smooth_volume, write_dicom_series

INSTALL_HINT = "apt-get install dicom3tools (Debian; `make test` installs it where apt-get works)"


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def scanner_header(modality: str, patient: str = "PAT-7") -> dict:
    """The header of a series as a scanner exports it: patient, study, frame of reference and
    the modality's own acquisition tags."""
    header = {
        "PatientName": "Doe^Jane", "PatientID": patient, "PatientBirthDate": "19600101", "PatientSex": "F",
        "StudyInstanceUID": generate_uid(), "StudyDate": "20260101", "StudyTime": "090000", "StudyID": "1",
        "ReferringPhysicianName": "", "AccessionNumber": "A1", "FrameOfReferenceUID": generate_uid(),
        "PositionReferenceIndicator": "", "SeriesNumber": 3, "Manufacturer": "ACME", "Laterality": "",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "PatientPosition": "HFS", "AcquisitionNumber": 1,
    }
    if modality == "CT":
        header.update(KVP="120")
    elif modality == "MR":
        header.update(ImageType=["ORIGINAL", "PRIMARY", "M"], ScanningSequence="SE", SequenceVariant="NONE",
                      ScanOptions="", MRAcquisitionType="2D", RepetitionTime="500", EchoTime="12",
                      EchoTrainLength="1", MagneticFieldStrength="3")
    else:
        drug = Dataset()
        drug.RadionuclideTotalDose, drug.RadionuclideHalfLife, drug.RadiopharmaceuticalStartTime = "370000000", "6586.2", "090000"
        drug.RadionuclideCodeSequence = [code("C-111A1", "SRT", "^18^Fluorine")]
        orientation = code("F-10450", "SRT", "recumbent")
        orientation.PatientOrientationModifierCodeSequence = [code("F-10340", "SRT", "supine")]
        del header["PatientPosition"]
        header.update(ImageType=["ORIGINAL", "PRIMARY"], Units="BQML", PatientWeight="70", DecayCorrection="START",
                      SeriesDate="20260101", SeriesTime="100000", AcquisitionDate="20260101", AcquisitionTime="100000",
                      SeriesType=["STATIC", "IMAGE"], CorrectedImage=["DECY", "ATTN"], CountsSource="EMISSION",
                      CollimatorType="NONE", FrameReferenceTime="0", ActualFrameDuration="300000", DecayFactor="1",
                      RadiopharmaceuticalInformationSequence=[drug], PatientOrientationCodeSequence=[orientation],
                      PatientGantryRelationshipCodeSequence=[code("F-10470", "SRT", "headfirst")])
    return header


# Values a source of each modality holds (its unit): CT in HU, MR in a.u., PET in Bq/ml.
SOURCE_RANGES = {"CT": (-1000.0, 1500.0), "MR": (0.0, 1200.0), "PT": (100.0, 20000.0)}


def scanner_series(folder: Path, modality: str, affine: np.ndarray, shape=(20, 16, 3), seed: int = 0,
                   patient: str = "PAT-7") -> Path:
    """A DICOM series of `modality` ("CT", "MR", "PT") on `affine`, with `scanner_header`."""
    low, high = SOURCE_RANGES[modality]
    array = np.round(smooth_volume(shape, np.random.default_rng(seed), low, high))
    intercept = -1024.0 if modality == "CT" else 0.0
    return write_dicom_series(folder, array, affine, modality=modality, intercept=intercept,
                              extra=scanner_header(modality, patient))


def dciodvfy_errors(folder: Path) -> set[str]:
    """The distinct errors dciodvfy reports for the files of the series in `folder` (a pytest
    skip naming the package when dciodvfy is not installed)."""
    import pytest

    binary = shutil.which("dciodvfy")
    if binary is None:
        pytest.skip(f"dciodvfy is not installed: {INSTALL_HINT}")
    errors = set()
    for file in sorted(folder.iterdir()):
        run = subprocess.run([binary, str(file)], capture_output=True, text=True, timeout=60)
        errors |= {line.strip() for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")}
    return errors
