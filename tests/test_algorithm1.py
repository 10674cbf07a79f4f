"""Algorithm 1 of the paper, line by line, on tiny models: what each update sees and changes.

Spies wrap the model's pieces (the generator update, the discriminator loss, the loss functions)
and record what they were given, so each test states one line of the algorithm and fails when the
code departs from it.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from medgan_tf import losses as loss_functions
from medgan_tf import presets
from medgan_tf.config import DataConfig, DiscriminatorConfig, ExperimentConfig, GeneratorConfig, LossConfig, TrainConfig
from medgan_tf.models import spectral_normalization_layers
from medgan_tf.models.blocks import ExplicitSpectralNormalization
from medgan_tf.models.discriminator import FEATURES, LOGITS, PROBABILITY
from medgan_tf.training import MedGAN, build_model

REPOSITORY = Path(__file__).resolve().parents[1]


def tiny_config(size=16, discriminator=DiscriminatorConfig(), train=TrainConfig(vgg_weights="none"), **losses):
    return ExperimentConfig(
        generator=GeneratorConfig(num_ublocks=1, base_filters=8),
        discriminator=discriminator,
        data=DataConfig(image_size=size),
        losses=dataclasses.replace(LossConfig(), **losses),
        train=train,
    )


def batch(size=16, batch_size=2, seed=0):
    rng = np.random.default_rng(seed)
    source = rng.uniform(-1, 1, (batch_size, size, size, 1)).astype("float32")
    return tf.constant(source), tf.constant(np.tanh(2 * source))


def snapshot(network):
    return [variable.numpy().copy() for variable in network.weights]


def unchanged(before, network):
    return all(np.array_equal(old, variable.numpy()) for old, variable in zip(before, network.weights))


def largest_singular_value(layer) -> float:
    # The reshape of keras' SpectralNormalization: (k·k·C_in, C_out).
    kernel = layer.kernel.numpy()
    return float(np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0])


def mean_absolute_error(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


# --------------------------------------------------------------------------- lines 3–12


@pytest.mark.parametrize("normalization", ["instance", "batch"])
def test_generator_updates_leave_every_discriminator_variable_alone_and_line_12_normalizes(normalization):
    # Lines 3–9 train G against a fixed D: every D variable — kernels, biases, norm parameters
    # and statistics, spectral-normalization vectors u — is the same before and after each of the
    # N_G updates. Lines 11–12 then change D and leave every kernel with largest singular value 1.
    # A D learning rate of 2e-3 moves the kernels enough (≥ 2e-3 off 1) that skipping line 12
    # fails; 20 power iterations make the estimate of line 12 exact to ~1e-4.
    config = tiny_config(
        discriminator=DiscriminatorConfig(normalization=normalization, spectral_power_iterations=20),
        train=TrainConfig(vgg_weights="none", discriminator_learning_rate=2e-3),
        style=0.0, content=0.0,
    )
    model = build_model(config)
    assert len(model.discriminator.non_trainable_weights) >= 3  # the u vectors (and BN statistics)
    start = snapshot(model.discriminator)
    seen = []
    original = model._generator_update

    def spy(*args):
        generator_before = snapshot(model.generator)
        result = original(*args)
        seen.append((unchanged(start, model.discriminator), unchanged(generator_before, model.generator)))
        return result

    model._generator_update = spy
    model.train_step(batch())
    assert seen == [(True, False)] * 3  # D untouched, G updated, three times
    assert not unchanged(start, model.discriminator)
    for layer in spectral_normalization_layers(model.discriminator):
        assert largest_singular_value(layer) == pytest.approx(1.0, abs=5e-4), layer.name


def test_spectral_normalization_runs_once_per_iteration(monkeypatch):
    # One power iteration per wrapped conv per train_step (line 12), none in forward passes.
    calls = []
    original = ExplicitSpectralNormalization.normalized_weights

    def counting(layer):
        calls.append(layer.name)
        return original(layer)

    model = build_model(tiny_config(style=0.0, content=0.0))
    monkeypatch.setattr(ExplicitSpectralNormalization, "normalized_weights", counting)
    model.train_step(batch())
    assert sorted(calls) == sorted(layer.name for layer in spectral_normalization_layers(model.discriminator))


def test_discriminator_is_trained_on_the_output_of_the_updated_generator():
    # Line 10 comes after the N_G updates: D judges G(y) of the generator after its last update.
    model = build_model(tiny_config(style=0.0, content=0.0))
    source, target = batch()
    before = model.generator(source, training=True).numpy()
    judged = []
    original = model._discriminator_loss

    def spy(source, target, fake, training):
        judged.append((fake.numpy(), training))
        return original(source, target, fake, training)

    model._discriminator_loss = spy
    model.train_step((source, target))
    (fake, training), = judged
    assert training is True
    np.testing.assert_allclose(fake, model.generator(source, training=True).numpy(), atol=1e-6)
    assert np.max(np.abs(fake - before)) > 1e-4  # … and not the output from before the updates


# --------------------------------------------------------------------------- lines 4–7


def test_style_and_content_use_exactly_the_papers_vgg_layers(monkeypatch):
    # §2.5: style on the first conv of blocks 1 and 5, content on blocks 1–4. At 32² the five
    # layers have five different shapes, so the shapes handed to each loss name the layers.
    expected_style = ("block1_conv1", "block5_conv1")
    expected_content = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1")
    for name in ("medgan", "medgan_1g", "style_content"):
        losses = presets.task_preset("pet_ct", name).losses
        assert (losses.style_layers, losses.content_layers) == (expected_style, expected_content), name

    model = build_model(tiny_config(size=32))
    shapes = {name: tuple(tensor.shape[1:]) for name, tensor in model.feature_extractor(tf.zeros((1, 32, 32, 1))).items()}
    assert len(set(shapes.values())) == 5
    received = {}
    for function in ("style_loss", "content_loss"):
        original = getattr(loss_functions, function)

        def spy(fake, reference, layer_weights=None, original=original, function=function):
            received[function] = ([tuple(t.shape[1:]) for t in fake], [tuple(t.shape[1:]) for t in reference])
            return original(fake, reference, layer_weights)

        monkeypatch.setattr(loss_functions, function, spy)
    model.test_step(batch(size=32))
    assert received["style_loss"] == ([shapes[n] for n in expected_style],) * 2
    assert received["content_loss"] == ([shapes[n] for n in expected_content],) * 2


def test_perceptual_term_uses_pair_and_both_hidden_layers_of_the_current_discriminator():
    # Eq. 6–7: i = 0 (the raw pair), 1 and 2 of D as it is when the term is computed.
    model = build_model(tiny_config(style=0.0, content=0.0))
    source, target = batch()

    def layer_errors():
        fake = model.generator(source, training=False)
        fake_features = model.discriminator([fake, source], training=False)[FEATURES]
        real_features = model.discriminator([target, source], training=False)[FEATURES]
        assert [f.shape[-1] for f in fake_features] == [2, 64, 128]
        return [mean_absolute_error(f, r) for f, r in zip(fake_features, real_features)]

    def perceptual(weights):
        probe = MedGAN(model.generator, model.discriminator, None,
                       losses=dataclasses.replace(model.loss_config, perceptual_layer_weights=weights))
        return float(probe.test_step((source, target))["perceptual"])

    errors = layer_errors()
    one_hot = [perceptual(w) for w in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))]
    np.testing.assert_allclose(one_hot, errors, rtol=1e-5)
    assert perceptual((1.0, 2.0, 3.0)) == pytest.approx(errors[0] + 2 * errors[1] + 3 * errors[2], rel=1e-5)

    # Change D's first hidden conv: the term follows the D it is computed with.
    hidden1 = spectral_normalization_layers(model.discriminator)[0]
    hidden1.kernel.assign(tf.random.stateless_normal(hidden1.kernel.shape, seed=(1, 2), stddev=0.05))
    changed = layer_errors()
    assert abs(changed[1] - errors[1]) > 1e-3
    assert perceptual((0.0, 1.0, 0.0)) == pytest.approx(changed[1], rel=1e-5)


def test_confident_discriminator_still_trains_the_generator():
    # Line 4, −log D(G(y), y), with D(G(y), y) ≈ σ(−30) ≈ 1e-13: the gradient reaching G is not
    # zero (a clipped probability would cut it off).
    model = build_model(tiny_config(perceptual=0.0, style=0.0, content=0.0))
    patch = spectral_normalization_layers(model.discriminator)[-1].layer
    patch.bias.assign([-30.0])
    source, target = batch()
    with tf.GradientTape() as tape:
        total, terms, fake = model._generator_losses(source, target, {}, training=True)
    gradients = tape.gradient(total, model.generator.trainable_variables)
    probability = model.discriminator([fake, source], training=False)[PROBABILITY].numpy()
    assert probability.max() < 1e-9
    assert float(terms["cgan"]) == pytest.approx(30.0, rel=0.2)
    assert float(tf.linalg.global_norm(gradients)) > 1e-3


# --------------------------------------------------------------------------- PAN (paper §3.2.2)


def test_pan_hinge_uses_the_generator_terms_layer_weights():
    # PAN's D loss [m − Σ_j λ_j P_j]⁺ and the generator's feature matching Σ_j λ_j P_j weigh the
    # hidden layers with the same unequal λ = (·, 2, 5); the raw pair (weight 7) is in neither.
    pan = presets.MODELS.get("pan").losses
    losses = dict(dataclasses.asdict(pan), perceptual_layer_weights=(7.0, 2.0, 5.0), pan_margin=1e3)
    model = build_model(dataclasses.replace(tiny_config(), losses=LossConfig(**losses)))
    assert model.loss_config.discriminator_loss == "pan_margin"
    source, target = batch()
    logs = {name: float(value) for name, value in model.test_step((source, target)).items()}

    fake = model.generator(source, training=False)
    fake_output = model.discriminator([fake, source], training=False)
    real_output = model.discriminator([target, source], training=False)
    errors = [mean_absolute_error(f, r) for f, r in zip(fake_output[FEATURES], real_output[FEATURES])]
    assert logs["feature_matching"] == pytest.approx(2 * errors[1] + 5 * errors[2], rel=1e-5)
    cgan = float(loss_functions.cgan_discriminator_loss(real_output[LOGITS], fake_output[LOGITS]))
    assert logs["discriminator_loss"] - cgan == pytest.approx(1e3 - logs["feature_matching"], rel=1e-6)


# --------------------------------------------------------------------------- distribution

MIRRORED_STEP = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
from medgan_tf.training import runtime
runtime.split_cpu(2)  # before TensorFlow initialises its devices
import dataclasses
import keras
import numpy as np
import tensorflow as tf
from medgan_tf.config import DataConfig, ExperimentConfig, GeneratorConfig, TrainConfig
from medgan_tf.training import build_model

config = ExperimentConfig(generator=GeneratorConfig(num_ublocks=1, base_filters=4),
                          data=DataConfig(image_size=32), train=TrainConfig(vgg_weights="none"))
rng = np.random.default_rng(0)
source = rng.uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
target = np.tanh(2 * source)

def build():
    keras.utils.set_random_seed(3)
    return build_model(config, vgg_weights="none")

def weights(model):
    return [v.numpy() for v in model.generator.weights + model.discriminator.weights]

single = build()
initial = weights(single)
tf.function(single.train_step)((tf.constant(source), tf.constant(target)))

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = build()
same_start = max(float(np.max(np.abs(a - b))) for a, b in zip(initial, weights(mirrored)))
dataset = tf.data.Dataset.from_tensor_slices((source, target)).batch(2)
replica_batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

@tf.function
def step(data):
    return strategy.run(mirrored.train_step, args=(data,))

step(replica_batch)
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "replica_batch_sizes": [int(t.shape[0]) for t in strategy.experimental_local_results(replica_batch[0])],
    "initial_difference": same_start,
    "difference": max(float(np.max(np.abs(a - b))) for a, b in zip(weights(single), weights(mirrored))),
    "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(initial, weights(single))),
    "updates": [int(mirrored.generator_optimizer.iterations.numpy()), int(mirrored.discriminator_optimizer.iterations.numpy())],
}))
"""


def test_mirrored_step_on_two_cpus_equals_the_single_device_step():
    # The same global batch of 2, split 1 + 1 over two logical CPUs: per-replica means divided by
    # the replica count and summed by the optimizer give the single-device update; the weights
    # after one Algorithm 1 step agree to atol 1e-5 (float32 reductions in another order).
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY), TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run([sys.executable, "-c", MIRRORED_STEP], cwd=REPOSITORY, env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["replica_batch_sizes"] == [1, 1]
    assert result["initial_difference"] == 0.0
    assert result["updates"] == [3, 1]
    assert result["moved"] > 1e-4  # the step did something worth comparing
    assert result["difference"] < 1e-5, result
