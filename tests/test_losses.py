"""Every loss against values computed by hand on 2×2 to 4×4 tensors (paper eq. 3–11)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from medgan_tf import losses


def tensor(values, shape=None):
    array = np.asarray(values, dtype=np.float32)
    return tf.constant(array.reshape(shape) if shape else array)


def logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


# (1, 2, 2, 2): channel vectors at the 4 positions are [1,0], [0,1], [1,1], [0,0].
FEATURES_2X2X2 = tensor([[[1, 0], [0, 1]], [[1, 1], [0, 0]]], (1, 2, 2, 2))


def test_cgan_generator_loss_is_mean_negative_log_sigmoid_of_the_logits():
    fake_logits = tensor([logit(0.5), logit(0.25)], (1, 1, 2, 1))
    # −(ln 0.5 + ln 0.25)/2 = (ln 2 + 2 ln 2)/2 = 1.5 ln 2
    assert float(losses.cgan_generator_loss(fake_logits)) == pytest.approx(1.5 * math.log(2), rel=1e-6)
    # softplus(−l) at l = 0 and l = 30: ln 2 and ln(1 + e^−30) ≈ e^−30
    assert float(losses.cgan_generator_loss(tensor([0.0, 30.0], (1, 1, 2, 1)))) == pytest.approx(
        (math.log(2) + math.exp(-30)) / 2, rel=1e-6)


def test_cgan_discriminator_loss_hand_values_without_clipping():
    real_logits = tensor([logit(0.5), logit(0.8)], (1, 1, 2, 1))
    fake_logits = tensor([logit(0.5), logit(0.2)], (1, 1, 2, 1))
    expected = -(math.log(0.5) + math.log(0.8)) / 2 - (math.log(0.5) + math.log(0.8)) / 2
    assert float(losses.cgan_discriminator_loss(real_logits, fake_logits)) == pytest.approx(expected, rel=1e-6)
    # Saturated scores are exact, not clipped: −log σ(−40) − log(1 − σ(50)) ≈ 40 + 50.
    worst = losses.cgan_discriminator_loss(tensor([-40.0], (1, 1, 1, 1)), tensor([50.0], (1, 1, 1, 1)))
    assert float(worst) == pytest.approx(90.0, rel=1e-6)
    assert float(losses.cgan_generator_loss(tensor([-100.0], (1, 1, 1, 1)))) == pytest.approx(100.0, rel=1e-6)


def test_confident_discriminator_still_gives_the_generator_a_gradient():
    # D(G(y)) = σ(−30) ≈ 1e-13: a clipped log would have zero gradient; −log σ(l) has
    # d/dl = −(1 − σ(l)) ≈ −1 per patch, i.e. −1/4 for the mean over 4 patches.
    fake_logits = tf.Variable(tf.fill((1, 2, 2, 1), -30.0))
    with tf.GradientTape() as tape:
        loss = losses.cgan_generator_loss(fake_logits)
    gradient = tape.gradient(loss, fake_logits).numpy()
    np.testing.assert_allclose(gradient, np.full((1, 2, 2, 1), -0.25), rtol=1e-6)
    assert float(loss) == pytest.approx(30.0, rel=1e-6)


def test_perceptual_loss_is_weighted_per_layer_mean_absolute_error():
    fake = [tensor([[1, 2], [3, 4]], (1, 2, 2, 1)), tensor([[1, -1], [0, 2]], (1, 1, 2, 2))]
    real = [tf.zeros((1, 2, 2, 1)), tf.zeros((1, 1, 2, 2))]
    # layer 0: (1+2+3+4)/(2·2·1) = 2.5; layer 1: (1+1+0+2)/(1·2·2) = 1 → 1·2.5 + 2·1
    assert float(losses.perceptual_loss(fake, real, (1.0, 2.0))) == pytest.approx(4.5)
    assert float(losses.perceptual_loss(fake, real)) == pytest.approx(3.5)


def test_perceptual_loss_averages_over_the_batch():
    fake = [tensor([[[1, 1], [1, 1]], [[3, 3], [3, 3]]], (2, 2, 2, 1))]
    real = [tf.zeros((2, 2, 2, 1))]
    # sample means 1 and 3 → batch mean 2
    assert float(losses.perceptual_loss(fake, real)) == pytest.approx(2.0)


def test_feature_matching_skips_the_raw_pair_and_pan_margin_hinges():
    fake = [tensor([[100, 100], [100, 100]], (1, 2, 2, 1)), tensor([[1, -1], [0, 2]], (1, 1, 2, 2))]
    real = [tf.zeros((1, 2, 2, 1)), tf.zeros((1, 1, 2, 2))]
    assert float(losses.feature_matching_loss(fake, real, (1.0, 2.0))) == pytest.approx(2.0)
    zero = tensor([0.0], (1, 1, 1, 1))  # D = σ(0) = 0.5 on both
    cgan = 2 * math.log(2)
    # hidden discrepancy = 2: margin 3 adds 3 − 2 = 1; margin 1 adds nothing.
    assert float(losses.pan_margin_discriminator_loss(zero, zero, fake, real, 3.0, (1.0, 2.0))) == pytest.approx(cgan + 1)
    assert float(losses.pan_margin_discriminator_loss(zero, zero, fake, real, 1.0, (1.0, 2.0))) == pytest.approx(cgan)


def test_pan_hinge_and_generator_term_weigh_the_hidden_layers_alike():
    # Two hidden layers with mean absolute differences 1 and 3; unequal weights λ = (·, 2, 5).
    fake = [tf.fill((1, 2, 2, 1), 9.0), tf.fill((1, 2, 2, 2), 1.0), tf.fill((1, 1, 1, 4), -3.0)]
    real = [tf.zeros((1, 2, 2, 1)), tf.zeros((1, 2, 2, 2)), tf.zeros((1, 1, 1, 4))]
    weights = (7.0, 2.0, 5.0)
    generator_term = 2.0 * 1 + 5.0 * 3  # 17: the raw pair (weight 7) is not part of PAN's term
    assert float(losses.feature_matching_loss(fake, real, weights)) == pytest.approx(generator_term)
    zero = tensor([0.0], (1, 1, 1, 1))
    margin = 20.0
    hinge = float(losses.pan_margin_discriminator_loss(zero, zero, fake, real, margin, weights)) - 2 * math.log(2)
    assert hinge == pytest.approx(margin - generator_term, rel=1e-6)  # 3, not 20 − 4 (equal weights)


def test_gram_matrix_is_normalized_by_hwd():
    # Σ v vᵀ = [[2, 1], [1, 2]]; h·w·d = 2·2·2 = 8
    gram = losses.gram_matrix(FEATURES_2X2X2).numpy()
    np.testing.assert_allclose(gram, [[[0.25, 0.125], [0.125, 0.25]]], rtol=1e-6)


def test_gram_matrix_matches_numpy_on_random_4x4():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    flat = features.reshape(2, 16, 3)
    expected = np.einsum("bim,bin->bmn", flat, flat) / (4 * 4 * 3)
    np.testing.assert_allclose(losses.gram_matrix(tf.constant(features)).numpy(), expected, rtol=1e-5)


def test_style_loss_has_one_over_four_d_squared():
    # ‖Gram‖_F² = 0.25² + 2·0.125² + 0.25² = 0.15625; 1/(4·d²) = 1/16 → 0.009765625; λ = 2
    value = losses.style_loss([FEATURES_2X2X2], [tf.zeros((1, 2, 2, 2))], (2.0,))
    assert float(value) == pytest.approx(2 * 0.15625 / 16, rel=1e-6)


def test_style_loss_sums_layers_of_different_depth():
    rng = np.random.default_rng(2)
    fakes = [rng.normal(size=(1, 4, 4, 2)), rng.normal(size=(1, 2, 2, 3))]
    reals = [rng.normal(size=(1, 4, 4, 2)), rng.normal(size=(1, 2, 2, 3))]
    expected = 0.0
    for fake, real in zip(fakes, reals):
        h, w, d = fake.shape[1:]
        gram = lambda v: v.reshape(-1, d).T @ v.reshape(-1, d) / (h * w * d)  # noqa: E731
        expected += np.sum((gram(fake) - gram(real)) ** 2) / (4 * d**2)
    value = losses.style_loss([tf.constant(f, tf.float32) for f in fakes], [tf.constant(r, tf.float32) for r in reals])
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_content_loss_has_one_over_hwd():
    # squared Frobenius norm = 1 + 1 + 2 = 4; h·w·d = 8; λ = 3
    value = losses.content_loss([FEATURES_2X2X2], [tf.zeros((1, 2, 2, 2))], (3.0,))
    assert float(value) == pytest.approx(3 * 4 / 8)


def test_pixel_losses():
    prediction = tensor([[1, -3], [0, 2]], (1, 2, 2, 1))
    target = tf.zeros((1, 2, 2, 1))
    assert float(losses.l1_loss(prediction, target)) == pytest.approx((1 + 3 + 0 + 2) / 4)
    assert float(losses.l2_loss(prediction, target)) == pytest.approx((1 + 9 + 0 + 4) / 4)


def test_total_variation_loss():
    image = tensor([[0, 1], [2, 4]], (1, 2, 2, 1))
    # vertical |2−0|, |4−1| → mean 2.5; horizontal |1−0|, |4−2| → mean 1.5
    assert float(losses.total_variation_loss(image)) == pytest.approx(4.0)
    assert float(losses.total_variation_loss(tf.ones((2, 4, 4, 1)))) == 0.0


def test_float16_inputs_give_float32_scalars():
    value = losses.perceptual_loss([tf.ones((1, 2, 2, 1), tf.float16)], [tf.zeros((1, 2, 2, 1), tf.float16)])
    assert value.dtype == tf.float32 and value.shape == ()


@pytest.mark.parametrize(
    "call",
    [
        lambda: losses.perceptual_loss([tf.zeros((1, 2, 2, 1))], [tf.zeros((1, 2, 2, 1))] * 2),
        lambda: losses.perceptual_loss([tf.zeros((1, 2, 2, 1))], [tf.zeros((1, 2, 2, 1))], (1.0, 1.0)),
        lambda: losses.style_loss([tf.zeros((1, 2, 2, 1))], []),
        lambda: losses.feature_matching_loss([tf.zeros((1, 2, 2, 1))], [tf.zeros((1, 2, 2, 1))]),
    ],
)
def test_mismatched_layers_are_errors(call):
    with pytest.raises(ValueError):
        call()
