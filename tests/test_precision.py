"""Precision: what `auto` picks (capability checks faked both ways), the bfloat16 export's accuracy
against float32 on the built-in synthetic slices, and a tiny bfloat16 training run against float32."""

import json
import logging

import numpy as np
import pytest
from helpers import make_run, precision_policy, tiny_config  # noqa: E402  (tests/ is on sys.path)

from medgan_tf import metrics
from medgan_tf.errors import UserError
from medgan_tf.training import runtime

# Accuracy bound of a bfloat16 export against the float32 generator, per slice on the 0–255 scale.
MIN_PSNR_DB = 45.0
MIN_SSIM = 0.999  # measured on this tiny net: ≥ 66.7 dB, SSIM ≥ 0.99993 (README "Precision": trained CasNet-6 ≥ 58 dB)
# A bfloat16 training run's losses after 3 steps, relative to the float32 run's.
LOSS_RELATIVE_TOLERANCE = 0.01  # measured: ≤ 0.15 %


# --------------------------------------------------------------------------- what auto picks


@pytest.mark.parametrize(
    "flags, expected",
    [("fpu avx512f avx512_bf16 avx512_vnni", ["avx512_bf16"]), ("fpu amx_bf16 avx512_bf16", ["avx512_bf16", "amx_bf16"]),
     ("fpu avx2 avx512f", [])],
)
def test_cpu_flags_are_read_from_cpuinfo(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert runtime.cpu_bfloat16_flags(cpuinfo) == expected
    assert runtime.cpu_bfloat16_flags(tmp_path / "missing") == []


def test_bfloat16_support_from_cpu_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "gpu_compute_capabilities", list)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu avx512_bf16\n")
    assert runtime.bfloat16_support(cpuinfo) == (True, "CPU has avx512_bf16")
    cpuinfo.write_text("flags\t: fpu avx2\n")
    supported, reason = runtime.bfloat16_support(cpuinfo)
    assert not supported and "avx512_bf16" in reason and "amx_bf16" in reason


@pytest.mark.parametrize(
    "capabilities, supported, reason",
    [([(8, 6)], True, "GPU compute capability 8.6 ≥ 8.0"), ([(9, 0), (7, 5)], False, "GPU compute capability 7.5 < 8.0")],
)
def test_bfloat16_support_from_gpu_compute_capability(monkeypatch, tmp_path, capabilities, supported, reason):
    monkeypatch.setattr(runtime, "gpu_compute_capabilities", lambda: capabilities)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: avx512_bf16\n")  # the GPUs decide when there are any
    assert runtime.bfloat16_support(cpuinfo) == (supported, reason)


@pytest.mark.parametrize(
    "support, gpu, policy, reason",
    [
        ((True, "CPU has avx512_bf16"), False, "mixed_bfloat16", "auto: CPU has avx512_bf16"),
        ((False, "CPU has neither avx512_bf16 nor amx_bf16"), False, "float32", "auto: CPU has neither"),
        ((True, "GPU compute capability 8.0 ≥ 8.0"), True, "mixed_bfloat16", "auto: GPU compute capability 8.0"),
        ((False, "GPU compute capability 7.0 < 8.0"), True, "mixed_float16", "float16 with loss scaling"),
    ],
)
def test_auto_precision_follows_the_capability(monkeypatch, support, gpu, policy, reason):
    monkeypatch.setattr(runtime, "bfloat16_support", lambda: support)
    monkeypatch.setattr(runtime, "has_gpu", lambda: gpu)
    chosen, why = runtime.choose_precision("auto")
    assert chosen == policy and reason in why
    assert runtime.resolve_precision("auto") == policy


def test_forced_precisions_ignore_the_capability(monkeypatch):
    monkeypatch.setattr(runtime, "bfloat16_support", lambda: pytest.fail("a forced setting must not probe"))
    assert runtime.choose_precision("off") == ("float32", "--mixed-precision off")
    assert runtime.choose_precision("float16")[0] == "mixed_float16"
    assert runtime.choose_precision("bfloat16")[0] == "mixed_bfloat16"
    assert runtime.choose_inference_precision("float32") == ("float32", "--precision float32")
    assert runtime.choose_inference_precision("bfloat16")[0] == "bfloat16"


def test_export_auto_precision_follows_the_capability(monkeypatch):
    monkeypatch.setattr(runtime, "bfloat16_support", lambda: (True, "CPU has amx_bf16"))
    assert runtime.choose_inference_precision("auto") == ("bfloat16", "auto: CPU has amx_bf16")
    monkeypatch.setattr(runtime, "bfloat16_support", lambda: (False, "CPU has neither avx512_bf16 nor amx_bf16"))
    assert runtime.choose_inference_precision("auto")[0] == "float32"


@pytest.mark.parametrize("setting, function", [("half", "choose_precision"), ("float16", "choose_inference_precision")])
def test_unknown_precision_is_a_user_error(setting, function):
    with pytest.raises(UserError, match=rf"received '{setting}'"):
        getattr(runtime, function)(setting)


def test_setup_logs_what_it_chose_and_why(monkeypatch, caplog):
    import keras

    monkeypatch.setattr(runtime, "bfloat16_support", lambda: (True, "CPU has avx512_bf16"))
    monkeypatch.setattr(runtime, "has_gpu", lambda: False)
    try:
        with caplog.at_level(logging.INFO, logger=runtime.__name__):
            chosen = runtime.setup("default", "off", "auto")
        assert chosen.precision_policy == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert "precision mixed_bfloat16 (auto: CPU has avx512_bf16)" in caplog.text


# --------------------------------------------------------------------------- bfloat16 export


def _synthetic_slices(experiment):
    """(32, 64, 64, 1) normalized source slices of one built-in synthetic pet_denoise patient."""
    from medgan_tf.data import normalization
    from medgan_tf.data.synthetic import patient_rng, synthesize_pair

    source, _target, _ = synthesize_pair("pet_denoise", patient_rng("pet_denoise", 0, 0))
    params = normalization.fit(source.array, experiment.data.source_normalization)
    slices = np.moveaxis(normalization.normalize(source.array, params), 2, 0)[..., None].astype(np.float32)
    assert slices.shape[1:] == (64, 64, 1) and slices.std() > 0.1
    return slices


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A tiny untrained run exported twice: float32 and bfloat16."""
    from medgan_tf.serving import export

    root = tmp_path_factory.mktemp("precision")
    generator, experiment = make_run(root / "run", "pet_denoise")
    float32_dir = export.export_run(root / "run", root / "sm", precision="float32")
    bfloat16_dir = export.export_run(root / "run", root / "sm", precision="bfloat16")
    return generator, experiment, float32_dir, bfloat16_dir


def test_bfloat16_export_is_within_the_accuracy_bound(exports):
    import keras

    from medgan_tf.serving import loading

    generator, experiment, _, bfloat16_dir = exports
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the export
    slices = _synthetic_slices(experiment)
    expected = np.asarray(generator(slices, training=False))
    output = loading.load_export(bfloat16_dir)(slices)
    assert output.dtype == np.float32 and output.shape == slices.shape
    assert np.std(expected) > 1e-2  # a flat output would make the comparison weak
    assert not np.array_equal(output, expected)  # the graph does compute in bfloat16
    for index in range(len(slices)):
        assert metrics.psnr(metrics.to_255(output[index]), metrics.to_255(expected[index])) >= MIN_PSNR_DB, index
        assert metrics.ssim(metrics.to_255(output[index]), metrics.to_255(expected[index])) >= MIN_SSIM, index


def test_precision_asset_and_float32_export_stay_exact(exports):
    from medgan_tf.serving import export, loading

    generator, experiment, float32_dir, bfloat16_dir = exports
    assert json.loads((bfloat16_dir / "assets" / "precision.json").read_text())["compute_dtype"] == "bfloat16"
    assert export.read_precision(bfloat16_dir)["dtype_policy"] == "mixed_bfloat16"
    assert export.read_precision(float32_dir)["compute_dtype"] == "float32"
    slices = _synthetic_slices(experiment)[:4]
    np.testing.assert_allclose(loading.load_export(float32_dir)(slices), generator(slices, training=False), atol=1e-5)


def test_float32_export_of_a_generator_built_under_bfloat16(exports, tmp_path):
    """A float32 export is float32 even when the global policy (e.g. a bf16 training process) was not."""
    from medgan_tf import presets
    from medgan_tf.serving import export, loading

    generator, experiment, _, _ = exports
    with precision_policy("mixed_bfloat16"):
        mixed = presets.recipe_of(experiment).generator(experiment)
        mixed.set_weights(generator.get_weights())
        version_dir = export.export_generator(mixed, experiment, tmp_path, precision="float32")
    slices = _synthetic_slices(experiment)[:4]
    np.testing.assert_allclose(loading.load_export(version_dir)(slices), generator(slices, training=False), atol=1e-5)


def test_translate_runs_the_export_in_its_precision(exports, tmp_path):
    """`translate`/`evaluate` load exports with `load_model`: a bfloat16 export translates a whole
    volume in bfloat16 (close to, not equal to, the float32 export's output)."""
    import nibabel

    from medgan_tf.data.io import write_nifti
    from medgan_tf.data.synthetic import patient_rng, synthesize_pair
    from medgan_tf.serving.loading import load_model
    from medgan_tf.serving.translation import translate_file

    _, _, float32_dir, bfloat16_dir = exports
    source, _target, _ = synthesize_pair("pet_denoise", patient_rng("pet_denoise", 0, 1))
    volume_path = write_nifti(source, tmp_path / "pet.nii.gz")
    outputs = {}
    for name, directory in (("float32", float32_dir), ("bfloat16", bfloat16_dir)):
        translate_file(load_model(directory), volume_path, tmp_path / f"{name}.nii.gz", quiet=True)
        outputs[name] = np.asarray(nibabel.load(tmp_path / f"{name}.nii.gz").get_fdata())
    assert outputs["float32"].shape == source.array.shape
    assert not np.array_equal(outputs["bfloat16"], outputs["float32"])
    scale = np.ptp(outputs["float32"])
    assert scale > 0 and np.abs(outputs["bfloat16"] - outputs["float32"]).max() < 0.02 * scale


def test_export_cli_takes_precision(exports, tmp_path, capsys):
    from medgan_tf.cli import build_parser, main

    assert build_parser().parse_args(["export", "run"]).precision == "float32"
    run_dir = exports[2].parent.parent / "run"
    assert main(["export", str(run_dir), "--out", str(tmp_path), "--precision", "bfloat16"]) == 0
    assert "computes in:     bfloat16 (--precision bfloat16)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "run", "--precision", "float16"])


# --------------------------------------------------------------------------- bfloat16 training


def _three_step_losses(policy: str) -> dict[str, float]:
    """Losses after 3 MedGAN-1G steps at 32² from the same seed and batch under `policy`."""
    import keras
    import tensorflow as tf

    from medgan_tf.training.build import build_model

    with precision_policy(policy):
        keras.utils.set_random_seed(0)
        model = build_model(tiny_config(size=32), vgg_weights="none")
        rng = np.random.default_rng(5)
        pair = tuple(tf.constant(rng.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)) for _ in range(2))
        for _ in range(3):
            logs = model.train_step(pair)
        return {name: float(value) for name, value in logs.items()}


def test_bfloat16_training_losses_track_float32():
    float32 = _three_step_losses("float32")
    bfloat16 = _three_step_losses("mixed_bfloat16")
    assert set(bfloat16) == set(float32)
    for name, value in float32.items():
        assert np.isfinite(bfloat16[name]), name
        assert bfloat16[name] == pytest.approx(value, rel=LOSS_RELATIVE_TOLERANCE, abs=1e-3), name


def test_run_directory_evaluates_in_the_precision_asked_and_an_export_refuses_another(tmp_path):
    """`evaluate --precision`: a run directory is rebuilt in the compute precision asked for; an
    export keeps the precision it was written in and refuses another one with how to re-export."""
    from medgan_tf.serving import export, loading

    make_run(tmp_path / "run", "pet_denoise", image_size=32)
    assert loading.load_model(tmp_path / "run").generator.compute_dtype == "float32"
    bf16 = loading.load_model(tmp_path / "run", precision="bfloat16")
    assert bf16.generator.compute_dtype == "bfloat16"
    slices = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    assert bf16(slices).dtype == np.float32
    version = export.export_run(tmp_path / "run", tmp_path / "sm", precision="float32")
    assert loading.load_model(version, precision="float32") is not None
    with pytest.raises(UserError, match="exported to compute in float32, not bfloat16.*--precision bfloat16"):
        loading.load_model(version, precision="bfloat16")


def test_translate_takes_precision_for_a_run_directory(tmp_path, capsys):
    from medgan_tf.cli import main
    from medgan_tf.data.io import Volume, read_volume, write_nifti

    make_run(tmp_path / "run", "pet_denoise", image_size=32)
    array = np.random.default_rng(3).gamma(2.0, 1000.0, (32, 32, 3)).astype(np.float32)
    write_nifti(Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "Bq/ml"), tmp_path / "in.nii.gz")
    outputs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.nii.gz"
        assert main(["translate", "--model", str(tmp_path / "run"), "--input", str(tmp_path / "in.nii.gz"),
                     "--output", str(out), "--precision", precision, "--quiet"]) == 0
        outputs[precision] = read_volume(out).array
    assert not np.array_equal(outputs["float32"], outputs["bfloat16"]), "bfloat16 compute must differ in the last bits"
    scale = float(np.ptp(outputs["float32"])) or 1.0
    assert np.max(np.abs(outputs["float32"] - outputs["bfloat16"])) < 0.05 * scale
