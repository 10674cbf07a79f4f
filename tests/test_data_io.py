"""Readers: DICOM series (pydicom) and NIfTI (nibabel) behind `read_volume`.

`helpers.write_dicom_series` writes a known volume as a DICOM series with any orientation, so the
reader's geometry is checked against the affine we started from.
"""

from __future__ import annotations


import numpy as np
import pytest

from medgan_tf.data.io import Volume, VolumeReadError, read_volume, write_nifti

from helpers import oblique_affine, smooth_volume, write_dicom_series  # noqa: E402  (tests/ is on sys.path)

def test_dicom_series_geometry_and_values_match_the_source_volume(tmp_path):
    rng = np.random.default_rng(1)
    shape, affine = (20, 16, 7), oblique_affine()
    array = np.round(smooth_volume(shape, rng, -1000, 1500))
    volume = read_volume(write_dicom_series(tmp_path / "ct", array, affine))
    assert volume.modality == "CT" and volume.unit == "HU"
    assert volume.array.dtype == np.float32 and volume.array.shape == shape
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))
    np.testing.assert_allclose(volume.spacing, (0.9, 1.3, 2.5), atol=1e-6)


def test_dicom_series_in_reverse_slice_order_reads_the_same_world_volume(tmp_path):
    rng = np.random.default_rng(2)
    affine = oblique_affine()
    array = np.round(smooth_volume((12, 10, 5), rng, 0, 900))
    # Same voxels, k axis reversed: position of the last slice, negative normal step.
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, 3] + 11 * affine[:3, 0] + 4 * affine[:3, 2]
    flipped[:3, 2] = -affine[:3, 2]
    flipped[:3, 0] = -affine[:3, 0]  # keep it right-handed for the DICOM writer
    reordered = array[::-1, :, ::-1]
    volume = read_volume(write_dicom_series(tmp_path / "ct", reordered, flipped))
    # Every voxel read must hold the value of the original voxel at the same world point.
    indices = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1).reshape(-1, 3)
    world = indices @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    original = np.rint((world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(int)
    np.testing.assert_array_equal(volume.array.reshape(-1), array[tuple(original.T)].astype(np.float32))


def test_pet_dicom_in_bqml_becomes_suv_with_decay_corrected_dose(tmp_path):
    from pydicom.dataset import Dataset

    info = Dataset()
    info.RadionuclideTotalDose = "350000000"
    info.RadionuclideHalfLife = "6586.2"
    info.RadiopharmaceuticalStartTime = "100000"
    extra = {"Units": "BQML", "DecayCorrection": "START", "PatientWeight": "70", "SeriesTime": "110000"}
    from pydicom.sequence import Sequence

    extra["RadiopharmaceuticalInformationSequence"] = Sequence([info])
    array = np.full((8, 8, 3), 20000.0)
    volume = read_volume(write_dicom_series(tmp_path / "pet", array, oblique_affine(), modality="PT", slope=1.0, intercept=0.0, extra=extra))
    expected_factor = 70000.0 / (350e6 * 2 ** (-3600 / 6586.2))  # g / Bq at scan start
    assert volume.unit == "SUV"
    np.testing.assert_allclose(volume.array, 20000.0 * expected_factor, rtol=1e-5)
    # Without weight the values stay in Bq/ml and the reader says so.
    extra["PatientWeight"] = "0"
    volume = read_volume(write_dicom_series(tmp_path / "pet2", array, oblique_affine(), modality="PT", intercept=0.0, extra=extra))
    assert volume.unit == "Bq/ml" and np.allclose(volume.array, 20000.0)


def test_nifti_round_trip_keeps_affine_modality_and_unit(tmp_path):
    rng = np.random.default_rng(3)
    volume = Volume(smooth_volume((9, 8, 5), rng).astype(np.float32), oblique_affine(), "PT", "Bq/ml")
    read = read_volume(write_nifti(volume, tmp_path / "v.nii.gz"))
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.affine, volume.affine, atol=1e-5)
    assert (read.modality, read.unit) == ("PT", "Bq/ml")


def _nifti(path, array, affine=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.eye(4) if affine is None else affine), str(path))
    return path


def _nifti_with_sform(path, sform):
    """A NIfTI whose header holds `sform` as is (nibabel refuses to build an image from a singular
    affine, but files with one exist: a zero voxel size, a broken export)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 3))
    header.set_data_dtype(np.float32)
    header["sform_code"], header["qform_code"] = 1, 0
    header["srow_x"], header["srow_y"], header["srow_z"] = sform[0], sform[1], sform[2]
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), None, header), str(path))
    return path


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "missing.nii.gz", "does not exist"),
        (lambda d: _nifti(d / "four_d.nii.gz", np.zeros((4, 4, 3, 2))), "4-D"),
        (lambda d: _nifti(d / "nan.nii.gz", np.where(np.arange(48).reshape(4, 4, 3) == 5, np.nan, 1.0)), "NaN/inf"),
        (lambda d: (d / "junk.nii").write_bytes(b"not an image at all") and d / "junk.nii", "not a readable NIfTI"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty folder"),
        (lambda d: _nifti_with_sform(d / "flat.nii.gz", np.diag([1.0, 1.0, 0.0, 1.0])), "singular voxel-to-world affine"),
        (lambda d: _nifti_with_sform(d / "skew.nii.gz", np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])), "singular"),
        (lambda d: _nifti_with_sform(d / "nan.nii.gz", np.array([[np.nan, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1, 0]])), "NaN/inf"),
        (lambda d: _nifti_with_sform(d / "inf.nii.gz", np.array([[1.0, 0, 0, np.inf], [0, 1, 0, 0], [0, 0, 1, 0]])), "NaN/inf"),
    ],
)
def test_bad_inputs_raise_one_line_reasons(tmp_path, make, expected):
    with pytest.raises(VolumeReadError) as caught:
        read_volume(make(tmp_path))
    assert expected in caught.value.reason and "\n" not in caught.value.reason


def test_reasons_name_no_file_or_folder_but_details_do(tmp_path):
    """Reasons go into the manifest; names (which may name a patient) only into `detail`."""
    junk = tmp_path / "DOE^JANE" / "Jane_Doe.nii.gz"
    junk.parent.mkdir()
    junk.write_bytes(b"not an image at all")
    folder = write_dicom_series(tmp_path / "DOE^JANE_CT", np.zeros((8, 8, 3)), np.eye(4))
    for file in sorted(folder.iterdir()):
        file.rename(file.with_name(f"Jane_Doe_{file.name}"))
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-60])
    for path in (junk, folder):
        with pytest.raises(VolumeReadError) as caught:
            read_volume(path)
        assert "DOE^JANE" not in caught.value.reason and "Jane_Doe" not in caught.value.reason, caught.value.reason
        assert "Jane_Doe" in str(caught.value)  # the detail, for the user's terminal


def test_truncated_and_non_image_dicom_are_rejected_with_reasons(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = write_dicom_series(tmp_path / "ct", np.zeros((8, 8, 3)), np.eye(4))
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-60])
    with pytest.raises(VolumeReadError) as caught:
        read_volume(folder)
    assert "truncated" in caught.value.reason or "unreadable" in caught.value.reason

    report = tmp_path / "sr"
    report.mkdir()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Modality = "SR"
    ds.save_as(report / "report.dcm", enforce_file_format=True)
    assert pydicom.dcmread(report / "report.dcm").Modality == "SR"
    with pytest.raises(VolumeReadError, match="without pixel data"):
        read_volume(report)


def test_compressed_dicom_without_a_working_decoder_is_rejected_with_its_transfer_syntax(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, JPEG2000Lossless, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.Modality = meta, CTImageStorage, "CT"
    ds.Rows = ds.Columns = 8
    ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 1], [1, 0, 0, 0, 1, 0], [0, 0, 0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])  # a JPEG 2000 header, no image
    ds["PixelData"].VR = "OB"
    (tmp_path / "series").mkdir()
    ds.save_as(tmp_path / "series" / "a.dcm", enforce_file_format=True)
    with pytest.raises(VolumeReadError, match="compressed transfer syntax JPEG 2000"):
        read_volume(tmp_path / "series")
