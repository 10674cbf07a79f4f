"""Inputs that cannot be read right are refused by name: an enhanced multi-frame file, a Siemens
MOSAIC series, and a training pair whose DICOM source and target are of different patients
(unless --allow-different-patients)."""

import numpy as np
import pydicom
import pytest

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.data.io import VolumeReadError, read_volume
from medgan_tf.data.pairs import PairRejected, convert_pair
from pipelines.options import add_arguments

from dicom_tools import scanner_series
from helpers import write_dicom_series

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def test_an_enhanced_multi_frame_file_is_refused_as_multi_frame(tmp_path):
    folder = scanner_series(tmp_path / "ct", "CT", AFFINE, shape=(8, 8, 2))
    for file in folder.iterdir():  # as an enhanced CT stores it: frames, and geometry in functional groups
        ds = pydicom.dcmread(str(file))
        ds.NumberOfFrames = 2
        ds.PerFrameFunctionalGroupsSequence = [pydicom.Dataset(), pydicom.Dataset()]
        del ds.ImageOrientationPatient, ds.ImagePositionPatient
        ds.PixelData = ds.PixelData * 2
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.EnhancedCTImageStorage
        ds.save_as(str(file))
    with pytest.raises(VolumeReadError, match="enhanced multi-frame DICOM .2 frames in one file, Enhanced CT Image Storage"):
        read_volume(folder)


def test_a_siemens_mosaic_is_refused_by_name(tmp_path):
    extra = {"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]}
    folder = write_dicom_series(tmp_path / "mosaic", np.zeros((12, 12, 2)), AFFINE, modality="MR", intercept=0.0,
                                extra=extra)
    with pytest.raises(VolumeReadError, match="Siemens MOSAIC") as error:
        read_volume(folder)
    assert "dcm2niix" in error.value.reason


@pytest.fixture
def pair(tmp_path):
    source = scanner_series(tmp_path / "pet", "PT", AFFINE, patient="PAT-1")
    return source, tmp_path


def data_config():
    return config_lib.override(presets.task_preset("pet_ct"), {"data.image_size": 16}).data


@pytest.mark.parametrize("differs", ["PatientID", "PatientName and PatientBirthDate", None])
def test_a_pair_of_two_patients_is_rejected_unless_allowed(differs, pair):
    source, root = pair
    target = scanner_series(root / "ct", "CT", AFFINE, seed=1, patient="PAT-1")
    for file in target.iterdir():
        ds = pydicom.dcmread(str(file))
        if differs == "PatientID":
            ds.PatientID = "PAT-2"
        elif differs:
            ds.PatientID, ds.PatientName, ds.PatientBirthDate = "", "Roe^Richard", "19500505"
            source_files = list(source.iterdir())
            for source_file in source_files:  # the source has no PatientID either
                other = pydicom.dcmread(str(source_file))
                other.PatientID = ""
                other.save_as(str(source_file))
        ds.save_as(str(file))
    if differs is None:
        records, _ = convert_pair(str(source), str(target), "key", data_config())
        assert records
        return
    with pytest.raises(PairRejected, match=f"different patients .their {differs} differ.") as error:
        convert_pair(str(source), str(target), "key", data_config())
    assert "PAT-2" not in error.value.reason and "Roe" not in error.value.reason
    records, _ = convert_pair(str(source), str(target), "key", data_config(), allow_different_patients=True)
    assert records


def test_the_converter_takes_the_flag():
    import argparse

    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--pairs", "p.csv", "--task", "pet_ct", "--out", "o", "--allow-different-patients"])
    assert args.allow_different_patients is True
