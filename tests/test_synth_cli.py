"""`medgan-tf synth`: the files it writes and its errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medgan_tf.cli import main as cli_main
from medgan_tf.data.io import read_volume

# (source modality, source unit, target modality, target unit, source voxel size in mm or None)
EXPECTED = {
    "pet_ct": ("PT", "Bq/ml", "CT", "HU", None),
    "mr_motion": ("MR", "a.u.", "MR", "a.u.", None),
    "pet_denoise": ("PT", "Bq/ml", "PT", "Bq/ml", (2.8, 2.8, 2.0)),  # native PET voxels (paper §3.1)
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_synth_writes_nifti_pairs_and_a_pairs_csv(tmp_path, task):
    assert cli_main(["synth", "--task", task, "--out", str(tmp_path), "--patients", "2", "--seed", "5", "--image-size", "64"]) == 0
    with open(tmp_path / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["patient_id"] for row in rows] == [f"synthetic-{task}-000", f"synthetic-{task}-001"]
    source_modality, source_unit, target_modality, target_unit, spacing = EXPECTED[task]
    for row in rows:
        source, target = read_volume(tmp_path / row["source"]), read_volume(tmp_path / row["target"])
        assert (source.modality, source.unit, target.modality, target.unit) == EXPECTED[task][:4]
        assert source.array.dtype == np.float32 and np.isfinite(source.array).all()
        if spacing:
            np.testing.assert_allclose(source.spacing, spacing)
        # Both volumes cover the same head: their world centres agree within a few mm.
        centre = lambda v: v.affine[:3, :3] @ ((np.array(v.shape) - 1) / 2) + v.affine[:3, 3]  # noqa: E731
        assert np.linalg.norm(centre(source) - centre(target)) < 3.0


def test_synth_refuses_zero_patients(tmp_path, capsys):
    assert cli_main(["synth", "--task", "pet_ct", "--out", str(tmp_path), "--patients", "0"]) == 2
    assert "--patients 0" in capsys.readouterr().err


def test_synth_preview_writes_one_png_of_three_planes_per_pair(tmp_path):
    from matplotlib import image

    assert cli_main(["synth", "--task", "mr_motion", "--out", str(tmp_path), "--patients", "2", "--image-size", "64",
                     "--preview"]) == 0
    pictures = sorted((tmp_path / "preview").iterdir())
    assert [p.name for p in pictures] == ["synthetic-mr_motion-000.png", "synthetic-mr_motion-001.png"]
    for picture in pictures:
        data = picture.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 1_000_000
        pixels = image.imread(picture)
        assert pixels.shape[1] > 2 * pixels.shape[0]  # one row of six panels
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
    assert not list((tmp_path / "preview").glob(".*partial"))


def test_overview_draws_one_row_per_task_with_its_own_window(tmp_path, monkeypatch):
    """`make docs-images` (the README's phantom figure), on two tasks."""
    from matplotlib import image

    from medgan_tf.workflows import previews

    drawn = {}
    render = previews.render_pairs

    def spy(rows, path, **options):
        drawn.update(labels=[row[0] for row in rows], **options)
        return render(rows, path, **options)

    monkeypatch.setattr(previews, "render_pairs", spy)
    path = previews.write_overview(["mr_motion", "ct_denoise"], tmp_path / "phantoms.png")
    assert drawn["labels"] == ["mr_motion", "ct_denoise (-160…240 HU)"]
    assert drawn["windows"] == {"ct_denoise (-160…240 HU)": (-160.0, 240.0)}
    pixels = image.imread(path)
    assert 0.3 < pixels.shape[0] / pixels.shape[1] < 0.5  # two rows of six panels (one: ≈ 0.19)
    assert pixels[..., :3].std() > 0.05
