"""Outputs follow the umask like any file a program creates (0644 files, 0755 folders under umask
022), so a PACS sender or web server running as another account can read them; the temporary
names they are built under (mkstemp/mkdtemp: owner only) must not leak into them."""

import os
import stat

import numpy as np
import pytest

from medgan_tf.data.io import Volume, write_output


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize("mask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_nifti_and_dicom_outputs_follow_the_umask(mask, file_mode, folder_mode, umask, tmp_path):
    umask(mask)
    volume = Volume(np.linspace(-1000, 1000, 4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2), np.eye(4), "CT", "HU")
    nifti = write_output(volume, tmp_path / "out.nii.gz")
    series = write_output(volume, tmp_path / "series")
    rewritten = write_output(volume, tmp_path / "series")  # replacing an earlier output: the same modes

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(nifti) == file_mode
    assert mode(rewritten) == folder_mode and mode(series) == folder_mode
    assert {mode(p) for p in rewritten.iterdir()} == {file_mode}
