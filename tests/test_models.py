"""Network builders: pinned parameter counts, pix2pix layer ordering, SN wrapping, VGG input
convention, save → reload."""

import dataclasses
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from medgan_tf.config import DiscriminatorConfig, ExperimentConfig, DataConfig, GeneratorConfig, TrainConfig
from medgan_tf.errors import UserError
from medgan_tf.models import (
    FEATURES,
    PROBABILITY,
    build_casnet,
    build_discriminator,
    build_feature_extractor,
    build_networks,
    build_ublock,
    encoder_widths,
    spectral_normalization_layers,
    ublock_trainable_params,
)
from medgan_tf.models.discriminator import LOGITS, receptive_field, renormalize_spectral_kernels
from medgan_tf.models.feature_extractor import VGG_BGR_MEANS, GrayscaleToVGGInput

TINY = GeneratorConfig(num_ublocks=2, base_filters=8)


def trainable(model) -> int:
    return int(sum(np.prod(variable.shape) for variable in model.trainable_variables))


def test_ublock_at_256_has_the_pix2pix_unet_256_parameter_count():
    ublock = build_ublock(GeneratorConfig(), 256)
    assert trainable(ublock) == 54_407_809
    # pix2pix ordering: 8 bias-free encoder convs; 7 bias-free transposed convs + 1 with bias.
    convs = [layer for layer in ublock.layers if type(layer) is keras.layers.Conv2D]
    transposed = [layer for layer in ublock.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert [conv.filters for conv in convs] == [64, 128, 256, 512, 512, 512, 512, 512]
    assert [conv.filters for conv in transposed] == [512, 512, 512, 512, 256, 128, 64, 1]
    assert not any(conv.use_bias for conv in convs + transposed[:-1]) and transposed[-1].use_bias
    # norm on encoder convs 2–7 (not the first, not the innermost) and on all 7 inner decoder convs
    norms = [layer.name for layer in ublock.layers if isinstance(layer, keras.layers.GroupNormalization)]
    assert len(norms) == 6 + 7 and "ublock_down1_norm" not in norms and "ublock_down8_norm" not in norms
    assert ublock.get_layer("ublock_down2_leaky_relu") and "ublock_down1_leaky_relu" not in [l.name for l in ublock.layers]
    assert ublock.output.shape == (None, 256, 256, 1)


def test_casnet_6_parameter_count_by_arithmetic_checked_against_a_built_ublock():
    # ublock_trainable_params is checked against the built U-block at 256 above and here at 32.
    assert ublock_trainable_params(GeneratorConfig(), 256) == 54_407_809
    assert 6 * ublock_trainable_params(GeneratorConfig(), 256) == 326_446_854
    small = GeneratorConfig(num_ublocks=6, base_filters=8)
    assert trainable(build_casnet(small, 32)) == 6 * ublock_trainable_params(small, 32)


def test_batch_normalization_has_the_same_trainable_count():
    config = GeneratorConfig(base_filters=8, normalization="batch")
    ublock = build_ublock(config, 32)
    assert trainable(ublock) == ublock_trainable_params(config, 32)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in ublock.layers)


@pytest.mark.parametrize(
    "config, size, expected",
    [
        (GeneratorConfig(), 256, [64, 128, 256, 512, 512, 512, 512, 512]),
        (GeneratorConfig(base_filters=8), 64, [8, 16, 32, 64, 128, 256]),
        (GeneratorConfig(base_filters=8, max_filters=32), 32, [8, 16, 32, 32, 32]),
    ],
)
def test_encoder_widths(config, size, expected):
    assert encoder_widths(config, size) == expected


@pytest.mark.parametrize("size", [0, 2, 48, 100])
def test_image_size_must_be_a_power_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        build_ublock(GeneratorConfig(base_filters=8), size)


def test_casnet_chains_ublocks_and_stays_in_range():
    casnet = build_casnet(TINY, 32)
    assert [layer.name for layer in casnet.layers[1:]] == ["ublock_1", "ublock_2"]
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    output = casnet(images).numpy()
    assert output.shape == (2, 32, 32, 1) and output.dtype == np.float32
    assert np.all(np.abs(output) <= 1.0)
    # block 2 consumes block 1's image
    first = casnet.get_layer("ublock_1")(images)
    np.testing.assert_allclose(casnet.get_layer("ublock_2")(first).numpy(), output, atol=1e-6)


def test_generator_save_and_reload_gives_identical_outputs(tmp_path):
    casnet = build_casnet(TINY, 32)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    path = tmp_path / "generator.keras"
    casnet.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded(images).numpy(), casnet(images).numpy())


def test_discriminator_outputs_and_spectral_normalization():
    discriminator = build_discriminator(DiscriminatorConfig(), 32)
    candidate = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    source = -candidate
    outputs = discriminator([candidate, source], training=True)
    probability = outputs[PROBABILITY].numpy()
    assert probability.shape == (2, 16, 16, 1) and np.all((probability > 0) & (probability < 1))
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-outputs[LOGITS].numpy())), rtol=1e-5)
    assert outputs[LOGITS].dtype == "float32"
    assert [tuple(f.shape) for f in outputs[FEATURES]] == [(2, 32, 32, 2), (2, 16, 16, 64), (2, 16, 16, 128)]
    # feature i=0 is the raw pair, candidate first
    np.testing.assert_array_equal(outputs[FEATURES][0].numpy(), np.concatenate([candidate, source], -1))
    wrappers = spectral_normalization_layers(discriminator)
    assert [w.layer.filters for w in wrappers] == [64, 128, 1]
    # pix2pix n_layers = 1: strides 2, 1, 1; a norm on the second conv only, so only it is bias-free
    assert [w.layer.strides for w in wrappers] == [(2, 2), (1, 1), (1, 1)]
    assert [w.layer.use_bias for w in wrappers] == [True, False, True]
    norms = [l.name for l in discriminator.layers if isinstance(l, keras.layers.GroupNormalization)]
    assert norms == ["hidden2_norm"]
    plain_convs = [l for l in discriminator.layers if isinstance(l, keras.layers.Conv2D)]
    assert plain_convs == []  # every conv sits inside a SpectralNormalization wrapper
    # 2·64·16 + 64 + 64·128·16 + 256 (gamma/beta of the instance norm) + 128·16 + 1
    assert trainable(discriminator) == 2048 + 64 + 131072 + 256 + 2049


def test_discriminator_starts_spectrally_normalized():
    discriminator = build_discriminator(DiscriminatorConfig(), 16)
    for layer in spectral_normalization_layers(discriminator):
        kernel = layer.kernel.numpy()
        largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        assert largest == pytest.approx(1.0, abs=1e-3), layer.name


def test_spectral_normalization_does_not_run_in_the_forward_pass():
    # Keras' wrapper rescales the kernel on every training=True call; here only Algorithm 1
    # line 12 (`renormalize_spectral_kernels`) may change the discriminator's variables.
    discriminator = build_discriminator(DiscriminatorConfig(), 16)
    for layer in spectral_normalization_layers(discriminator):
        layer.kernel.assign(3.0 * layer.kernel)
    before = [variable.numpy().copy() for variable in discriminator.weights]
    pair = [np.ones((1, 16, 16, 1), "float32")] * 2
    discriminator(pair, training=True)
    discriminator(pair, training=False)
    assert all(np.array_equal(old, v.numpy()) for old, v in zip(before, discriminator.weights))
    renormalize_spectral_kernels(discriminator)
    kernel = spectral_normalization_layers(discriminator)[0].kernel.numpy()
    assert np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)


def test_discriminator_without_normalization_uses_biases():
    discriminator = build_discriminator(DiscriminatorConfig(normalization="none"), 16)
    assert all(w.layer.use_bias for w in spectral_normalization_layers(discriminator))


def test_discriminator_receptive_field_is_16_from_its_layers():
    assert receptive_field(build_discriminator(DiscriminatorConfig(), 32)) == 16
    # pix2pix n_layers = 2 (one more stride-2 conv): 34
    assert receptive_field(build_discriminator(DiscriminatorConfig(filters=(8, 16, 32)), 32)) == 34


@pytest.mark.parametrize("normalization", ["batch", "none"])
def test_one_patch_sees_exactly_a_16x16_window_of_the_input_pair(normalization):
    # Paper §2.4.3: a 16×16 patch. The gradient of one interior output pixel w.r.t. both input
    # images is non-zero on exactly a 16×16 window (the old stride-2/2 design saw 22×22). Instance
    # normalization couples every pixel through its per-image statistics, so the convolutional
    # window is measured without it (batch norm in inference mode is a per-channel affine map).
    size = 32
    discriminator = build_discriminator(DiscriminatorConfig(normalization=normalization), size)
    rng = np.random.default_rng(4)
    candidate = tf.Variable(rng.uniform(-1, 1, (1, size, size, 1)).astype("float32"))
    source = tf.Variable(rng.uniform(-1, 1, (1, size, size, 1)).astype("float32"))
    row = column = 8  # interior: its window does not reach the zero padding
    with tf.GradientTape() as tape:
        logit = discriminator([candidate, source], training=False)[LOGITS][0, row, column, 0]
    gradients = tape.gradient(logit, [candidate, source])
    support = np.any([np.abs(g.numpy()[0, :, :, 0]) > 0 for g in gradients], axis=0)
    rows, columns = np.nonzero(support)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (2 * row - 5, 2 * row + 10, 2 * column - 5, 2 * column + 10)
    assert support.sum() == 16 * 16  # every pixel of the window matters, none outside it


def test_vgg_input_convention():
    layer = GrayscaleToVGGInput()
    values = layer(np.array([-1.0, 1.0], "float32").reshape(1, 1, 2, 1)).numpy()
    np.testing.assert_allclose(values[0, 0, 0], [-m for m in VGG_BGR_MEANS], rtol=1e-5)
    np.testing.assert_allclose(values[0, 0, 1], [255 - m for m in VGG_BGR_MEANS], rtol=1e-5)


def test_feature_extractor_without_weights_warns_and_is_frozen(caplog):
    with caplog.at_level(logging.WARNING):
        extractor = build_feature_extractor(["block1_conv1", "block5_conv1"], weights="none", image_size=32)
    assert "RANDOM weights" in caplog.text
    assert extractor.trainable_weights == []
    features = extractor(np.zeros((1, 32, 32, 1), "float32"))
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        "block1_conv1": (1, 32, 32, 64), "block5_conv1": (1, 2, 2, 512)}


def test_feature_extractor_weight_errors(tmp_path):
    missing = tmp_path / "vgg19_notop.h5"
    with pytest.raises(UserError, match=str(missing)):
        build_feature_extractor(["block1_conv1"], weights=str(missing), image_size=32)
    with pytest.raises(UserError, match="'imagenet'"):
        build_feature_extractor(["block1_conv1"], weights="vgg.bin", image_size=32)
    with pytest.raises(ValueError, match="unknown VGG-19 layers"):
        build_feature_extractor(["block9_conv1"], weights="none", image_size=32)
    for weights in ("auto", "none"):  # a slice too small for VGG-19 is named as such, not as a weights problem
        with pytest.raises(UserError, match=r"need slices of at least 32×32 .* received image size 16: use "
                                            r"--image-size 32 or more, or switch the losses off with --lambda-style 0"):
            build_feature_extractor(["block1_conv1"], weights=weights, image_size=16)


def test_build_networks_skips_vgg_when_no_style_or_content():
    config = ExperimentConfig(generator=TINY, data=DataConfig(image_size=32), train=TrainConfig(vgg_weights="none"))
    no_vgg = dataclasses.replace(config, losses=dataclasses.replace(config.losses, style=0.0, content=0.0))
    assert build_networks(no_vgg).feature_extractor is None
    networks = build_networks(config)
    assert set(networks.feature_extractor.output) == {
        "block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"}


def test_auto_vgg_weights_fall_back_to_random_when_imagenet_is_unobtainable(monkeypatch, caplog):
    import keras

    from medgan_tf.models.feature_extractor import build_feature_extractor

    real_vgg19 = keras.applications.VGG19

    def offline_vgg19(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise Exception("URL fetch failure -- [Errno -2] Name or service not known")
        return real_vgg19(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "VGG19", offline_vgg19)
    with caplog.at_level("WARNING"):
        extractor = build_feature_extractor(["block1_conv1"], weights="auto", image_size=32)
    features = extractor(np.zeros((1, 32, 32, 1), "float32"))
    assert tuple(features["block1_conv1"].shape) == (1, 32, 32, 64)
    assert "Falling back to RANDOM VGG-19 weights" in caplog.text
    assert "Name or service not known" in caplog.text
