"""Whole-volume translation: geometry and units survive the round trip to the model grid and back.

The identity tests replace the generator by f(x) = x, so the expected output is known exactly:
the input clipped to its normalization window (a PET "scale" window is [0, p99.5]). The command
tests use a real export of a tiny untrained CasNet and check shape, affine, unit and atomic writes.
"""

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgan_tf import config as config_lib

from medgan_tf import presets
from medgan_tf.serving import export, loading, signatures
from medgan_tf.serving import translation as translation_lib
from medgan_tf.cli import main
from medgan_tf.data.io import Volume, read_volume, write_nifti

from helpers import SIZE, make_run, write_dicom_series  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate")
    make_run(root / "run", "pet_denoise")
    return export.export_run(root / "run", root / "savedmodels" / "pet_denoise")


def identity_model(task: str = "pet_denoise") -> loading.RunModel:
    experiment = config_lib.override(presets.task_preset(task), {"data.image_size": SIZE})
    return loading.RunModel(
        Path("identity"), experiment, signatures.normalization_description(experiment), lambda images, training: images
    )


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([2.8, 2.8, 2.0, 1.0]),  # already the model grid (RAS)
        np.array([[-2.8, 0, 0, 90.0], [0, -2.8, 0, 80.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]]),  # LPS-like axes
    ],
)
def test_identity_model_returns_the_clipped_input(affine):
    rng = np.random.default_rng(0)
    array = rng.gamma(2.0, 1.0, (SIZE, SIZE, 9)).astype(np.float32)
    volume = Volume(array, affine, "PT", "SUV")
    translation = translation_lib.translate_volume(identity_model(), volume, batch_size=4)
    high = float(np.percentile(array, 99.5))  # the PET "scale" window [0, p99.5], fitted on this volume
    assert translation.source_params["low"] == 0.0
    assert translation.source_params["high"] == pytest.approx(high, rel=1e-6)
    assert translation.grid_shape == (SIZE, SIZE, 9)
    output = translation.volume
    assert output.array.shape == array.shape and np.array_equal(output.affine, affine)
    assert output.unit == "SUV" and output.modality == "PT"
    np.testing.assert_allclose(output.array, np.clip(array, 0.0, high), rtol=1e-5, atol=1e-5)


def test_normalization_is_fitted_on_covered_voxels_only():
    """A 32² volume padded to the 64² model grid: the fill must not shift the percentile window
    (the converter fits training data the same way)."""
    array = np.random.default_rng(5).gamma(2.0, 1.0, (32, 32, 6)).astype(np.float32)
    translation = translation_lib.translate_volume(identity_model(), Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV"))
    high = float(np.percentile(array, 99.5))
    assert translation.source_params["high"] == pytest.approx(high, rel=1e-6)
    np.testing.assert_allclose(translation.volume.array, np.clip(array, 0.0, high), rtol=1e-5, atol=1e-5)


def test_identity_model_resamples_back_to_a_coarser_input_grid():
    """An input at twice the model spacing: model grid and back only interpolates a smooth ramp,
    which trilinear interpolation reproduces exactly inside the volume."""
    i, j, k = np.meshgrid(np.arange(24), np.arange(20), np.arange(8), indexing="ij")
    array = (1.0 + 0.1 * i + 0.05 * j + 0.2 * k).astype(np.float32)
    affine = np.diag([5.6, 5.6, 4.0, 1.0])
    experiment = identity_model().config
    # A window far above the data keeps clipping out of the picture.
    wide = dataclasses.replace(experiment.data.source_normalization, kind="window", low=0.0, high=100.0)
    experiment = dataclasses.replace(
        experiment,
        data=dataclasses.replace(
            experiment.data,
            source_normalization=wide,
            target_normalization=dataclasses.replace(wide, share_source=False),
        ),
    )
    model = loading.RunModel(Path("identity"), experiment, signatures.normalization_description(experiment), lambda x, training: x)
    output = translation_lib.translate_volume(model, Volume(array, affine, "PT", "SUV"), batch_size=8).volume
    inner = (slice(1, -1), slice(1, -1), slice(1, -1))  # the outermost voxels see the padding
    np.testing.assert_allclose(output.array[inner], array[inner], rtol=1e-4, atol=1e-4)


def test_translate_nifti_keeps_shape_and_affine(savedmodel, tmp_path, capsys):
    affine = np.array([[-2.5, 0, 0, 50.0], [0, 2.4, 0, -40.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])
    array = np.random.default_rng(1).gamma(2.0, 1.0, (40, 36, 12)).astype(np.float32)
    write_nifti(Volume(array, affine, "PT", "SUV"), tmp_path / "low_dose.nii.gz")
    out = tmp_path / "out" / "denoised.nii.gz"
    assert main(["translate", "--model", str(savedmodel.parent), "--input", str(tmp_path / "low_dose.nii.gz"),
                 "--output", str(out), "--batch-size", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    image = nib.load(str(out))
    assert image.shape == array.shape
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    result = read_volume(out)
    assert (result.modality, result.unit) == ("PT", "SUV")
    # The output lies in the volume's normalization window (tanh output de-normalized).
    high = float(np.percentile(array, 99.5))
    assert result.array.min() >= -1e-4 and result.array.max() <= high * 1.0001
    assert np.std(result.array) > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["denoised.nii.gz"]  # no temporary file left


def test_translate_dicom_series_gives_nifti_with_series_geometry(savedmodel, tmp_path):
    rows, columns, num_slices = 40, 48, 10
    pixels = np.random.default_rng(2).integers(0, 4000, (rows, columns, num_slices)).astype(np.uint16)
    row_spacing, column_spacing, slice_spacing = 3.0, 2.5, 3.27
    # DICOM LPS → NIfTI RAS: x and y flip; i runs along a row (column spacing), j down the rows.
    expected = np.array([
        [-column_spacing, 0, 0, 60.0],
        [0, -row_spacing, 0, 45.0],
        [0, 0, slice_spacing, -50.0],
        [0, 0, 0, 1],
    ])
    write_dicom_series(tmp_path / "series", 0.5 * pixels.transpose(1, 0, 2), expected, modality="PT", slope=0.5,
                       intercept=0.0, extra={"Units": "BQML"})
    out = tmp_path / "pet.nii"
    assert main(["translate", "--model", str(savedmodel), "--input", str(tmp_path / "series"),
                 "--output", str(out), "--quiet"]) == 0
    image = nib.load(str(out))
    assert image.shape == (columns, rows, num_slices)
    np.testing.assert_allclose(image.affine, expected, atol=1e-4)
    assert read_volume(out).unit == "Bq/ml"  # no SUV information in the header: Bq/ml in, Bq/ml out


def test_unreadable_inputs_are_clear_errors(savedmodel, tmp_path, capsys):
    (tmp_path / "garbage.nii").write_text("not an image")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no DICOM here")
    cases = [
        (tmp_path / "garbage.nii", "not a readable NIfTI"),
        (tmp_path / "notes", "none of 1 files is DICOM"),
        (tmp_path / "missing.nii.gz", "does not exist"),
    ]
    for path, reason in cases:
        assert main(["translate", "--model", str(savedmodel), "--input", str(path), "--output", str(tmp_path / "o.nii.gz")]) == 2
        assert reason in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()
    assert main(["translate", "--model", str(savedmodel), "--input", str(tmp_path / "garbage.nii"), "--output", str(tmp_path / "o.png")]) == 2
    assert "must be a NIfTI file name" in capsys.readouterr().err
    assert main(["translate", "--model", str(tmp_path), "--input", str(tmp_path / "garbage.nii"), "--output", str(tmp_path / "o.nii")]) == 2
    assert "is neither an export (a SavedModel" in capsys.readouterr().err


def test_wrong_modality_is_refused(tmp_path):
    from medgan_tf.errors import UserError

    ct = Volume(np.zeros((8, 8, 4), np.float32), np.eye(4), "CT", "HU")
    with pytest.raises(UserError, match="the input of this pet_denoise model has modality CT; expected PT"):
        translation_lib.translate_volume(identity_model(), ct)


# --------------------------------------------------------------------------- any field of view: tiles


def window_model(function, size: int = SIZE, high: float = 1000.0) -> loading.RunModel:
    """A pet_denoise model of field of view `size`² with a fixed window [0, `high`] (so no clipping
    and the same normalization for any crop) whose generator is `function` (normalized space)."""
    experiment = config_lib.override(presets.task_preset("pet_denoise"), {"data.image_size": size})
    window = dataclasses.replace(experiment.data.source_normalization, kind="window", low=0.0, high=high)
    data = dataclasses.replace(
        experiment.data, source_normalization=window, target_normalization=dataclasses.replace(window, share_source=False)
    )
    experiment = dataclasses.replace(experiment, data=data)
    return loading.RunModel(Path("window"), experiment, signatures.normalization_description(experiment), function)


def large_pattern(shape=(240, 200, 4)) -> np.ndarray:
    """An asymmetric pattern with distinct non-background blocks in all four in-plane corners."""
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    array = 1.0 + 0.5 * i + 0.3 * j + 7.0 * k + 20.0 * np.sin(i / 7.0) * np.cos(j / 5.0) + 20.0
    array += np.random.default_rng(3).uniform(0.0, 10.0, shape)
    for value, (rows, columns) in zip((300, 400, 500, 600), [(slice(0, 3), slice(0, 3)), (slice(-3, None), slice(0, 3)),
                                                              (slice(0, 3), slice(-3, None)), (slice(-3, None), slice(-3, None))]):
        array[rows, columns] = value
    return array.astype(np.float32)


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([2.8, 2.8, 2.0, 1.0]),
        np.array([[-2.8, 0, 0, 300.0], [0, -2.8, 0, 250.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]]),  # LPS-like axes
    ],
)
def test_identity_model_over_tiles_returns_every_voxel(affine):
    """A 240×200 slice at the model spacing is 7.5 × 6.25 fields of view of 32²: overlapping tiles
    cover it all, corners and seams included, and an identity model gives back the input."""
    calls = []

    def identity(images, training):
        assert images.shape[1:] == (32, 32, 1)  # the model only ever sees S×S tiles
        calls.append(len(images))
        return images

    array = large_pattern()
    progress = []
    translation = translation_lib.translate_volume(
        window_model(identity, size=32), Volume(array, affine, "PT", "SUV"), batch_size=64,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert translation.grid_shape == (240, 200, 4)
    assert translation.tiles_per_slice == 10 * 8  # 0, 24, …, 192, 208 × 0, 24, …, 144, 168
    assert calls == [64] * 5 and progress[-1] == (320, 320)
    output = translation.volume.array
    assert output.shape == array.shape
    tolerance = 1e-4 * float(array.max() - array.min())
    np.testing.assert_allclose(output, array, rtol=0, atol=tolerance)
    for corner in [(0, 0), (-1, 0), (0, -1), (-1, -1)]:
        np.testing.assert_allclose(output[corner], array[corner], atol=tolerance)


def test_tiles_fit_the_normalization_on_the_whole_volume():
    array = np.random.default_rng(4).gamma(2.0, 1.0, (100, 70, 3)).astype(np.float32)
    experiment = config_lib.override(presets.task_preset("pet_denoise"), {"data.image_size": 32})
    model = loading.RunModel(Path("identity"), experiment, signatures.normalization_description(experiment), lambda x, training: x)
    translation = translation_lib.translate_volume(model, Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV"))
    high = float(np.percentile(array, 99.5))
    assert translation.source_params["high"] == pytest.approx(high, rel=1e-6) and translation.tiles_per_slice > 1
    np.testing.assert_allclose(translation.volume.array, np.clip(array, 0.0, high), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.6])
def test_position_independent_model_gives_the_same_result_tiled_and_untiled(overlap):
    """f(x) = x/2 in normalized space: a 100×90 volume through tiles and a 32² crop of it that
    fits the field of view (one tile, as before tiling) agree where both apply."""
    model = window_model(lambda images, training: 0.5 * images, size=32)
    array = large_pattern((100, 90, 3))
    affine = np.diag([2.8, 2.8, 2.0, 1.0])
    tiled = translation_lib.translate_volume(model, Volume(array, affine, "PT", "SUV"), tile_overlap=overlap)
    assert tiled.tiles_per_slice > 1
    crop_affine = affine.copy()
    crop_affine[:2, 3] = [2.8 * 40, 2.8 * 21]  # voxel (40, 21) of the large volume
    untiled = translation_lib.translate_volume(model, Volume(array[40:72, 21:53], crop_affine, "PT", "SUV"))
    assert untiled.tiles_per_slice == 1
    np.testing.assert_allclose(tiled.volume.array[40:72, 21:53], untiled.volume.array, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(tiled.volume.array, 250.0 + 0.5 * array, rtol=1e-5, atol=1e-3)  # window [0, 1000]


def test_tile_overlap_outside_zero_one_is_a_user_error(savedmodel, tmp_path, capsys):
    write_nifti(Volume(np.ones((8, 8, 2), np.float32), np.eye(4), "PT", "SUV"), tmp_path / "in.nii")
    assert main(["translate", "--model", str(savedmodel), "--input", str(tmp_path / "in.nii"), "--output",
                 str(tmp_path / "o.nii"), "--tile-overlap", "1.5"]) == 2
    assert "--tile-overlap" in capsys.readouterr().err and not (tmp_path / "o.nii").exists()


def test_translate_command_tiles_a_large_volume(savedmodel, tmp_path, capsys):
    array = np.random.default_rng(6).gamma(2.0, 1.0, (200, 64, 2)).astype(np.float32)  # 560 mm wide: 3.1 × 64²
    write_nifti(Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV"), tmp_path / "wide.nii.gz")
    out = tmp_path / "wide_out.nii.gz"
    assert main(["translate", "--model", str(savedmodel), "--input", str(tmp_path / "wide.nii.gz"), "--output", str(out),
                 "--tile-overlap", "0.5"]) == 0
    assert "2 slices of 200×64 in 6 tiles of 64² each" in capsys.readouterr().out
    result = read_volume(out).array
    assert result.shape == array.shape and np.all(np.isfinite(result)) and np.std(result[-20:]) > 0
