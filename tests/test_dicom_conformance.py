"""DICOM outputs judged by dciodvfy (dicom3tools): for every target modality of the modality
table, from a DICOM source of each built-in modality and from a NIfTI source, the output series
has no conformance error that its source does not already have (a NIfTI source has none)."""

import dataclasses

import numpy as np
import pytest

from medgan_tf import modalities
from medgan_tf.data.io import Provenance, Volume, read_volume, write_output

from dicom_tools import dciodvfy_errors, scanner_series
from helpers import oblique_affine, smooth_volume

# Values of a translated volume in each target modality's unit.
TARGET_RANGES = {"HU": (-1000.0, 3000.0), "a.u.": (200.0, 400.0), "SUV": (0.1, 20.0)}
TARGETS = [key for key, entry in modalities.MODALITIES.items() if entry.unit in TARGET_RANGES]


def translated(source: Volume, target: str) -> Volume:
    """A stand-in for a model output: smooth values in the target's unit on the source's grid."""
    entry = modalities.get(target)
    low, high = TARGET_RANGES[entry.unit]
    array = smooth_volume(source.shape, np.random.default_rng(1), low, high).astype(np.float32)
    return Volume(array, source.affine, entry.dicom, entry.unit, {"translated_by": f"medgan-tf test ({target})"})


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("source_modality", ["CT", "MR", "PT", "NIfTI"])
def test_outputs_add_no_conformance_error_to_their_source(source_modality, target, tmp_path):
    if source_modality == "NIfTI":
        source, own_errors = Volume(np.zeros((20, 16, 3), np.float32), oblique_affine((1.0, 1.2, 3.0))), set()
    else:
        folder = scanner_series(tmp_path / "source", source_modality, oblique_affine((1.0, 1.2, 3.0)))
        source, own_errors = read_volume(folder), dciodvfy_errors(folder)
    output = write_output(translated(source, target), tmp_path / "output", provenance=Provenance(
        "medgan-tf test", "Synthetic image made by a test; not acquired", source))
    introduced = dciodvfy_errors(output) - own_errors
    assert not introduced, "\n".join(sorted(introduced))


def test_the_check_finds_an_error_we_would_introduce(tmp_path):
    """The comparison is not empty by construction: an output without ImageType value 3 fails."""
    import pydicom

    output = write_output(translated(Volume(np.zeros((8, 8, 2), np.float32), np.eye(4)), "CT"), tmp_path / "ct")
    assert not dciodvfy_errors(output)
    for file in output.iterdir():
        ds = pydicom.dcmread(str(file))
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.save_as(str(file))
    assert any("ImageType" in error for error in dciodvfy_errors(output))


def test_a_pet_source_keeps_its_orientation_codes_and_collimator(tmp_path):
    import pydicom

    folder = scanner_series(tmp_path / "pet", "PT", np.diag([2.0, 2.0, 3.0, 1.0]))
    source = read_volume(folder)
    output = write_output(dataclasses.replace(translated(source, "PT")), tmp_path / "out",
                          provenance=Provenance("t", "t", source))
    first = pydicom.dcmread(str(sorted(output.iterdir())[0]))
    assert first.CollimatorType == "NONE" and first.ImageType[:2] == ["DERIVED", "PRIMARY"]
    assert first.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence[0].CodeMeaning == "supine"
    assert "PatientPosition" not in first  # the code sequences say it in a PET image
    ct = write_output(translated(source, "CT"), tmp_path / "ct", provenance=Provenance("t", "t", source))
    assert pydicom.dcmread(str(sorted(ct.iterdir())[0])).PatientPosition == "HFS"  # from headfirst + supine
