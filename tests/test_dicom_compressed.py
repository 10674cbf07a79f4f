"""Compressed DICOM (PACS exports): JPEG Lossless process 14, JPEG-LS, JPEG 2000 and RLE decode to
the values of their uncompressed twin; a transfer syntax without a decoder keeps a one-line reason;
a compressed series translates exactly like its uncompressed twin."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import decoders

from medgan_tf.cli import main
from medgan_tf.data.io import VolumeReadError, read_volume
from medgan_tf.serving import export

from helpers import compress_series, dcm2niix_nifti, make_run, oblique_affine, same_grid, smooth_volume, write_dicom_series

JPEG_LOSSLESS_P14 = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"


def one_file_series(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(get_testdata_file(name), folder / name)
    return folder


@pytest.mark.parametrize("name, syntax", [
    ("MR_small_jpeg_ls_lossless.dcm", JPEG_LS_LOSSLESS),
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
])
def test_pydicom_compressed_test_files_equal_their_uncompressed_twin(name, syntax, tmp_path):
    assert pydicom.dcmread(get_testdata_file(name)).file_meta.TransferSyntaxUID == syntax
    twin = read_volume(one_file_series(tmp_path, "MR_small.dcm"))
    volume = read_volume(one_file_series(tmp_path, name))
    assert volume.shape == twin.shape == (64, 64, 1) and np.std(twin.array) > 0
    assert np.array_equal(volume.array, twin.array) and np.array_equal(volume.affine, twin.affine)


@pytest.mark.parametrize("syntax", [JPEG_LOSSLESS_P14, JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS])
def test_lossless_jpeg_series_decode_to_the_stored_values(syntax, tmp_path):
    """A CT series with the full int16 range (air at −1024 HU, a metal implant near the top),
    compressed; our reader and dcm2niix both give back the uncompressed values."""
    array = np.round(smooth_volume((30, 26, 4), np.random.default_rng(1), -1024.0, 3000.0))
    array[3, 4, 1], array[5, 6, 2] = -33000.0, 31000.0  # the extremes of the int16 stored range
    affine = oblique_affine((0.8, 0.8, 2.0))
    write_dicom_series(tmp_path / "plain", array, affine)
    write_dicom_series(tmp_path / "packed", array, affine)
    compress_series(tmp_path / "packed", syntax)
    assert {pydicom.dcmread(str(p)).file_meta.TransferSyntaxUID for p in (tmp_path / "packed").iterdir()} == {syntax}
    plain, packed = read_volume(tmp_path / "plain"), read_volume(tmp_path / "packed")
    np.testing.assert_array_equal(packed.array, plain.array)
    np.testing.assert_allclose(packed.array[3, 4, 1], -33000.0)
    theirs, ours, affine_error = same_grid(dcm2niix_nifti(tmp_path / "packed", tmp_path / "d"), plain.array, plain.affine)
    assert affine_error <= 1e-3 and np.array_equal(theirs, ours)


def test_a_syntax_without_decoder_keeps_a_one_line_reason(tmp_path, monkeypatch):
    """With JPEG-LS's decoder plugins made unavailable, the series is refused with one line
    naming the transfer syntax (the `translate` command: the last test below)."""
    folder = one_file_series(tmp_path, "MR_small_jpeg_ls_lossless.dcm")
    monkeypatch.setattr(decoders.JPEGLSLosslessDecoder, "_available", {})
    with pytest.raises(VolumeReadError) as caught:
        read_volume(folder)
    reason = caught.value.reason
    assert reason.startswith("slice 0 of 1 (along the slice normal): compressed transfer syntax JPEG-LS Lossless Image "
                             "Compression that no installed decoder could read")
    assert "\n" not in reason and "MR_small" not in reason


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory):
    root = tmp_path_factory.mktemp("compressed")
    make_run(root / "run", "pet_denoise")
    return export.export_run(root / "run", root / "savedmodels" / "pet_denoise")


def test_a_compressed_series_translates_like_its_uncompressed_twin(savedmodel, tmp_path, monkeypatch, capsys):
    array = np.round(smooth_volume((36, 32, 5), np.random.default_rng(2), 0.0, 15000.0))
    for name in ("plain", "packed"):
        write_dicom_series(tmp_path / name, array, oblique_affine((2.8, 2.8, 2.0)), modality="PT", slope=1.0,
                           intercept=0.0, extra={"Units": "BQML"})
    compress_series(tmp_path / "packed", JPEG_LOSSLESS_SV1)
    outputs = {}
    for name in ("plain", "packed"):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["translate", "--model", str(savedmodel), "--input", str(tmp_path / name), "--output", str(out), "-q"]) == 0
        outputs[name] = read_volume(out)
    np.testing.assert_array_equal(outputs["packed"].array, outputs["plain"].array)
    np.testing.assert_array_equal(outputs["packed"].affine, outputs["plain"].affine)
    monkeypatch.setattr(decoders.JPEGLosslessSV1Decoder, "_available", {})  # and without its decoder:
    assert main(["translate", "--model", str(savedmodel), "--input", str(tmp_path / "packed"),
                 "--output", str(tmp_path / "none.nii.gz")]) == 2
    error = capsys.readouterr().err.strip()
    assert "compressed transfer syntax JPEG Lossless, Non-Hierarchical, First-Order Prediction" in error
    assert len(error.splitlines()) == 1 and not (tmp_path / "none.nii.gz").exists()


def test_a_compressed_pair_converts_to_the_records_of_its_uncompressed_twin(tmp_path):
    from medgan_tf.data import pairs

    from helpers import tiny_config

    array = np.round(smooth_volume((30, 30, 4), np.random.default_rng(4), 0.0, 9000.0))
    for name in ("plain", "packed"):
        write_dicom_series(tmp_path / name, array, np.diag([2.8, 2.8, 2.0, 1.0]), modality="PT", slope=1.0,
                           intercept=0.0, extra={"Units": "BQML"})
    compress_series(tmp_path / "packed", JPEG_LOSSLESS_P14)
    data = tiny_config("pet_denoise").data
    packed, _ = pairs.convert_pair(str(tmp_path / "packed"), str(tmp_path / "plain"), "k", data)
    plain, _ = pairs.convert_pair(str(tmp_path / "plain"), str(tmp_path / "plain"), "k", data)
    assert len(packed) == 4 and packed == plain
