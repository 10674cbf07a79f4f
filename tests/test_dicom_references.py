"""What a DICOM output says about where it came from and how to show it: the source instance of
each slice, the source series, derivation codes and text, windows per modality, a SeriesNumber of
its own in the study, the patient's position."""

import numpy as np
import pydicom
import pytest

from medgan_tf import modalities
from medgan_tf.data.io import Provenance, Volume, read_volume, write_output

from dicom_tools import scanner_series
from helpers import oblique_affine, smooth_volume


def series(folder):
    return sorted((pydicom.dcmread(str(p)) for p in folder.iterdir()), key=lambda ds: int(ds.InstanceNumber))


def output_of(source, folder, target="CT", low=-1000.0, high=2000.0, array=None):
    entry = modalities.get(target)
    array = smooth_volume(source.shape, np.random.default_rng(3), low, high) if array is None else array
    volume = Volume(np.asarray(array, np.float32), source.affine, entry.dicom, entry.unit)
    return series(write_output(volume, folder, provenance=Provenance(
        "medgan-tf m t v1", "Synthetic CT translated from PT by medgan-tf, model m (task t, export version 1)", source)))


def test_each_slice_references_the_source_instance_at_its_position(tmp_path):
    folder = scanner_series(tmp_path / "pet", "PT", oblique_affine((2.0, 2.2, 3.0)), shape=(12, 10, 4))
    source = series(folder)
    by_position = {tuple(round(float(v), 3) for v in ds.ImagePositionPatient): ds for ds in source}
    output = output_of(read_volume(folder), tmp_path / "out")
    for ds in output:
        origin = by_position[tuple(round(float(v), 3) for v in ds.ImagePositionPatient)]
        (item,) = ds.SourceImageSequence
        assert (item.ReferencedSOPInstanceUID, item.ReferencedSOPClassUID) == (origin.SOPInstanceUID, origin.SOPClassUID)
        assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    (referenced,) = output[0].ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {ds.SOPInstanceUID for ds in source}
    first = output[0]
    assert [(c.CodeValue, c.CodingSchemeDesignator) for c in first.DerivationCodeSequence] == [("110001", "DCM"),
                                                                                                ("113085", "DCM")]
    assert "task t, export version 1" in first.DerivationDescription and first.BurnedInAnnotation == "NO"
    assert len(first.InstanceCreationDate) == 8 and first.InstanceCreationTime
    assert first.PatientPosition == "HFS"  # a PET gives it as code sequences: headfirst, supine


def test_a_nifti_source_references_nothing(tmp_path):
    output = output_of(Volume(np.zeros((8, 8, 2), np.float32), np.eye(4)), tmp_path / "out")
    assert all("SourceImageSequence" not in ds and "ReferencedSeriesSequence" not in ds for ds in output)
    assert output[0].DerivationCodeSequence[0].CodeMeaning == "Image Processing"


def test_two_outputs_of_one_source_get_series_numbers_of_their_own(tmp_path):
    folder = scanner_series(tmp_path / "ct", "CT", np.diag([1.0, 1.0, 3.0, 1.0]), shape=(8, 8, 2))
    source = read_volume(folder)
    numbers = [output_of(source, tmp_path / f"out{n}")[0].SeriesNumber for n in range(6)]
    assert len(set(numbers)) == len(numbers) and source.dicom_header.SeriesNumber not in numbers
    assert all(1000 < n < 100000 for n in numbers)


@pytest.mark.parametrize("target, low, high, expected", [
    ("CT", -1000.0, 3000.0, [(40.0, 400.0, "SOFT TISSUE"), (400.0, 1800.0, "BONE")]),
    ("PT", 0.0, 20.0, [(10.0, 20.0, "RANGE")]),
    ("MR", 0.0, 1000.0, [(500.0, 980.0, "P1-P99")]),  # a linear ramp 0…1000: 1st percentile 10, 99th 990
])
def test_windows_follow_the_modality_table(target, low, high, expected, tmp_path):
    ramp = np.linspace(low, high, 10 * 10 * 10).reshape(10, 10, 10)
    first = output_of(Volume(np.zeros((10, 10, 10), np.float32), np.eye(4)), tmp_path / "out", target, array=ramp)[0]
    def listed(keyword):
        element = first[keyword]
        return list(element.value) if element.VM > 1 else [element.value]

    step = float(first.RescaleSlope)
    assert listed("WindowCenterWidthExplanation") == [name for *_, name in expected]
    np.testing.assert_allclose([float(v) for v in listed("WindowCenter")], [c for c, _, _ in expected], atol=step)
    np.testing.assert_allclose([float(v) for v in listed("WindowWidth")], [w for _, w, _ in expected], atol=step)
