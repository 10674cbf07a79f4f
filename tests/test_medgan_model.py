"""MedGAN.train_step is Algorithm 1: N_G generator updates, one discriminator update, spectral
normalization; plus test_step metrics, mixed precision and XLA on a tiny model (the finer checks
of Algorithm 1 are in tests/test_algorithm1.py)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from medgan_tf import metrics
from medgan_tf.config import DataConfig, ExperimentConfig, GeneratorConfig, LossConfig, TrainConfig
from medgan_tf.models import spectral_normalization_layers
from medgan_tf.config import LOSS_TERMS
from medgan_tf.training import MedGAN, build_model
from medgan_tf.training.medgan_model import TEST_LOGS, TRAIN_LOGS


def tiny_config(size=32, ublocks=1, **losses) -> ExperimentConfig:
    return ExperimentConfig(
        generator=GeneratorConfig(num_ublocks=ublocks, base_filters=8),
        data=DataConfig(image_size=size),
        losses=dataclasses.replace(LossConfig(), **losses),
        train=TrainConfig(vgg_weights="none"),
    )


def batch(size=32, batch_size=2, seed=0):
    rng = np.random.default_rng(seed)
    source = rng.uniform(-1, 1, (batch_size, size, size, 1)).astype("float32")
    return source, np.tanh(2 * source)


def snapshot(model):
    return [variable.numpy().copy() for variable in model.weights]


def changed(before, model):
    return any(not np.array_equal(old, variable.numpy()) for old, variable in zip(before, model.weights))


def test_one_train_step_is_three_generator_and_one_discriminator_update():
    model = build_model(tiny_config())
    generator, discriminator, vgg = snapshot(model.generator), snapshot(model.discriminator), snapshot(model.feature_extractor)
    logs = model.train_step(tuple(tf.constant(a) for a in batch()))
    assert int(model.generator_optimizer.iterations) == 3
    assert int(model.discriminator_optimizer.iterations) == 1
    assert changed(generator, model.generator) and changed(discriminator, model.discriminator)
    assert not changed(vgg, model.feature_extractor)
    assert set(logs) == set(TRAIN_LOGS)
    assert all(np.isfinite(float(value)) for value in logs.values())
    assert 0 < float(logs["d_real"]) < 1 and 0 < float(logs["d_fake"]) < 1


def test_generator_steps_follow_the_config():
    config = dataclasses.replace(tiny_config(size=16, style=0.0, content=0.0), train=TrainConfig(generator_steps=2))
    model = build_model(config)
    model.fit(*batch(size=16), batch_size=2, epochs=2, verbose=0)
    assert int(model.generator_optimizer.iterations) == 4
    assert int(model.discriminator_optimizer.iterations) == 2


def test_spectral_norm_kernels_have_unit_largest_singular_value_after_training():
    model = build_model(tiny_config(style=0.0, content=0.0))
    model.fit(*batch(), batch_size=1, epochs=3, verbose=0)
    # Six steps at the paper's learning rate move an unnormalized kernel ~1e-3 off 1; with
    # Algorithm 1 line 12 (one power iteration per step from a converged u) it stays within 1e-4.
    for layer in spectral_normalization_layers(model.discriminator):
        kernel = layer.kernel.numpy()
        largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        assert largest == pytest.approx(1.0, abs=1e-3), layer.name


def test_weights_are_applied_once_and_unweighted_terms_report_zero():
    model = build_model(tiny_config(size=16, cgan=1.0, perceptual=0.0, style=0.0, content=0.0, l1=100.0,
                                    total_variation=0.5))
    assert model.feature_extractor is None
    logs = {k: float(v) for k, v in model.test_step(tuple(tf.constant(a) for a in batch(size=16))).items()}
    assert set(logs) == set(TEST_LOGS)
    assert logs["perceptual"] == logs["style"] == logs["content"] == logs["l2"] == 0.0
    assert logs["l1"] > 0 and logs["total_variation"] > 0
    expected = logs["cgan"] + 100.0 * logs["l1"] + 0.5 * logs["total_variation"]
    assert logs["generator_total"] == pytest.approx(expected, rel=1e-5)


def test_test_step_scores_the_generator_output_with_the_projects_metrics():
    model = build_model(tiny_config(size=16, style=0.0, content=0.0))
    source, target = batch(size=16)
    logs = model.evaluate(source, target, batch_size=2, verbose=0, return_dict=True)
    fake = model.predict(source, verbose=0)
    expected = metrics.validation_means(fake, target)
    assert metrics.metric_names(validation=True) == ("ssim", "psnr", "mse")
    for index, name in enumerate(metrics.metric_names(validation=True)):
        assert logs[name] == pytest.approx(float(expected[index]), rel=1e-5), name
    # The paper's 0–255 scale: MSE in (0–255 units)², far above the [-1, 1] value.
    paper_mse = np.mean((metrics.to_255(fake) - metrics.to_255(target)) ** 2)
    assert logs["mse"] == pytest.approx(paper_mse, rel=1e-4) and paper_mse > 100 * np.mean((fake - target) ** 2)


def test_evaluation_runs_without_xla_when_training_is_compiled():
    # The numpy metrics cannot be XLA-compiled; the evaluation step opts out.
    model = build_model(tiny_config(size=16, style=0.0, content=0.0), jit_compile=True)
    logs = model.evaluate(*batch(size=16), batch_size=2, verbose=0, return_dict=True)
    assert np.isfinite(logs["ssim"]) and model.jit_compile


def test_style_reference_source_compares_with_the_source_image():
    # Fila-sGAN: style compares G(y) with the source y, content still with the target x. Changing
    # only the target must leave the style term alone and move the content term.
    config = tiny_config(size=32, style_reference="source")
    model = build_model(config)
    source, target = batch()
    same = model.test_step((tf.constant(source), tf.constant(source)))
    different = model.test_step((tf.constant(source), tf.constant(target)))
    assert float(same["style"]) == pytest.approx(float(different["style"]), rel=1e-6)
    assert float(same["content"]) != pytest.approx(float(different["content"]), rel=1e-3)


def test_pan_margin_discriminator_loss_adds_the_hinge():
    source, target = (tf.constant(a) for a in batch(size=16))
    model = build_model(tiny_config(size=16, style=0.0, content=0.0))
    cgan = float(model.test_step((source, target))["discriminator_loss"])
    pan = MedGAN(model.generator, model.discriminator, None,
                 losses=dataclasses.replace(model.loss_config, style=0.0, content=0.0,
                                            discriminator_loss="pan_margin", pan_margin=1e6))
    margin = float(pan.test_step((source, target))["discriminator_loss"])
    assert margin > cgan + 1e5  # the hinge max(0, m − Σ λ_j P_j) with a huge m dominates


def test_missing_feature_extractor_is_an_error():
    networks_model = build_model(tiny_config(size=16, style=0.0, content=0.0))
    with pytest.raises(ValueError, match="feature extractor"):
        MedGAN(networks_model.generator, networks_model.discriminator, None, losses=LossConfig())


@pytest.mark.slow
def test_tiny_model_with_xla_and_mixed_float16_has_finite_losses():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        # Only VGG block1 is wired in (style + content on block1_conv1): the VGG path runs in
        # float16 too while XLA compiles a much smaller graph on CPU.
        config = tiny_config(size=64, ublocks=1, style_layers=("block1_conv1",), content_layers=("block1_conv1",))
        model = build_model(config, jit_compile=True)
        assert isinstance(model.generator_optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.discriminator_optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(*batch(size=64, batch_size=1), batch_size=1, epochs=2, verbose=0)
        for name in LOSS_TERMS + ("generator_total", "discriminator_loss"):
            assert np.all(np.isfinite(history.history[name])), name
        assert model.generator(np.zeros((1, 64, 64, 1), "float32")).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)
