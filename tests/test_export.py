"""SavedModel export: TF Serving layout, named signatures, physical units, assets, errors.

A tiny run (64², one U-block, 8 base filters, untrained weights from a real checkpoint) keeps
this file fast; the numbers checked do not depend on training.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import config as config_lib

from medgan_tf import presets
from medgan_tf.cli import main

from helpers import SIZE, make_run  # noqa: E402  (tests/ is on sys.path)
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    generator, experiment = make_run(root / "run", "pet_denoise")
    assert main(["export", str(root / "run"), "--out", str(root / "savedmodels" / "pet_denoise")]) == 0
    return root, generator, experiment


def _clean_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return env


def test_layout_and_assets(exported):
    root, _, experiment = exported
    base = root / "savedmodels" / "pet_denoise"
    assert sorted(p.name for p in base.iterdir()) == ["1", "batching_parameters.txt", "models.config"]  # no temporary folder
    version = base / "1"
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    saved = config_lib.experiment_from_json((version / "assets" / "config.json").read_text())
    assert saved == experiment
    description = json.loads((version / "assets" / "normalization.json").read_text())
    assert description["image_size"] == SIZE
    assert description["source"] == {
        "modality": "PT", "unit": "SUV", "kind": "scale", "per_volume": True,
        "low": None, "high": None, "percentile_low": 0.0, "percentile": 99.5,
    }
    assert description["target"]["share_source"] is True
    assert description["physical_inputs"] == ["source", "source_low", "source_high"]


def test_saved_model_cli_lists_named_input_and_output(exported):
    root, _, _ = exported
    result = subprocess.run(
        [str(VENV_BIN / "saved_model_cli"), "show", "--dir", str(root / "savedmodels" / "pet_denoise" / "1"),
         "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True, text=True, env=_clean_env(), timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "inputs['source'] tensor_info:" in result.stdout
    assert "outputs['output'] tensor_info:" in result.stdout
    assert f"shape: (-1, {SIZE}, {SIZE}, 1)" in result.stdout
    assert "DT_FLOAT" in result.stdout


def test_fresh_process_reproduces_generator(exported, tmp_path):
    root, generator, _ = exported
    batch = np.random.default_rng(1).uniform(-1, 1, (3, SIZE, SIZE, 1)).astype(np.float32)
    np.save(tmp_path / "batch.npy", batch)
    expected = np.asarray(generator(batch, training=False))
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(root / 'savedmodels' / 'pet_denoise' / '1')!r})
        batch = np.load({str(tmp_path / 'batch.npy')!r})
        out = loaded.signatures["serving_default"](source=tf.constant(batch))["output"].numpy()
        np.save({str(tmp_path / 'out.npy')!r}, out)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=_clean_env(), timeout=120)
    output = np.load(tmp_path / "out.npy")
    assert output.shape == (3, SIZE, SIZE, 1)
    np.testing.assert_allclose(output, expected, atol=1e-5)
    assert np.std(expected) > 1e-3  # a constant output would make the comparison weak


def test_wrong_inputs_name_the_expected_shape(exported):
    import tensorflow as tf

    from medgan_tf.serving import loading
    from medgan_tf.errors import UserError

    root, _, _ = exported
    model = loading.load_export(root / "savedmodels" / "pet_denoise")  # base folder → highest version
    assert model.path.name == "1" and model.image_size == SIZE
    for shape in [(1, 32, 32, 1), (SIZE, SIZE, 1), (1, SIZE, SIZE, 3), (1, SIZE, SIZE, 1, 1)]:
        with pytest.raises(UserError, match=rf"expected float32 \(batch, {SIZE}, {SIZE}, 1\); received shape"):
            model(np.zeros(shape, np.float32))
        # A tf.Tensor skips the Python binding's spec check and reaches the graph, as TF Serving's
        # requests do: the in-graph assertion must stop it (a rank-3 input used to abort the
        # process inside the convolution) and name the expected shape.
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"expected float32 \(batch, {SIZE}, {SIZE}, 1\)"):
            model.loaded.signatures["serving_default"](source=tf.zeros(shape))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"source_low: expected float32 \(batch,\)"):
        model.loaded.signatures["physical"](
            source=tf.zeros((2, SIZE, SIZE, 1)), source_low=tf.zeros([3]), source_high=tf.ones([3])
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="source_high must be greater than source_low"):
        model.loaded.signatures["physical"](
            source=tf.zeros((1, SIZE, SIZE, 1)), source_low=tf.ones([1]), source_high=tf.ones([1])
        )
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="float.*int32"):
        model.loaded.signatures["serving_default"](source=tf.zeros((1, SIZE, SIZE, 1), tf.int32))


def test_graph_carries_the_shape_assertion(exported):
    """TF Serving feeds the graph without the Python binding's spec check; the graph's own
    assertion, with the expected shape in its message, must be part of the saved model."""
    root, _, _ = exported
    graph = (root / "savedmodels" / "pet_denoise" / "1" / "saved_model.pb").read_bytes()
    assert f"source: expected float32 (batch, {SIZE}, {SIZE}, 1)".encode() in graph


def test_physical_signature_matches_numpy_pipeline(exported):
    from medgan_tf.serving import loading
    from medgan_tf.data import normalization

    root, generator, experiment = exported
    model = loading.load_export(root / "savedmodels" / "pet_denoise" / "1")
    rng = np.random.default_rng(2)
    suv = rng.gamma(2.0, 1.5, (2, SIZE, SIZE, 1)).astype(np.float32)
    params = [normalization.fit(suv[0], experiment.data.source_normalization), {"kind": "scale", "unit": "SUV", "low": 0.0, "high": 3.0}]
    expected = np.stack([
        normalization.denormalize(np.asarray(generator(normalization.normalize(suv[i : i + 1], params[i]), training=False))[0], params[i])
        for i in range(2)
    ])
    output = model.physical(suv, source_low=[p["low"] for p in params], source_high=[p["high"] for p in params])
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    # Hand check of the de-normalization range: outputs in [-1, 1] map into [low, high].
    assert output[1].min() >= -1e-5 and output[1].max() <= 3.0 + 1e-5


def test_fit_signature_matches_numpy_percentile(exported):
    from medgan_tf.serving import loading

    root, _, _ = exported
    model = loading.load_export(root / "savedmodels" / "pet_denoise" / "1")
    volume = np.random.default_rng(3).gamma(2.0, 1.0, (10, 20, 7)).astype(np.float32)
    fitted = model.loaded.signatures["fit_source_normalization"](volume=volume)
    assert float(fitted["source_low"]) == 0.0
    assert float(fitted["source_high"]) == pytest.approx(np.percentile(volume, 99.5), rel=1e-5)
    # A constant (all-zero) volume keeps the map invertible: high = low + 1, as normalization.fit does.
    empty = model.loaded.signatures["fit_source_normalization"](volume=np.zeros((4, 4), np.float32))
    assert (float(empty["source_low"]), float(empty["source_high"])) == (0.0, 1.0)
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match="expected at least one voxel"):
        model.loaded.signatures["fit_source_normalization"](volume=tf.zeros([0, 3]))


def test_versions_are_numbered_and_never_overwritten(exported):
    from medgan_tf.serving import export
    from medgan_tf.errors import UserError

    root, generator, experiment = exported
    base = root / "versions"
    assert export.next_version(base) == 1
    assert export.export_generator(generator, experiment, base, version=3).name == "3"
    assert export.export_generator(generator, experiment, base).name == "4"  # next free after the highest
    with pytest.raises(UserError, match="already exists"):
        export.export_generator(generator, experiment, base, version=3)
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == ["3", "4"]
    assert main(["export", str(root / "run"), "--out", str(base), "--version", "4"]) == 2


def test_failed_export_leaves_no_version_folder(exported, monkeypatch, tmp_path):
    """A crash inside the SavedModel write leaves no version folder; and at that moment everything
    the export had written was inside its staging folder beside the versions (its asset sources
    too), none in the temporary folder: a kill there leaves nothing in /tmp, and the next export
    removes the staging folder."""
    import tempfile

    import tensorflow as tf

    root, generator, experiment = exported
    from medgan_tf.serving import export

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    seen = {}

    def broken_save(*args, **kwargs):
        staging = Path(args[1])
        seen.update(staging=staging, assets=sorted(p.name for p in (staging / ".asset-sources").iterdir()),
                    temporary=list(temporary.iterdir()))
        Path(args[1], "saved_model.pb").write_bytes(b"half")  # a partial write, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    base = root / "broken"
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_generator(generator, experiment, base)
    assert list(base.iterdir()) == []
    assert seen["staging"].parent == base and seen["staging"].name.startswith(".1.export-")
    assert seen["assets"] == ["config.json", "normalization.json", "precision.json"]
    assert seen["temporary"] == [] and list(temporary.iterdir()) == []


def test_pet_ct_physical_signature_uses_the_hu_window(tmp_path):
    """PET→CT: the SUV input takes its volume's parameters, the HU output window is a constant."""
    from medgan_tf.serving import export, loading
    from medgan_tf.data import normalization

    generator, experiment = make_run(tmp_path / "run", "pet_ct")
    model = loading.load_export(export.export_run(tmp_path / "run", tmp_path / "sm"))
    assert model.normalization["physical_inputs"] == ["source", "source_low", "source_high"]
    assert model.normalization["target"]["low"] == -1000.0 and model.normalization["target"]["high"] == 2000.0
    suv = np.random.default_rng(4).gamma(2.0, 1.0, (1, SIZE, SIZE, 1)).astype(np.float32)
    params = normalization.fit(suv, experiment.data.source_normalization)
    output = model.physical(suv, source_low=params["low"], source_high=params["high"])
    normalized = np.asarray(generator(normalization.normalize(suv, params), training=False))
    np.testing.assert_allclose(output, -1000.0 + (normalized + 1.0) * 1500.0, rtol=1e-5, atol=2e-3)
    assert "fit_source_normalization" in model.signatures


@pytest.mark.parametrize(
    "task, inputs",
    [
        ("pet_ct", ["source", "source_low", "source_high"]),
        ("mr_motion", ["source", "source_low", "source_high"]),
        ("pet_denoise", ["source", "source_low", "source_high"]),
    ],
)
def test_physical_inputs_per_task(task, inputs):
    from medgan_tf.serving import signatures

    description = signatures.normalization_description(presets.task_preset(task))
    assert description["physical_inputs"] == inputs


def test_fixed_window_source_and_unshared_target_inputs():
    """Fixed windows on both sides need no parameters; a per-volume target not shared with the
    source needs its own."""
    import dataclasses

    from medgan_tf.serving import signatures

    experiment = presets.task_preset("pet_ct")
    ct_to_ct = dataclasses.replace(
        experiment, data=dataclasses.replace(experiment.data, source_normalization=experiment.data.target_normalization)
    )
    assert signatures.normalization_description(ct_to_ct)["physical_inputs"] == ["source"]
    unshared = dataclasses.replace(
        experiment,
        data=dataclasses.replace(experiment.data, target_normalization=experiment.data.source_normalization),
    )
    assert signatures.normalization_description(unshared)["physical_inputs"] == [
        "source", "source_low", "source_high", "target_low", "target_high",
    ]
