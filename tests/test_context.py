"""2.5D context slices and multi-channel sources: windows, records, reader, networks, export,
translation and the slice-consistency measure.

One small dataset (3 patients, 64² × 6 slices, PET source + CT `source_2`, converted with
--context-slices 2 through the real converter) serves the reader and the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from medgan_tf import config as config_lib
from medgan_tf import tasks
from medgan_tf.cli import main
from medgan_tf.data import context
from medgan_tf.errors import UserError

from helpers import hounsfield_ramp, tiny_config, write_two_source_patients  # noqa: E402  (tests/ is on sys.path)


SIZE, SLICES, K = 64, 6, 2  # the dataset (evaluation's VIF needs ≥ 41² slices)
NET = 32  # the network tests


# --------------------------------------------------------------------------- windows (numpy)


def test_windows_replicate_edges_and_keep_csv_channel_order():
    z = np.arange(5, dtype=np.float32)
    first = np.broadcast_to(z, (2, 2, 5))  # slice z holds the value z
    second = np.broadcast_to(100 + z, (2, 2, 5))
    windows = context.stack_windows([first, second], 2)
    assert windows.shape == (2, 2, 5, 10)
    # Hand-written: for each source in CSV order, slices z−2 … z+2 with the ends repeated.
    assert windows[0, 0, 0].tolist() == [0, 0, 0, 1, 2, 100, 100, 100, 101, 102]
    assert windows[0, 0, 2].tolist() == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert windows[0, 0, 4].tolist() == [2, 3, 4, 4, 4, 102, 103, 104, 104, 104]
    np.testing.assert_array_equal(context.window_at([first, second], 4, 2), windows[:, :, 4])
    # A smaller K read from a K = 2 store picks the inner channels of each source.
    indices = context.select_channels(2, 2, 1, 2)
    assert indices == [1, 2, 3, 6, 7, 8]
    np.testing.assert_array_equal(windows[..., indices], context.stack_windows([first, second], 1))
    assert context.select_channels(2, 2, 0, 1) == [2]
    with pytest.raises(ValueError):
        context.select_channels(1, 2, 2, 1)


def test_config_derives_channels_and_refuses_bad_values():
    data = config_lib.DataConfig(context_slices=2, extra_source_modalities=("CT",))
    assert (data.source_channels, data.input_channels, data.centre_channel) == (2, 10, 2)
    paper = config_lib.DataConfig()
    assert (paper.source_channels, paper.input_channels, paper.centre_channel) == (1, 1, 0)
    config = tiny_config()
    with pytest.raises(UserError, match="context_slices"):
        config_lib.validate(config_lib.override(config, {"data.context_slices": -1}))
    with pytest.raises(UserError, match="extra_source_modalities"):
        config_lib.validate(config_lib.override(config, {"data.extra_source_modalities": ("US",)}))


# --------------------------------------------------------------------------- networks


def test_paper_model_through_the_new_path_equals_the_old_builders():
    """K = 0, one source: the builders the training uses give the same graph, parameter count and
    (with the same weights) outputs as the paper's builders called without any 2.5D argument."""
    from medgan_tf.models import build_casnet, build_discriminator, build_networks, ublock_trainable_params

    config = tiny_config(ublocks=2)
    networks = build_networks(config)
    old_generator = build_casnet(config.generator, NET)
    old_discriminator = build_discriminator(config.discriminator, NET, channels=1)
    assert networks.generator.count_params() == old_generator.count_params()
    assert networks.discriminator.count_params() == old_discriminator.count_params()
    assert [w.shape for w in networks.generator.weights] == [w.shape for w in old_generator.weights]
    old_generator.set_weights(networks.generator.get_weights())
    old_discriminator.set_weights(networks.discriminator.get_weights())
    source = np.random.default_rng(0).uniform(-1, 1, (2, NET, NET, 1)).astype(np.float32)
    candidate = np.random.default_rng(1).uniform(-1, 1, (2, NET, NET, 1)).astype(np.float32)
    np.testing.assert_array_equal(networks.generator(source), old_generator(source))
    new_out, old_out = networks.discriminator([candidate, source]), old_discriminator([candidate, source])
    np.testing.assert_array_equal(new_out["logits"], old_out["logits"])
    for new, old in zip(new_out["features"], old_out["features"]):
        np.testing.assert_array_equal(new, old)
    # CasNet-6 at 256² by arithmetic with the new argument: the paper's count.
    paper = config_lib.GeneratorConfig()
    assert 6 * ublock_trainable_params(paper, 256, input_channels=1) == 326_446_854


def test_context_networks_widen_only_the_first_conv_and_keep_the_raw_pair():
    from medgan_tf.models import build_networks, ublock_trainable_params

    config = config_lib.override(tiny_config(ublocks=2), {"data.context_slices": 2,
                                                         "data.extra_source_modalities": ("CT",)})
    networks = build_networks(config)
    generator, discriminator = networks.generator, networks.discriminator
    assert generator.input_shape == (None, NET, NET, 10) and generator.output_shape == (None, NET, NET, 1)
    one = ublock_trainable_params(config.generator, NET)
    assert generator.count_params() == 2 * one + 16 * 8 * (10 - 1)  # first conv: 4×4 × 10 → 8 filters
    assert generator.count_params() == one + ublock_trainable_params(config.generator, NET, input_channels=10)
    window = np.random.default_rng(0).uniform(-1, 1, (1, NET, NET, 10)).astype(np.float32)
    candidate = np.random.default_rng(1).uniform(-1, 1, (1, NET, NET, 1)).astype(np.float32)
    features = discriminator([candidate, window])["features"]
    # The pixel term's raw pair is (candidate, centre slice of the first source = channel K).
    np.testing.assert_array_equal(features[0], np.concatenate([candidate, window[..., 2:3]], axis=-1))


# --------------------------------------------------------------------------- the dataset


def _hounsfield(z_index: int) -> np.ndarray:
    return hounsfield_ramp(z_index, SIZE)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    write_two_source_patients(root, count=3, size=SIZE, slices=SLICES)
    out = root / "data"
    assert main(["convert", "--pairs", str(root / "pairs.csv"), "--task", "pet_denoise", "--out", str(out),
                 "--image-size", str(SIZE), "--context-slices", str(K), "--extra-source-modalities", "CT",
                 "--salt", "context-test-salt-0123"]) == 0
    return root, out


def test_manifest_and_records_carry_the_window(converted):
    from medgan_tf.data.dataset import records_by_patient
    from medgan_tf.data.manifest import read_manifest

    _, out = converted
    manifest = read_manifest(out)
    assert context.stored_context(manifest) == (K, 2, ("CT",))
    volume = manifest["volumes"][0]
    assert volume["source_2"]["normalization"]["kind"] == "window"
    for records in records_by_patient(out, "train").values():
        for record in records:
            assert record["source_stack"].shape == (SIZE, SIZE, 10)
            # The plain `source` is the centre slice of the first source.
            np.testing.assert_array_equal(record["source_stack"][..., K], record["source"][..., 0])
            assert [p["kind"] for p in record["channel_params"]] == ["scale", "window"]
            assert record["channel_params"][0] == record["source_params"]


@pytest.mark.parametrize("context_slices", [K, 1])
def test_reader_delivers_each_slice_its_neighbours_in_csv_order(converted, context_slices):
    """For each training element: 2K+1 slices of the first source (compared with the records'
    own `source` slices of the neighbours), then 2K+1 of source_2 (compared with the CT values
    written, normalized by hand with the HU window −1000…2000), ends repeated."""
    from medgan_tf.data.dataset import make_dataset, records_by_patient

    _, out = converted
    by_target = {}
    for records in records_by_patient(out, "train").values():
        by_slice = {record["slice_index"]: record for record in records}
        for record in records:
            by_target[record["target"].tobytes()] = (record, by_slice)
    dataset = make_dataset(out, "train", 1, shuffle=False, deterministic=True, context_slices=context_slices,
                           source_channels=2)
    seen = 0
    for window, target in dataset.as_numpy_iterator():
        record, by_slice = by_target[target[0].tobytes()]
        z, last = record["slice_index"], max(by_slice)
        assert window.shape == (1, SIZE, SIZE, 2 * (2 * context_slices + 1))
        width = 2 * context_slices + 1
        for position, offset in enumerate(range(-context_slices, context_slices + 1)):
            neighbour = min(max(z + offset, 0), last)
            np.testing.assert_array_equal(window[0, ..., position], by_slice[neighbour]["source"][..., 0])
            expected_ct = 2.0 * (_hounsfield(neighbour) + 1000.0) / 3000.0 - 1.0
            np.testing.assert_allclose(window[0, ..., width + position], expected_ct, atol=1e-4)
        seen += 1
    assert seen == sum(len(v) for v in records_by_patient(out, "train").values())


def test_reader_refuses_more_context_than_converted(converted):
    from medgan_tf.data.dataset import make_dataset

    _, out = converted
    with pytest.raises(UserError, match="--context-slices 2"):
        make_dataset(out, "train", 1, context_slices=3, source_channels=2)


# --------------------------------------------------------------------------- end to end


def test_train_export_reload_in_a_fresh_process_and_translate(converted, tmp_path):
    """K = 2 and two sources: train a few steps (Fila-sGAN: its style reference is the centre
    source slice), export, reload in a new process, check the signature's channel count and its
    refusal of a wrong one, translate a volume from two input volumes, evaluate."""
    root, out = converted
    run, models = tmp_path / "run", tmp_path / "savedmodels"
    assert main(["train", "--task", "pet_denoise", "--data", str(out), "--model", "fila_sgan", "--image-size",
                 str(SIZE), "--ublocks", "1", "--base-filters", "4", "--epochs", "1", "--steps-per-epoch", "2",
                 "--vgg-weights", "none", "--context-slices", str(K), "--validation-steps", "1", "--logdir", str(run),
                 "--quiet"]) == 0
    saved = config_lib.experiment_from_json((run / "config.json").read_text())
    assert saved.data.context_slices == K and saved.data.extra_source_modalities == ("CT",)
    assert main(["export", str(run), "--out", str(models)]) == 0
    version = models / "1"
    asset = json.loads((version / "assets" / "config.json").read_text())
    assert asset["serving_input"]["input_channels"] == 10
    assert json.loads((version / "assets" / "normalization.json").read_text())["input_channels"] == 10
    # The graph's own refusal (what TF Serving clients get) is part of the SavedModel.
    assert f"source: expected float32 (batch, {SIZE}, {SIZE}, 10)".encode() in (version / "saved_model.pb").read_bytes()

    script = textwrap.dedent(f"""
        import json, numpy as np
        from medgan_tf.cli import main
        from medgan_tf.errors import UserError
        from medgan_tf.serving.loading import load_model
        model = load_model({str(version)!r})
        spec = model.loaded.signatures["serving_default"].structured_input_signature[1]["source"]
        try:
            model(np.zeros((1, {SIZE}, {SIZE}, 1), np.float32))
            refused = ""
        except UserError as error:
            refused = str(error)
        window = np.random.default_rng(0).uniform(-1, 1, (2, {SIZE}, {SIZE}, 10)).astype(np.float32)
        output = model(window)
        # `physical`: each source normalized with its own window (PET per volume, CT the fixed HU window).
        rng = np.random.default_rng(1)
        physical = np.concatenate([rng.uniform(0, 10, (2, {SIZE}, {SIZE}, 5)),
                                   rng.uniform(-1200, 2200, (2, {SIZE}, {SIZE}, 5))], axis=-1).astype(np.float32)
        normalized = np.concatenate([physical[..., :5] / 5.0 - 1.0,
                                     2 * (np.clip(physical[..., 5:], -1000, 2000) + 1000) / 3000 - 1], axis=-1)
        expected = (model(normalized.astype(np.float32)) + 1.0) / 2.0 * 10.0
        physical_error = float(np.max(np.abs(model.physical(physical, source_low=0.0, source_high=10.0) - expected)))
        names = model.normalization["physical_inputs"]
        code = main(["translate", "--model", {str(version)!r}, "--input", {str(root / "p0_low.nii.gz")!r},
                     "--extra-input", {str(root / "p0_ct.nii.gz")!r}, "--output", {str(tmp_path / "out.nii.gz")!r},
                     "--quiet"])
        missing = main(["translate", "--model", {str(version)!r}, "--input", {str(root / "p0_low.nii.gz")!r},
                        "--output", {str(tmp_path / "bad.nii.gz")!r}, "--quiet"])
        print(json.dumps({{"shape": spec.shape.as_list(), "refused": refused, "output": list(output.shape),
                           "code": code, "missing": missing, "physical_error": physical_error, "names": names}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [None, SIZE, SIZE, 10]
    assert f"source: expected float32 (batch, {SIZE}, {SIZE}, 10) (10 channels" in report["refused"]
    assert f"received shape (1, {SIZE}, {SIZE}, 1)" in report["refused"]
    assert report["output"] == [2, SIZE, SIZE, 1]
    assert report["code"] == 0 and report["missing"] == 2
    assert report["names"] == ["source", "source_low", "source_high"]  # the CT window is a constant
    assert report["physical_error"] < 1e-3
    assert "this model takes 2 source volume(s)" in result.stderr

    import nibabel as nib

    written = nib.load(tmp_path / "out.nii.gz")
    assert written.shape == (SIZE, SIZE, SLICES) and np.isfinite(written.get_fdata()).all()

    assert main(["evaluate", "--model", str(version), "--data", str(out), "--split", "val", "--out",
                 str(tmp_path / "report"), "--figure-slices", "1"]) == 0
    measure = json.loads((tmp_path / "report" / "slice_consistency.json").read_text())
    assert measure["pairs"] == SLICES - 1 and measure["target_jump"] > 0


# --------------------------------------------------------------------------- the consistency measure


def test_slice_consistency_by_hand():
    from medgan_tf.evaluation.consistency import slice_consistency

    ones = np.ones((2, 2))
    outputs = {"a": {0: 0 * ones, 1: 0.4 * ones, 2: 0.4 * ones, 5: ones}}
    targets = {"a": {0: 0 * ones, 1: 0.1 * ones, 2: 0.2 * ones, 5: -ones}}
    measure = slice_consistency(outputs, targets)
    # Pairs (0,1), (1,2); slice 5 has no neighbour. Output: (0.4·127.5 + 0)/2 = 25.5;
    # target: (0.1·127.5 + 0.1·127.5)/2 = 12.75.
    assert measure["pairs"] == 2
    assert measure["output_jump"] == pytest.approx(25.5)
    assert measure["target_jump"] == pytest.approx(12.75)
    assert measure["ratio"] == pytest.approx(2.0)
    assert measure["difference"] == pytest.approx(12.75)
    assert measure["per_patient"]["a"]["ratio"] == pytest.approx(2.0)
    assert slice_consistency({"b": {3: ones}}, {"b": {3: ones}})["ratio"] is None


def test_reproduce_plans_a_2_5d_twin_of_every_model_under_the_same_budget():
    from medgan_tf.evaluation.consistency import consistency_table
    from medgan_tf.workflows import reproduce

    entries = reproduce.plan(["pix2pix", "medgan_1g"], context_slices=2)
    assert [(e.name, e.model, e.context_slices) for e in entries] == [
        ("pix2pix", "pix2pix", 0), ("medgan_1g", "medgan_1g", 0),
        ("pix2pix_context2", "pix2pix", 2), ("medgan_1g_context2", "medgan_1g", 2)]
    settings = reproduce.Settings(task="pet_denoise", budget_steps=7, image_size=64, base_filters=8, context_slices=2)
    twin, flat = (reproduce.experiment_config(e, settings) for e in (entries[2], entries[0]))
    assert twin.data.context_slices == 2 and flat.data.context_slices == 0
    assert config_lib.diff(twin, flat) == {"data.context_slices": (2, 0)}
    assert entries[2].label == "pix2pix 2.5D (K=2)"
    text = consistency_table({"pix2pix": {"output_jump": 4.0, "target_jump": 2.0, "ratio": 2.0, "difference": 2.0,
                                          "pairs": 3}, "other": None})
    assert "| pix2pix | 4.000 | 2.000 | 2.000 | +2.000 |" in text and "| other | n/a |" in text
    assert main(["reproduce", "--models", "pix2pix", "--context-slices", "-1"]) == 2


def test_bad_extra_sources_are_rejected_by_name(converted, tmp_path):
    import dataclasses

    from medgan_tf import presets, tasks
    from medgan_tf.data.pairs import PairRejected, convert_pair, read_pairs_csv

    root, _ = converted
    data = dataclasses.replace(tasks.TASKS.get("pet_denoise").data, image_size=SIZE, context_slices=1,
                               extra_source_modalities=("CT",))
    (tmp_path / "broken.nii.gz").write_bytes(b"not a volume")
    source, target = str(root / "p0_low.nii.gz"), str(root / "p0_full.nii.gz")
    with pytest.raises(PairRejected, match=r"^source_2: ") as rejected:
        convert_pair(source, target, "key", data, [str(tmp_path / "broken.nii.gz")])
    assert "broken" not in rejected.value.reason  # no file names in the manifest's reason
    with pytest.raises(PairRejected, match="0 extra source volume.*expects 1"):
        convert_pair(source, target, "key", data, [])
    records, summary = convert_pair(source, target, "key", data, [str(root / "p0_ct.nii.gz")])
    assert len(records) == SLICES and summary["source_2"]["normalization"]["kind"] == "window"
    (tmp_path / "gap.csv").write_text("patient_id,source,target,source_3\np,a.nii,b.nii,c.nii\n")
    with pytest.raises(UserError, match="source_2, source_3, … without gaps"):
        read_pairs_csv(tmp_path / "gap.csv")
