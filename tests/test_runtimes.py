"""`export --format onnx,openvino,litert`: each artefact carries the SavedModel's assets, and
`translate` / `evaluate --model` run it with its own runtime (onnxruntime, openvino, ai-edge-litert)
within the accuracy bound of the float32 SavedModel (per slice, 0–255 scale: PSNR ≥ 45 dB,
SSIM ≥ 0.999) on a tiny trained model (32², a few steps on the built-in synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import cli, metrics
from medgan_tf.errors import UserError

TINY = ["--task", "pet_denoise", "--image-size", "32", "--ublocks", "1", "--base-filters", "4",
        "--vgg-weights", "none", "--quiet", "--steps-per-epoch", "2"]
MIN_PSNR_DB, MIN_SSIM = 45.0, 0.999
RUNTIMES = {"onnx": "model.onnx", "openvino": "", "litert": "model.tflite"}  # "" = name the version folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run trained 4 steps, exported in all four formats at once."""
    from medgan_tf.workflows.builtin import ensure_builtin_dataset

    data = ensure_builtin_dataset("pet_denoise", 32)
    root = tmp_path_factory.mktemp("runtimes")
    assert cli.main(["train", *TINY, "--epochs", "2", "--data", str(data), "--logdir", str(root / "run")]) == 0
    assert cli.main(["export", str(root / "run"), "--out", str(root / "models"),
                     "--format", "savedmodel,onnx,openvino,litert"]) == 0
    return root, data


def _volume(root: Path) -> Path:
    from medgan_tf.data.io import write_nifti
    from medgan_tf.data.synthetic import patient_rng, synthesize_pair

    source, _target, _ = synthesize_pair("pet_denoise", patient_rng("pet_denoise", 0, 3))
    return write_nifti(source, root / "pet.nii.gz")


@pytest.mark.slow
def test_every_artefact_carries_the_same_assets_and_version(exported):
    root, _ = exported
    models = root / "models"
    # (models.config and batching_parameters.txt: the TF Serving kit, beside the SavedModel versions only)
    assert sorted(p.name for p in models.iterdir()) == ["1", "batching_parameters.txt", "litert", "models.config", "onnx",
                                                        "openvino"]
    assert not any((models / key / name).exists() for key in ("litert", "onnx", "openvino")
                   for name in ("models.config", "batching_parameters.txt"))
    reference = {p.name: p.read_bytes() for p in (models / "1" / "assets").iterdir()}
    assert sorted(reference) == ["config.json", "normalization.json", "precision.json"]
    for key, marker in (("onnx", "model.onnx"), ("openvino", "model.xml"), ("litert", "model.tflite")):
        assert sorted(p.name for p in (models / key).iterdir()) == ["1"]  # nothing partial left
        assert (models / key / "1" / marker).is_file()
        assert {p.name: p.read_bytes() for p in (models / key / "1" / "assets").iterdir()} == reference
    assert (models / "openvino" / "1" / "model.bin").is_file()


@pytest.mark.slow
def test_translate_runs_each_artefact_by_its_runtime_within_the_bound(exported, tmp_path):
    """The acceptance test: `translate --model EACH` against the SavedModel's volume."""
    import nibabel
    import onnxruntime
    import openvino
    from ai_edge_litert.interpreter import Interpreter

    from medgan_tf.serving import loading, runtimes

    root, _ = exported
    models = root / "models"
    volume = _volume(tmp_path)
    outputs = {}
    for key, name in {"savedmodel": "", **RUNTIMES}.items():
        model = models / key / "1" / name if key != "savedmodel" else models
        out = tmp_path / f"{key}.nii.gz"
        assert cli.main(["translate", "--model", str(model), "--input", str(volume), "--output", str(out)]) == 0
        outputs[key] = np.asarray(nibabel.load(out).get_fdata(), dtype=np.float64)
    sessions = {"onnx": onnxruntime.InferenceSession, "openvino": openvino.CompiledModel, "litert": Interpreter}
    for key, name in RUNTIMES.items():
        loaded = loading.load_model(models / key / "1" / name)
        assert isinstance(loaded, runtimes.ADAPTERS[key]) and isinstance(loaded.session, sessions[key])
    reference = outputs.pop("savedmodel")
    low, high = reference.min(), reference.max()
    assert high - low > 0 and reference.std() > 1e-3 * (high - low)  # not a flat output
    scaled = lambda v: metrics.to_255(2.0 * (v - low) / (high - low) - 1.0)  # noqa: E731
    for key, output in outputs.items():
        assert output.shape == reference.shape, key
        for k in range(reference.shape[2]):
            a, b = scaled(output[..., k]), scaled(reference[..., k])
            if np.array_equal(a, b):
                continue  # identical slices (PSNR infinite)
            assert metrics.psnr(a, b) >= MIN_PSNR_DB, (key, k)
            assert metrics.ssim(a, b) >= MIN_SSIM, (key, k)


@pytest.mark.slow
def test_evaluate_takes_an_onnx_model(exported, tmp_path, capsys):
    root, data = exported
    summaries = []
    for model in (root / "models", root / "models" / "onnx" / "1" / "model.onnx"):
        assert cli.main(["evaluate", "--model", str(model), "--data", str(data), "--json", "--out",
                         str(tmp_path / model.name), "--figure-slices", "0", "--max-slices", "4"]) == 0
        summaries.append(json.loads(capsys.readouterr().out)["summary"])
    for name in ("ssim", "psnr"):
        assert summaries[1]["output"][name]["mean"] == pytest.approx(summaries[0]["output"][name]["mean"], rel=1e-4)


def _openvino_has_bf16() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.slow
def test_openvino_in_bfloat16_records_it_and_stays_within_the_bound(exported, tmp_path):
    from medgan_tf.serving import loading

    root, _ = exported
    out = tmp_path / "bf16"
    assert cli.main(["export", str(root / "run"), "--out", str(out), "--format", "openvino",
                     "--precision", "bfloat16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["openvino"]  # no SavedModel asked for, none written
    model = loading.load_model(out / "openvino")
    # What OpenVINO computes where the CPU lacks bfloat16 is float32 (it says so, and so does the model).
    assert model.compute_dtype == ("bfloat16" if _openvino_has_bf16() else "float32")
    assert json.loads((out / "openvino" / "1" / "assets" / "precision.json").read_text())["compute_dtype"] == "bfloat16"
    reference = loading.load_model(root / "models")
    slices = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 1)).astype(np.float32)
    expected, output = reference(slices), model(slices)
    for index in range(len(slices)):
        assert metrics.psnr(metrics.to_255(output[index]), metrics.to_255(expected[index])) >= MIN_PSNR_DB


@pytest.fixture
def untrained(tmp_path):
    """A run directory (untrained, 32²) and an export folder holding what the refusals need, written
    without any conversion: the version onnx/1, and assets for hand-made model files."""
    from helpers import make_run

    from medgan_tf.serving.export import write_assets
    from medgan_tf.serving.signatures import normalization_description

    _, experiment = make_run(tmp_path / "run", "pet_denoise", image_size=32)
    (tmp_path / "models" / "onnx" / "1").mkdir(parents=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    write_assets(broken / "assets", experiment, normalization_description(experiment), "float32", "test")
    (broken / "model.tflite").write_bytes(b"not a flatbuffer")
    return tmp_path


@pytest.mark.parametrize("arguments, message", [
    (["--format", "onnx,pytorch"], "--format: unknown pytorch; choose from savedmodel, onnx, openvino, litert"),
    (["--format", "litert", "--precision", "bfloat16"], "ai-edge-litert computes float32 on CPU"),
    (["--format", "savedmodel,onnx", "--version", "1"], "models/onnx/1 already exists"),
])
def test_export_refusals_are_one_line_before_any_work(untrained, arguments, message, capsys):
    before = sorted(str(p) for p in (untrained / "models").rglob("*"))
    assert cli.main(["export", str(untrained / "run"), "--out", str(untrained / "models"), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert sorted(str(p) for p in (untrained / "models").rglob("*")) == before  # no SavedModel version 1 either


def test_model_refusals_name_the_path_and_reason(untrained):
    from medgan_tf.serving import loading

    bare = untrained / "bare" / "model.onnx"
    bare.parent.mkdir()
    bare.write_bytes(b"")
    with pytest.raises(UserError, match="cannot read the export's assets.*assets/ beside the model"):
        loading.load_model(bare)
    with pytest.raises(UserError, match="model.tflite: ai-edge-litert cannot load it"):
        loading.load_model(untrained / "broken")
    with pytest.raises(UserError, match="exported to compute in float32, not bfloat16"):
        loading.load_model(untrained / "broken" / "model.tflite", precision="bfloat16")
    with pytest.raises(UserError, match="is neither an export"):
        loading.load_model(untrained / "run" / "checkpoints")


@pytest.mark.slow
def test_bench_has_a_row_per_runtime_and_precision(tmp_path):
    """The bench's runtime section on a tiny CasNet (the figures it builds on are made up here)."""
    from medgan_tf.workflows import bench, runtime_figures

    experiment = bench.casnet_experiment(image_size=32, num_ublocks=1, base_filters=4)
    gemm = {"gemm": {"gflops": 100.0}, "gemm_bf16": {"gflops": 200.0}, "casnet6": {"gflop_per_slice": 0.01}}
    saved = {"batch_size": 8, "slices_per_s": 50.0, "gflops": 0.5, "median_s": 0.16}
    figures = {**gemm, "inference_batch8": saved, "inference_bf16_batch8": {**saved, "gflops": 1.0}}
    runtime_figures.runtime_section(figures, tmp_path, experiment, quick=True, repeats=1, say=lambda message: None,
                                    formats=runtime_figures.RUNTIME_FORMATS)
    rows = {(row["runtime"], row["precision"]): row for row in figures["runtimes"]}
    expected = [("ai-edge-litert", "float32"), ("ai-edge-litert", "int8"), ("onnxruntime", "float32"),
                ("onnxruntime", "int8"), ("openvino", "bfloat16"), ("openvino", "float32"), ("openvino", "int8"),
                ("tensorflow", "bfloat16"), ("tensorflow", "float32")]
    skipped = {} if _openvino_has_bf16() else {"openvino bfloat16": "openvino computes float32 on this processor, not bfloat16"}
    assert sorted(rows) == [row for row in expected if f"{row[0]} {row[1]}" not in skipped]
    assert rows[("tensorflow", "bfloat16")]["vs_gemm"] == pytest.approx(0.01)
    assert rows[("tensorflow", "bfloat16")]["vs_gemm_same_precision"] == pytest.approx(0.005)
    for key, row in rows.items():
        assert row["slices_per_s"] > 0 and row["vs_gemm"] == pytest.approx(row["gflops"] / 100.0), key
        if key[0] != "tensorflow" and key[1] != "int8":
            assert row["min_psnr_db"] >= MIN_PSNR_DB and row["min_ssim"] >= MIN_SSIM, key
        if key[1] == "int8":  # measured whether or not it holds the bound, and says which
            holds = row["min_psnr_db"] >= MIN_PSNR_DB and row["min_ssim"] >= MIN_SSIM
            assert row["holds_bound"] is holds and 0.0 < row["min_ssim"] <= 1.0, key
            assert row["accuracy_on"] == "8 held-out phantom slices (calibrated on 32)", key
            assert "not a trained model's int8 accuracy" in row["note"], key
    assert figures["runtimes_skipped"] == skipped
    table = runtime_figures.runtime_rows(figures)
    assert len(table) == 9 and sum("× GEMM fp32" in value for _, _, value in table) == len(rows)
    assert sum("the export bound" in value for _, _, value in table) == 3
