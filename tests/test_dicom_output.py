"""DICOM series output of `translate`, read back by an independent converter (dcm2niix) and by
pydicom: the same grid and values as the NIfTI output, new and valid UIDs, the source's patient,
study and frame of reference; and dcm2niix checking our DICOM reader on unusual geometry."""

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medgan_tf import config as config_lib
from medgan_tf import presets
from medgan_tf.cli import main
from medgan_tf.data.io import Volume, read_volume, write_nifti
from medgan_tf.data.io.dicom_writer import series_datasets, write_dicom_series as write_output_series
from medgan_tf.serving import export, loading, signatures
from medgan_tf.serving.translation import translate_file

from helpers import SIZE, dcm2niix_nifti, make_run, oblique_affine, same_grid, smooth_volume, write_dicom_series

# The PET source's SUV header: 70 kg, 370 MBq of F-18 (half-life 6586.2 s) injected 1 h before the series.
WEIGHT_KG, DOSE_BQ, HALF_LIFE_S, ELAPSED_S = 70.0, 370e6, 6586.2, 3600.0
SUV_FACTOR = WEIGHT_KG * 1000.0 / (DOSE_BQ * 2.0 ** (-ELAPSED_S / HALF_LIFE_S))  # SUV = Bq/ml × factor


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_output")
    make_run(root / "run", "pet_denoise")
    return export.export_run(root / "run", root / "savedmodels" / "pet_denoise")


def identity_model(task: str) -> loading.RunModel:
    experiment = config_lib.override(presets.task_preset(task), {"data.image_size": SIZE})
    return loading.RunModel(Path(f"identity-{task}"), experiment, signatures.normalization_description(experiment),
                            lambda images, training: images)


def pet_header() -> dict:
    drug = Dataset()
    drug.RadionuclideTotalDose, drug.RadionuclideHalfLife, drug.RadiopharmaceuticalStartTime = "370000000", "6586.2", "090000"
    return {"Units": "BQML", "PatientWeight": "70", "DecayCorrection": "START", "SeriesTime": "100000",
            "SeriesNumber": 7, "PatientID": "PAT-42", "PatientName": "Doe^Jane", "StudyDate": "20260101",
            "FrameOfReferenceUID": pydicom.uid.generate_uid(), "RadiopharmaceuticalInformationSequence": [drug]}


def pet_series(folder: Path, affine=None) -> Path:
    """An oblique PET series in Bq/ml whose header makes SUV computable."""
    array = np.round(smooth_volume((40, 36, 6), np.random.default_rng(7), 100.0, 20000.0))
    return write_dicom_series(folder, array, oblique_affine((2.5, 2.8, 3.0)) if affine is None else affine,
                              modality="PT", slope=1.0, intercept=0.0, extra=pet_header())


def read_series(folder: Path) -> list:
    return [pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())]


def check_new_identity(output: list, source: list) -> None:
    """New, valid, unique UIDs; the source's patient, study and frame of reference."""
    first, origin = output[0], source[0]
    uids = [ds.SOPInstanceUID for ds in output] + [output[0].SeriesInstanceUID]
    assert all(UID(uid).is_valid for uid in uids) and len(set(uids)) == len(uids)
    assert not set(uids) & ({ds.SOPInstanceUID for ds in source} | {origin.SeriesInstanceUID, origin.StudyInstanceUID})
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in output)
    assert len({ds.SeriesInstanceUID for ds in output}) == 1
    for keyword in ("FrameOfReferenceUID", "StudyInstanceUID", "PatientID", "PatientName", "StudyDate"):
        assert {str(ds.get(keyword)) for ds in output} == {str(origin.get(keyword))}, keyword
    assert first.SeriesNumber not in (origin.SeriesNumber, None) and first.ImageType[0] == "DERIVED"
    assert sorted(ds.InstanceNumber for ds in output) == list(range(1, len(output) + 1))


def check_source_geometry(output: list, source: list) -> None:
    """Every output slice sits exactly where a source slice is, with its orientation and spacing."""
    def positions(series):
        return sorted(tuple(round(float(v), 4) for v in ds.ImagePositionPatient) for ds in series)

    assert positions(output) == positions(source)
    for keyword in ("ImageOrientationPatient", "PixelSpacing"):
        np.testing.assert_allclose([float(v) for v in output[0].get(keyword)], [float(v) for v in source[0].get(keyword)],
                                   atol=1e-6)
    assert math.isclose(float(output[0].SpacingBetweenSlices), 3.0, rel_tol=1e-6)
    assert (output[0].Rows, output[0].Columns) == (source[0].Rows, source[0].Columns)


def test_translate_dicom_pet_to_dicom_pet_equals_the_nifti_output(savedmodel, tmp_path):
    """PET DICOM in → PET DICOM out (Units BQML, SUV still computable): dcm2niix's NIfTI of the
    series has the NIfTI output's shape, affine (≤ 1e-3 mm) and values (≤ one rescale step)."""
    source = pet_series(tmp_path / "pet")
    common = ["translate", "--model", str(savedmodel), "--input", str(source), "--quiet"]
    assert main(common + ["--output", str(tmp_path / "out.nii.gz")]) == 0
    assert main(common + ["--output", str(tmp_path / "out_dicom")]) == 0
    nifti = nib.load(str(tmp_path / "out.nii.gz"))
    assert read_volume(tmp_path / "out.nii.gz").unit == "SUV"  # the NIfTI output is in SUV, the series in Bq/ml
    output, origin = read_series(tmp_path / "out_dicom"), read_series(source)
    check_new_identity(output, origin)
    check_source_geometry(output, origin)
    first = output[0]
    assert (first.Modality, first.Units, first.SOPClassUID) == ("PT", "BQML", pydicom.uid.PositronEmissionTomographyImageStorage)
    assert float(first.RescaleIntercept) == 0.0 and first.DecayCorrection == "START" and first.SeriesTime == "100000"
    assert first.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose == DOSE_BQ
    assert "pet_denoise" in first.SeriesDescription and "export version 1" in first.DerivationDescription
    step = float(first.RescaleSlope)

    theirs, ours, affine_error = same_grid(dcm2niix_nifti(tmp_path / "out_dicom", tmp_path / "dcm2niix"),
                                           nifti.get_fdata() / SUV_FACTOR, nifti.affine)
    assert affine_error <= 1e-3
    assert np.max(np.abs(theirs - ours)) <= step and np.std(ours) > 0
    back = read_volume(tmp_path / "out_dicom")  # our reader: SUV again, from the copied header
    assert back.unit == "SUV" and back.metadata["suv_factor"] == pytest.approx(SUV_FACTOR, rel=1e-9)
    theirs, ours, _ = same_grid(nib.Nifti1Image(back.array, back.affine), nifti.get_fdata(), nifti.affine)
    assert np.max(np.abs(theirs - ours)) <= step * SUV_FACTOR


def test_pet_to_ct_writes_int16_hounsfield_units(tmp_path):
    """pet_ct: the output series is CT (int16, slope 1, intercept −1024, no PET tags) in the
    PET's study; dcm2niix reads the NIfTI output's HU back to within one HU."""
    source = pet_series(tmp_path / "pet")
    model = identity_model("pet_ct")
    translation = translate_file(model, source, tmp_path / "ct.nii", quiet=True)
    translate_file(model, source, tmp_path / "ct_series", quiet=True, output_format="dicom")
    output = read_series(tmp_path / "ct_series")
    check_new_identity(output, read_series(source))
    first = output[0]
    assert (first.Modality, first.SOPClassUID, first.RescaleType) == ("CT", pydicom.uid.CTImageStorage, "HU")
    assert (float(first.RescaleSlope), float(first.RescaleIntercept), first.PixelRepresentation) == (1.0, -1024.0, 1)
    assert first.pixel_array.dtype == np.int16
    assert "Units" not in first and "RadiopharmaceuticalInformationSequence" not in first
    hu = translation.volume.array
    assert hu.min() < -500 and hu.max() > 1000  # a real HU range went through
    theirs, ours, affine_error = same_grid(dcm2niix_nifti(tmp_path / "ct_series", tmp_path / "d"), hu, translation.volume.affine)
    assert affine_error <= 1e-3 and np.max(np.abs(theirs - ours)) <= 1.0


def test_nifti_input_gets_a_new_minimal_patient_and_study(tmp_path, caplog):
    affine = np.array([[0, 0, 1.5, -20.0], [1.2, 0, 0, -30.0], [0, 1.1, 0, 15.0], [0, 0, 0, 1]])  # sagittal
    array = smooth_volume((30, 28, 8), np.random.default_rng(3), 0.0, 900.0).astype(np.float32)
    write_nifti(Volume(array, affine, "MR", "a.u."), tmp_path / "mr.nii.gz")
    model = identity_model("mr_motion")
    with caplog.at_level("INFO"):
        translation = translate_file(model, tmp_path / "mr.nii.gz", tmp_path / "mr_series", quiet=True)
    assert "PatientID ANONYMOUS" in caplog.text
    output = read_series(tmp_path / "mr_series")
    first = output[0]
    assert (first.Modality, first.SOPClassUID, first.PatientID) == ("MR", pydicom.uid.MRImageStorage, "ANONYMOUS")
    assert UID(first.StudyInstanceUID).is_valid and UID(first.FrameOfReferenceUID).is_valid
    assert len({(ds.StudyInstanceUID, ds.FrameOfReferenceUID) for ds in output}) == 1
    theirs, ours, affine_error = same_grid(dcm2niix_nifti(tmp_path / "mr_series", tmp_path / "d"),
                                           translation.volume.array, affine)
    assert affine_error <= 1e-3 and np.max(np.abs(theirs - ours)) <= float(first.RescaleSlope)


def test_an_existing_folder_is_refused_unless_empty_or_an_earlier_output(savedmodel, tmp_path, capsys):
    write_nifti(Volume(np.random.default_rng(0).gamma(2.0, 1.0, (20, 20, 3)).astype(np.float32), np.eye(4), "PT", "SUV"),
                tmp_path / "in.nii")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    command = ["translate", "--model", str(savedmodel), "--input", str(tmp_path / "in.nii"), "--quiet", "--output"]
    assert main(command + [str(tmp_path / "taken")]) == 2
    assert "taken is a folder that holds other files" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]
    assert main(command + [str(tmp_path / "series")]) == 0
    first_uid = read_series(tmp_path / "series")[0].SeriesInstanceUID
    assert main(command + [str(tmp_path / "series")]) == 0  # an earlier output is replaced whole
    again = read_series(tmp_path / "series")
    assert len(again) == 3 and again[0].SeriesInstanceUID != first_uid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii", "series", "taken"]  # no temporary folder left
    assert main(command + [str(tmp_path / "x.nii.gz"), "--output-format", "dicom"]) == 2
    assert "a DICOM series output is a folder" in capsys.readouterr().err
    assert main(command + [str(tmp_path / "in.nii" / "series")]) == 2  # below a file: no folder can be made
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(tmp_path / "in.nii") in error and "Traceback" not in error


def test_mr_to_mr_keeps_the_sources_acquisition_tags(tmp_path):
    array = np.round(smooth_volume((24, 20, 4), np.random.default_rng(5), 0.0, 1200.0))
    extra = {"ScanningSequence": "SE", "SequenceVariant": "SK", "EchoTime": "12", "RepetitionTime": "500",
             "MagneticFieldStrength": "3", "PatientID": "MR-1"}
    write_dicom_series(tmp_path / "mr", array, np.diag([1.0, 1.0, 3.0, 1.0]), modality="MR", intercept=0.0, extra=extra)
    translate_file(identity_model("mr_motion"), tmp_path / "mr", tmp_path / "out", quiet=True)
    first = read_series(tmp_path / "out")[0]
    assert (first.Modality, first.PatientID, first.EchoTime, first.RepetitionTime) == ("MR", "MR-1", 12.0, 500.0)
    assert (first.ScanningSequence, first.MagneticFieldStrength) == ("SE", 3.0)


@pytest.mark.parametrize("unit, units_tag, factor", [("SUV", "GML", 1.0), ("Bq/ml", "BQML", 1.0), ("a.u.", "CNTS", 1.0)])
def test_pet_without_a_dicom_source_names_its_unit(unit, units_tag, factor):
    """No source header (a NIfTI input): SUV cannot go back to Bq/ml, so it stays SUV (GML, g/ml)."""
    values = np.linspace(0.0, 12.5, 32, dtype=np.float32).reshape(4, 4, 2)
    first = series_datasets(Volume(values, np.eye(4), "PT", unit))[0]
    assert first.Units == units_tag and float(first.RescaleIntercept) == 0.0
    step = float(first.RescaleSlope)
    assert step == pytest.approx(12.5 / 65535, rel=1e-6)  # the whole uint16 range, not 1 SUV per step
    assert np.max(np.abs(first.pixel_array.T * step - values[:, :, 0] * factor)) <= step / 2 + 1e-9


def test_grids_and_modalities_dicom_cannot_hold_are_refused():
    sheared = np.eye(4)
    sheared[0, 2] = 0.5
    with pytest.raises(ValueError, match="sheared"):
        series_datasets(Volume(np.zeros((4, 4, 2), np.float32), sheared, "CT", "HU"))
    with pytest.raises(ValueError, match="modality 'OT'"):
        series_datasets(Volume(np.zeros((4, 4, 2), np.float32), np.eye(4), "OT", "a.u."))


# --------------------------------------------------------------------------- our reader, checked by dcm2niix


def reversed_k(affine):
    """`affine` with k running the other way (slices stored against the slice normal)."""
    flipped = np.array(affine, dtype=np.float64)
    flipped[:3, 3] += 4 * flipped[:3, 2]
    flipped[:3, 2] *= -1
    return flipped


@pytest.mark.parametrize("case", ["oblique", "sagittal", "coronal, instances numbered against position",
                                  "k against the normal (our writer)"])
def test_our_reader_agrees_with_dcm2niix_on_unusual_geometry(case, tmp_path):
    array = np.round(smooth_volume((24, 20, 5), np.random.default_rng(11), -900.0, 1800.0))
    sagittal = np.array([[0, 0, 1.7, -10.0], [1.1, 0, 0, 20.0], [0, 1.3, 0, -5.0], [0, 0, 0, 1]])
    coronal = np.array([[0.9, 0, 0, -30.0], [0, 0, -2.2, 40.0], [0, 1.2, 0, -60.0], [0, 0, 0, 1]])
    folder = tmp_path / "series"
    if case == "oblique":
        write_dicom_series(folder, array, oblique_affine((0.9, 1.3, 2.5), (25.0, -15.0)))
    elif case == "sagittal":
        write_dicom_series(folder, array, sagittal)
    elif case.startswith("coronal"):
        write_dicom_series(folder, array, coronal, reverse_instance_numbers=True)
    else:
        write_output_series(Volume(array.astype(np.float32), reversed_k(oblique_affine()), "CT", "HU"), folder)
    ours = read_volume(folder)
    theirs, mine, affine_error = same_grid(dcm2niix_nifti(folder, tmp_path / "d"), ours.array, ours.affine)
    assert affine_error <= 1e-3
    np.testing.assert_allclose(theirs, mine, atol=1e-3)
    assert np.std(mine) > 0
