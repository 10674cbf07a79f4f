"""`export --precision int8 --calibration DATA`: post-training int8 of the LiteRT, ONNX and OpenVINO
artefacts, calibrated on training records and published only when the worst held-out slice stays
within the accuracy bound of float32 (PSNR ≥ 45 dB, SSIM ≥ 0.999 on the 0–255 scale); never by
default. The fast tests use an untrained 32² generator and a hand-written record file; the slow
one a tiny trained run on the built-in data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import cli, metrics
from medgan_tf.errors import UserError
from medgan_tf.serving import quantize

SIZE = 32
MIN_PSNR_DB, MIN_SSIM = 45.0, 0.999  # the bound, stated here independently of the module's constants
REFUSED = re.compile(r"PSNR (?P<psnr>[-\d.]+|inf) dB, SSIM (?P<ssim>[-\d.]+)")


def _write_records(path: Path, count: int) -> Path:
    """`count` pet_denoise-like records (smooth blobs plus noise, normalized to [-1, 1]) in one
    GZIP TFRecord file of the converter's schema."""
    import tensorflow as tf

    from medgan_tf.data.schema import encode_example

    rng = np.random.default_rng(3)
    y, x = np.mgrid[:SIZE, :SIZE] / SIZE
    params = {"low": 0.0, "high": 10.0, "unit": "SUV", "kind": "scale"}
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for index in range(count):
            cx, cy, width = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.05, 0.2)]
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / width)
            source = np.clip(2 * blob - 1 + rng.normal(0, 0.05, blob.shape), -1, 1).astype(np.float32)
            writer.write(encode_example(source, source, f"p{index % 5}", index, (2.8, 2.8, 2.0), params, params))
    return path


@pytest.fixture
def untrained(tmp_path):
    """An untrained 32² run and a record file of 40 slices to calibrate it on."""
    from helpers import make_run

    make_run(tmp_path / "run", "pet_denoise", image_size=SIZE)
    return tmp_path, _write_records(tmp_path / "train.tfrecord.gz", 40)


def _export(root: Path, records: Path, formats: str, *more: str) -> int:
    return cli.main(["export", str(root / "run"), "--out", str(root / "models"), "--format", formats,
                     "--precision", "int8", "--calibration", str(records), *more])


def test_calibration_is_seeded_and_the_gate_slices_are_held_out(untrained):
    from medgan_tf.serving.calibration import calibration_slices
    from medgan_tf.training import checkpoints

    root, records = untrained
    _, experiment = checkpoints.load_generator(root / "run", "latest")
    first = calibration_slices(records, experiment, count=30, held_out=10)
    again = calibration_slices(records, experiment, count=30, held_out=10)
    assert first.slices.shape == (30, SIZE, SIZE, 1) and first.held_out.shape == (10, SIZE, SIZE, 1)
    assert np.array_equal(first.slices, again.slices) and np.array_equal(first.held_out, again.held_out)
    calibrated = {s.tobytes() for s in first.slices}
    assert len(calibrated) == 30 and not calibrated & {s.tobytes() for s in first.held_out}
    other = calibration_slices(records, experiment, count=30, held_out=10, seed=1)
    assert not np.array_equal(other.slices, first.slices)
    few = calibration_slices(records, experiment)  # 40 records for 100 + 20: the held-out share shrinks
    assert (len(few.slices), len(few.held_out)) == (33, 7)
    with pytest.raises(UserError, match="expected a converted dataset"):
        calibration_slices(root / "run" / "config.json", experiment)


@pytest.mark.parametrize("arguments, message", [
    (["--format", "savedmodel,litert", "--precision", "int8"],
     "--format savedmodel with --precision int8: TF SavedModel has no post-training int8 here; int8 is offered by "
     "onnx, openvino, litert"),
    (["--format", "litert", "--precision", "int8"], "--precision int8 needs --calibration DATA"),
    (["--format", "litert", "--calibration", "train.tfrecord.gz"], "--calibration is for --precision int8 only"),
    (["--format", "litert", "--precision", "int8", "--calibration", "missing"], "--calibration missing does not exist"),
])
def test_int8_refusals_before_any_work(untrained, arguments, message, capsys, monkeypatch):
    root, _ = untrained
    monkeypatch.chdir(root)
    assert cli.main(["export", str(root / "run"), "--out", str(root / "models"), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (root / "models").exists() or not any(p.name.isdigit() for p in (root / "models").rglob("*"))


def test_auto_never_picks_int8():
    from medgan_tf.serving.formats import FORMATS, format_precision

    for key, row in FORMATS.items():
        assert format_precision(row, "auto")[0] in ("float32", "bfloat16"), key
        assert format_precision(row, "float32")[0] == "float32", key


def test_a_missed_bound_refuses_with_the_figures_and_publishes_nothing(untrained, capsys, monkeypatch):
    """The bound forced out of reach: every int8 artefact misses it; none of the three is published."""
    root, records = untrained
    monkeypatch.setattr(quantize, "MIN_PSNR_DB", 1000.0)
    assert _export(root, records, "onnx,openvino,litert") == 2
    error = capsys.readouterr().err
    assert "--precision int8 refused: the int8" in error and "the bound is PSNR ≥ 1000 dB and SSIM ≥ 0.999" in error
    assert "Nothing was published" in error
    figures = REFUSED.search(error)
    assert figures and float(figures["psnr"]) < 1000.0 and 0.0 < float(figures["ssim"]) <= 1.0
    versions = [p for p in (root / "models").rglob("*") if p.name.isdigit() or p.name.startswith(".")]
    assert versions == []  # no version folder of any format, no staging left behind


def test_one_refused_artefact_leaves_none_of_the_others(untrained, capsys, monkeypatch):
    """onnx holds its (lowered) bound and is written aside; litert, quantized next, is refused:
    onnx/1 must not be published either."""
    root, records = untrained
    monkeypatch.setattr(quantize, "MIN_PSNR_DB", 0.0)
    monkeypatch.setattr(quantize, "MIN_SSIM", -1.0)
    measured = quantize.worst_slice_accuracy
    calls = []

    def second_misses(output, expected):
        calls.append(1)
        figures = measured(output, expected)
        return {**figures, "holds_bound": False} if len(calls) == 2 else figures

    monkeypatch.setattr(quantize, "worst_slice_accuracy", second_misses)
    assert _export(root, records, "onnx,litert") == 2
    assert "--format litert --precision int8 refused" in capsys.readouterr().err and len(calls) == 2
    assert [p for p in (root / "models").rglob("*") if p.name.isdigit() or p.name.startswith(".")] == []


def test_an_int8_artefact_records_its_calibration_and_gate(untrained, tmp_path, capsys, monkeypatch):
    """The bound lowered so the untrained model passes: precision.json says int8 with the measured
    figures, the file really holds int8 tensors, and `translate`'s loader runs it in int8."""
    from ai_edge_litert.interpreter import Interpreter

    from medgan_tf.serving import loading

    root, records = untrained
    monkeypatch.setattr(quantize, "MIN_PSNR_DB", 0.0)
    monkeypatch.setattr(quantize, "MIN_SSIM", -1.0)
    assert _export(root, records, "litert") == 0
    out = capsys.readouterr().out
    assert "computes in:     int8" in out and "int8 vs float32: worst of 7 held-out slices PSNR" in out
    version = root / "models" / "litert" / "1"
    precision = json.loads((version / "assets" / "precision.json").read_text())
    assert precision["compute_dtype"] == "int8" and precision["variables_dtype"] == "int8"
    quantization = precision["quantization"]
    assert quantization["calibration"] == {"source": str(records), "slices": 33, "held_out_slices": 7, "seed": 0}
    gate = quantization["gate"]
    assert gate["bound"] == {"min_psnr_db": 0.0, "min_ssim": -1.0} and gate["holds_bound"] and gate["enforced"]
    assert np.isfinite(gate["min_psnr_db"]) and -1.0 <= gate["min_ssim"] <= 1.0
    interpreter = Interpreter(model_path=str(version / "model.tflite"))
    dtypes = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.int8 in dtypes  # quantized weights and activations
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    assert inputs[0]["dtype"] == np.float32 and outputs[0]["dtype"] == np.float32  # translate feeds float32
    model = loading.load_model(version)
    assert model.compute_dtype == "int8"
    slices = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 1)).astype(np.float32)
    assert model(slices).shape == (3, SIZE, SIZE, 1)


@pytest.mark.slow
def test_a_trained_run_in_int8_holds_the_bound_or_is_refused_with_its_figures(tmp_path, capsys):
    """The acceptance test: a tiny trained run, calibrated on its own training data. Whichever way
    the gate goes, its figures agree with it: published → `translate` of the int8 LiteRT stays
    within the bound of the float32 SavedModel on every slice; refused → the figures it names are
    below the bound and nothing was written."""
    import nibabel

    from medgan_tf.data.io import write_nifti
    from medgan_tf.data.synthetic import patient_rng, synthesize_pair
    from medgan_tf.workflows.builtin import ensure_builtin_dataset

    data = ensure_builtin_dataset("pet_denoise", SIZE)
    tiny = ["--task", "pet_denoise", "--image-size", str(SIZE), "--ublocks", "1", "--base-filters", "4",
            "--vgg-weights", "none", "--quiet", "--steps-per-epoch", "2"]
    assert cli.main(["train", *tiny, "--epochs", "2", "--data", str(data), "--logdir", str(tmp_path / "run")]) == 0
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "float")]) == 0
    capsys.readouterr()
    code = _export(tmp_path, data, "litert")
    printed = capsys.readouterr()
    if code == 2:
        figures = REFUSED.search(printed.err)
        assert figures, printed.err
        assert float(figures["psnr"]) < MIN_PSNR_DB or float(figures["ssim"]) < MIN_SSIM, printed.err
        assert not (tmp_path / "models" / "litert" / "1").exists()
        return
    assert code == 0
    gate = json.loads((tmp_path / "models" / "litert" / "1" / "assets" / "precision.json").read_text())
    gate = gate["quantization"]["gate"]
    assert gate["min_psnr_db"] >= MIN_PSNR_DB and gate["min_ssim"] >= MIN_SSIM
    source, _target, _ = synthesize_pair("pet_denoise", patient_rng("pet_denoise", 0, 3))
    volume = write_nifti(source, tmp_path / "pet.nii.gz")
    outputs = {}
    for name, model in (("float", tmp_path / "float"), ("int8", tmp_path / "models" / "litert" / "1")):
        assert cli.main(["translate", "--model", str(model), "--input", str(volume), "--output",
                         str(tmp_path / f"{name}.nii.gz")]) == 0
        outputs[name] = np.asarray(nibabel.load(tmp_path / f"{name}.nii.gz").get_fdata(), np.float64)
    reference = outputs["float"]
    low, high = reference.min(), reference.max()
    scaled = lambda v: metrics.to_255(2.0 * (v - low) / (high - low) - 1.0)  # noqa: E731
    for k in range(reference.shape[2]):
        a, b = scaled(outputs["int8"][..., k]), scaled(reference[..., k])
        if not np.array_equal(a, b):
            assert metrics.psnr(a, b) >= MIN_PSNR_DB and metrics.ssim(a, b) >= MIN_SSIM, k
