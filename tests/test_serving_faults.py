"""Faults at the serving edge are refused with a clear message, never passed on silently.

One tiny export (64², one U-block, untrained) is shared by the module. Every path is covered:
the Python wrappers (ExportedModel, its checked `signatures`, RunModel), the raw loaded
signatures fed tf.Tensors (what TF Serving's requests reach: the graph's own assertions), and
whole-volume translation.
"""

from pathlib import Path

import numpy as np
import pytest

from medgan_tf.data import normalization
from medgan_tf.data.io import Volume, write_nifti
from medgan_tf.errors import UserError
from medgan_tf.serving import export, loading, signatures
from medgan_tf.serving import translation as translation_lib

from helpers import SIZE, make_run  # noqa: E402  (tests/ is on sys.path)

IMAGE_SPEC = rf"float32 \(batch, {SIZE}, {SIZE}, 1\)"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    generator, experiment = make_run(root / "run", "pet_denoise")
    model = loading.load_export(export.export_run(root / "run", root / "savedmodels"))
    run_model = loading.RunModel(root / "run", experiment, signatures.normalization_description(experiment), generator)
    return model, run_model


def _slices(batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 1)).astype(np.float32)


def _as(kind: str, array: np.ndarray):
    import tensorflow as tf

    return tf.constant(array) if kind == "tensor" else array


# --------------------------------------------------------------------------- dtype, rank, size


@pytest.mark.parametrize("kind", ["numpy", "tensor"])
@pytest.mark.parametrize("dtype", ["float64", "int32", "float16"])
def test_wrong_dtype_is_refused_with_the_expected_spec(exported, dtype, kind):
    """TensorFlow casts numpy arrays silently and refuses tensors without naming the shape."""
    model, run_model = exported
    source = _as(kind, np.zeros((2, SIZE, SIZE, 1), dtype))
    message = rf"source: expected {IMAGE_SPEC}; received {dtype} of shape \(2, {SIZE}, {SIZE}, 1\)"
    for call in (
        lambda: model(source),
        lambda: run_model(source),
        lambda: loading.check_slices(source, SIZE),
        lambda: model.physical(source, source_low=0.0, source_high=1.0),
        lambda: model.signatures["serving_default"](source=source),
        lambda: model.signatures["physical"](source=source, source_low=np.zeros(2, np.float32), source_high=np.ones(2, np.float32)),
    ):
        with pytest.raises(UserError, match=message):
            call()
    parameter = _as(kind, np.zeros(2, dtype))
    with pytest.raises(UserError, match=rf"source_low: expected float32 \(batch,\); received {dtype}"):
        model.signatures["physical"](source=_slices(), source_low=parameter, source_high=np.ones(2, np.float32))
    with pytest.raises(UserError, match=rf"source_low: expected float32 \(batch,\) or a scalar; received {dtype}"):
        model.physical(_slices(), source_low=parameter, source_high=1.0)
    volume = _as(kind, np.ones((4, 5, 6), dtype))
    with pytest.raises(UserError, match=rf"volume: expected float32 \(any shape\); received {dtype}"):
        model.signatures["fit_source_normalization"](volume=volume)


@pytest.mark.parametrize("shape", [(2, 32, 32, 1), (SIZE, SIZE, 1), (1, SIZE, SIZE, 3), (1, SIZE, SIZE, 1, 1)])
def test_wrong_rank_or_size_is_refused_with_the_expected_spec(exported, shape):
    model, run_model = exported
    source = np.zeros(shape, np.float32)
    message = rf"source: expected {IMAGE_SPEC}; received shape \({shape[0]}, "
    for call in (
        lambda: model(source),
        lambda: run_model(source),
        lambda: model.physical(source, source_low=0.0, source_high=1.0),
        lambda: model.signatures["serving_default"](source=source),
    ):
        with pytest.raises(UserError, match=message):
            call()


def test_checked_signature_refuses_mismatched_batches_and_names(exported):
    model, _ = exported
    physical = model.signatures["physical"]
    with pytest.raises(UserError, match=r"one value per slice; received batch sizes \{'source': 2, 'source_high': 2, 'source_low': 3\}"):
        physical(source=_slices(2), source_low=np.zeros(3, np.float32), source_high=np.ones(2, np.float32))
    with pytest.raises(UserError, match=r"missing \['source_high'\], unexpected \['target_low'\]"):
        physical(source=_slices(2), source_low=np.zeros(2, np.float32), target_low=np.ones(2, np.float32))
    with pytest.raises(UserError, match=r"source_low: expected float32 \(batch,\) with batch = 2, or a scalar; received shape \(3,\)"):
        model.physical(_slices(2), source_low=[0.0, 0.0, 0.0], source_high=1.0)


# --------------------------------------------------------------------------- NaN / inf


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_voxel_is_refused_by_the_wrappers(exported, bad_value):
    """One NaN voxel would otherwise turn its whole output slice into NaN (instance norm)."""
    model, run_model = exported
    source = _slices(3)
    source[1, 5, 7, 0] = bad_value
    message = r"source: expected finite values; received 1 NaN/inf value\(s\) in slice\(s\) \[1\]"
    for call in (
        lambda: model(source),
        lambda: run_model(source),
        lambda: model.predict(source, batch_size=2),
        lambda: model.physical(source, source_low=0.0, source_high=1.0),
        lambda: model.signatures["serving_default"](source=source),
    ):
        with pytest.raises(UserError, match=message):
            call()
    with pytest.raises(UserError, match=r"source_high: expected finite values; received 2 NaN/inf"):
        model.physical(_slices(2), source_low=0.0, source_high=bad_value)


def test_graph_refuses_non_finite_values_for_tensor_callers(exported):
    """A tf.Tensor (or a TF Serving request) reaches the graph: its assertions must refuse."""
    import tensorflow as tf

    model, _ = exported
    raw = model.loaded.signatures
    source = _slices(3)
    source[2, 0, 0, 0] = np.nan
    source[2, 1, 0, 0] = np.inf
    graph_message = r"source: expected finite values; received\] \[2\] \[NaN/inf values\] \[in slices\] \[2\]"
    with pytest.raises(tf.errors.InvalidArgumentError, match=graph_message):
        raw["serving_default"](source=tf.constant(source))
    ones = tf.ones([3])
    with pytest.raises(tf.errors.InvalidArgumentError, match=graph_message):
        raw["physical"](source=tf.constant(source), source_low=tf.zeros([3]), source_high=ones)
    with pytest.raises(tf.errors.InvalidArgumentError, match="source_high must be greater than source_low and both finite"):
        raw["physical"](source=tf.constant(_slices(1)), source_low=tf.zeros([1]), source_high=tf.constant([np.inf]))
    graph = (model.path / "saved_model.pb").read_bytes()
    assert b"source: expected finite values; received" in graph


# --------------------------------------------------------------------------- batch of 0 slices


def test_empty_batch_returns_an_empty_batch_on_every_path(exported):
    import tensorflow as tf

    model, run_model = exported
    empty = np.zeros((0, SIZE, SIZE, 1), np.float32)
    raw = model.loaded.signatures
    outputs = [
        raw["serving_default"](source=tf.constant(empty))["output"].numpy(),
        raw["physical"](source=tf.constant(empty), source_low=tf.zeros([0]), source_high=tf.ones([0]))["output"].numpy(),
        model.signatures["serving_default"](source=empty)["output"].numpy(),
        model(empty),
        model.predict(empty),
        model.physical(empty, source_low=0.0, source_high=1.0),
        run_model(empty),
        translation_lib.predict_slices(model, empty, batch_size=4),
    ]
    for output in outputs:
        assert output.shape == (0, SIZE, SIZE, 1) and output.dtype == np.float32


# --------------------------------------------------------------------------- fitting the normalization


def test_fit_signature_refuses_an_empty_or_non_finite_volume(exported):
    import tensorflow as tf

    model, _ = exported
    raw, checked = model.loaded.signatures["fit_source_normalization"], model.signatures["fit_source_normalization"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"volume: expected at least one voxel; received shape\] \[0 3\]"):
        raw(volume=tf.zeros([0, 3]))
    with pytest.raises(UserError, match=r"volume: expected at least one voxel; received shape \(0, 3\)"):
        checked(volume=np.zeros((0, 3), np.float32))
    volume = np.random.default_rng(5).gamma(2.0, 1.0, (6, 7, 8)).astype(np.float32)
    volume[1, 2, 3], volume[4, 4, 4] = np.nan, -np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"volume: expected finite values; received\] \[2\] \[NaN/inf values\]"):
        raw(volume=tf.constant(volume))
    with pytest.raises(UserError, match=r"volume: expected finite values; received 2 NaN/inf value\(s\);"):
        checked(volume=volume)


@pytest.mark.parametrize("kind", ["window", "scale", "percentile"])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_normalization_fit_refuses_non_finite_values(kind, bad_value):
    from medgan_tf.config import NormalizationConfig

    config = NormalizationConfig(kind=kind, low=-1000.0, high=2000.0)
    array = np.random.default_rng(6).gamma(2.0, 1.0, (5, 5, 4))
    array[0, 1, 2] = bad_value
    with pytest.raises(UserError, match=rf"cannot fit the '{kind}' normalization: expected finite values; received 1 NaN/inf of 100 voxels"):
        normalization.fit(array, config)
    with pytest.raises(UserError, match=r"expected at least one voxel; received shape \(0,\)"):
        normalization.fit(np.zeros(0), config)


# --------------------------------------------------------------------------- whole volumes


def _nan_on_slices(bad_slices):
    """A stand-in generator: the identity, except NaN in one voxel of the given stack indices."""
    seen = []

    def generator(images, training):
        output = np.array(images, copy=True)
        start = sum(seen)
        seen.append(len(images))
        for offset in range(len(images)):
            if start + offset in bad_slices:
                output[offset, 3, 3, 0] = np.nan
        return output

    return generator


def test_translate_refuses_non_finite_model_output_naming_the_slices(exported, tmp_path):
    model, run_model = exported
    broken = loading.RunModel(Path("broken"), run_model.config, run_model.normalization, _nan_on_slices({2, 5}))
    array = np.random.default_rng(7).gamma(2.0, 1.0, (SIZE, SIZE, 9)).astype(np.float32)
    volume = Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV")
    with pytest.raises(UserError, match=r"NaN/inf values for 2 of 9 slices \(indices \[2, 5\]\)"):
        translation_lib.translate_volume(broken, volume, batch_size=4)
    write_nifti(volume, tmp_path / "in.nii.gz")
    broken = loading.RunModel(Path("broken"), run_model.config, run_model.normalization, _nan_on_slices({0}))
    with pytest.raises(UserError, match=r"indices \[0\]"):
        translation_lib.translate_file(broken, tmp_path / "in.nii.gz", tmp_path / "out.nii.gz", quiet=True)
    assert not (tmp_path / "out.nii.gz").exists()


def test_translate_refuses_a_non_finite_volume(exported, tmp_path):
    model, _ = exported
    array = np.random.default_rng(8).gamma(2.0, 1.0, (SIZE, SIZE, 4)).astype(np.float32)
    array[10, 10, 1] = np.nan
    volume = Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV")
    with pytest.raises(UserError, match="input volume holds 1 NaN/inf voxels; expected finite values"):
        translation_lib.translate_volume(model, volume)
    write_nifti(volume, tmp_path / "nan.nii.gz")  # a file is refused when it is read
    with pytest.raises(UserError, match=r"cannot read input .*nan\.nii\.gz: volume holds 1 NaN/inf voxels"):
        translation_lib.translate_file(model, tmp_path / "nan.nii.gz", tmp_path / "out.nii.gz", quiet=True)
    assert not (tmp_path / "out.nii.gz").exists()


def test_guards_leave_valid_outputs_bit_identical(exported):
    """The assertions and the batch-0 branch change nothing for valid input: the export's output
    equals the same generator traced without them, bit for bit."""
    import tensorflow as tf

    model, run_model = exported
    plain = tf.function(lambda images: run_model.generator(images, training=False))
    source = _slices(3, seed=9)
    np.testing.assert_array_equal(model(source), plain(tf.constant(source)).numpy())
    np.testing.assert_array_equal(model.signatures["serving_default"](source=source)["output"].numpy(), model(source))
