"""MedGAN's loss terms and the baselines' (paper §2.1–2.3 and §3.2), as plain functions of tensors.

Every function returns a float32 scalar: the batch mean of a per-sample loss. Inputs may be
float16 (mixed precision); they are cast to float32 first. Loss *weights* (λ1, λ2, λ3, …) are not
applied here but once, in `medgan_tf.training.medgan_model.MedGAN`; the per-layer weights λ_pi,
λ_sj, λ_cj inside eq. 7, 10 and 11 are arguments because they belong to those equations.

The adversarial losses take the discriminator's pre-sigmoid *logits* l (D = σ(l)) and use
log σ(l) = −softplus(−l) and log(1 − σ(l)) = −softplus(l): exact for any l, so there is no
clipping, and a confident discriminator (σ(l) ≈ 0 on fakes) still gives the generator the
gradient −(1 − σ(l)) ≈ −1 per patch.

Feature tensors are channels-last, (B, h, w, d).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def _float32(x) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def _layer_weights(layer_weights: Sequence[float] | None, count: int, equation: str) -> list[float]:
    if layer_weights is None:
        return [1.0] * count
    if len(layer_weights) != count:
        raise ValueError(f"{equation}: {count} feature layers but {len(layer_weights)} layer weights {tuple(layer_weights)}")
    return [float(weight) for weight in layer_weights]


def _check_pairs(fake_features: Sequence, real_features: Sequence, equation: str) -> None:
    if len(fake_features) != len(real_features):
        raise ValueError(f"{equation}: {len(fake_features)} fake feature layers vs {len(real_features)} real ones")


# --------------------------------------------------------------------------- adversarial


def cgan_generator_loss(fake_logits) -> tf.Tensor:
    """Generator's cGAN loss, Algorithm 1 line 4: −log D(G(y), y) = softplus(−l_fake), averaged
    over patches and batch (the non-saturating form of eq. 3, paper §2.1.1).

    fake_logits: (B, P, P, 1) pre-sigmoid patch scores of the generated image."""
    return tf.reduce_mean(tf.nn.softplus(-_float32(fake_logits)))


def cgan_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """Discriminator's cGAN loss, eq. 3 / Algorithm 1 line 10, as a quantity to minimise:
    −[log D(x, y) + log(1 − D(G(y), y))] = softplus(−l_real) + softplus(l_fake), each term
    averaged over patches and batch. real_logits, fake_logits: (B, P, P, 1) pre-sigmoid scores."""
    return tf.reduce_mean(tf.nn.softplus(-_float32(real_logits))) + tf.reduce_mean(tf.nn.softplus(_float32(fake_logits)))


# --------------------------------------------------------------------------- discriminator features


def _mean_absolute_error(a, b) -> tf.Tensor:
    # 1/(h·w·d)·‖a − b‖₁ per sample, then the batch mean: one mean over all elements.
    return tf.reduce_mean(tf.abs(_float32(a) - _float32(b)))


def perceptual_loss(fake_features: Sequence, real_features: Sequence, layer_weights: Sequence[float] | None = None) -> tf.Tensor:
    """MedGAN's perceptual loss, eq. 6–7: Σ_i λ_pi · 1/(h_i·w_i·d_i)·‖D_i(G(y), y) − D_i(x, y)‖₁.

    fake_features / real_features: the discriminator's feature lists [raw pair (i=0), hidden 1,
    …] for (G(y), y) and (x, y). i = 0 is the pixel term that distinguishes MedGAN from PAN.
    layer_weights: λ_pi, one per layer (default all 1: equal influence, paper §2.5)."""
    _check_pairs(fake_features, real_features, "perceptual loss (eq. 7)")
    weights = _layer_weights(layer_weights, len(fake_features), "perceptual loss (eq. 7)")
    return tf.add_n([weight * _mean_absolute_error(fake, real)
                     for weight, fake, real in zip(weights, fake_features, real_features)])


def feature_matching_loss(fake_features: Sequence, real_features: Sequence, layer_weights: Sequence[float] | None = None) -> tf.Tensor:
    """PAN's perceptual adversarial loss for the transformer (Wang et al. 2018, "Perceptual
    adversarial networks for image-to-image transformation", IEEE TIP 27(8), arXiv 1706.09138,
    §III-B): Σ_j λ_j · 1/(h_j·w_j·d_j)·‖D_j(G(y)) − D_j(x)‖₁ over the *hidden* layers only.

    Takes the same full feature lists and layer weights as `perceptual_loss` and skips i = 0
    (the raw pair): PAN has no pixel term."""
    _check_pairs(fake_features, real_features, "feature matching loss")
    weights = _layer_weights(layer_weights, len(fake_features), "feature matching loss")
    if len(fake_features) < 2:
        raise ValueError("feature matching loss needs at least one hidden discriminator layer after the raw pair")
    return perceptual_loss(fake_features[1:], real_features[1:], weights[1:])


def pan_margin_discriminator_loss(
    real_logits,
    fake_logits,
    fake_features: Sequence,
    real_features: Sequence,
    margin: float,
    layer_weights: Sequence[float] | None = None,
) -> tf.Tensor:
    """PAN's discriminator loss (Wang et al. 2018, arXiv 1706.09138, §III-B):
    −log D(x, y) − log(1 − D(G(y), y)) + [m − Σ_j λ_j P_j(G(y), x)]⁺.

    The hinge keeps the hidden-layer discrepancy between real and generated images at least the
    positive margin m, so D keeps "discovering" differences the generator must then close.
    The cGAN part is `cgan_discriminator_loss` on the logits. Features and weights λ_j are those
    of `feature_matching_loss` (hidden layers only): pass the generator term's weights so the
    hinge and the generator measure the same discrepancy."""
    discrepancy = feature_matching_loss(fake_features, real_features, layer_weights)
    return cgan_discriminator_loss(real_logits, fake_logits) + tf.nn.relu(float(margin) - discrepancy)


# --------------------------------------------------------------------------- VGG style and content


def gram_matrix(features) -> tf.Tensor:
    """Eq. 9: Gr(x)_{m,n} = 1/(h·w·d) · Σ_{h,w} V(x)_{h,w,m} · V(x)_{h,w,n}.

    features (B, h, w, d) → (B, d, d), float32."""
    features = _float32(features)
    shape = tf.shape(features)
    normalizer = tf.cast(shape[1] * shape[2] * shape[3], tf.float32)
    return tf.einsum("bhwm,bhwn->bmn", features, features) / normalizer


def style_loss(fake_features: Sequence, reference_features: Sequence, layer_weights: Sequence[float] | None = None) -> tf.Tensor:
    """Eq. 10: Σ_j λ_sj · 1/(4·d_j²) · ‖Gr_j(G(y)) − Gr_j(reference)‖_F², batch mean.

    The reference is the target x for MedGAN and the source y for Fila-sGAN (the caller
    chooses). layer_weights λ_sj default to 1."""
    _check_pairs(fake_features, reference_features, "style loss (eq. 10)")
    weights = _layer_weights(layer_weights, len(fake_features), "style loss (eq. 10)")
    terms = []
    for weight, fake, reference in zip(weights, fake_features, reference_features):
        depth = tf.cast(tf.shape(fake)[-1], tf.float32)
        squared_frobenius = tf.reduce_sum(tf.square(gram_matrix(fake) - gram_matrix(reference)), axis=[1, 2])
        terms.append(weight * tf.reduce_mean(squared_frobenius) / (4.0 * depth**2))
    return tf.add_n(terms)


def content_loss(fake_features: Sequence, real_features: Sequence, layer_weights: Sequence[float] | None = None) -> tf.Tensor:
    """Eq. 11: Σ_j λ_cj · 1/(h_j·w_j·d_j) · ‖V_j(G(y)) − V_j(x)‖_F², batch mean.

    Per layer this is the mean squared difference over all elements. layer_weights λ_cj
    default to 1."""
    _check_pairs(fake_features, real_features, "content loss (eq. 11)")
    weights = _layer_weights(layer_weights, len(fake_features), "content loss (eq. 11)")
    return tf.add_n([weight * tf.reduce_mean(tf.square(_float32(fake) - _float32(real)))
                     for weight, fake, real in zip(weights, fake_features, real_features)])


# --------------------------------------------------------------------------- pixel losses (baselines)


def l1_loss(prediction, target) -> tf.Tensor:
    """Eq. 4 (pix2pix, Fila-sGAN): mean absolute error 𝔼‖x − G(y)‖₁ / (h·w·c)."""
    return _mean_absolute_error(prediction, target)


def l2_loss(prediction, target) -> tf.Tensor:
    """ID-CGAN's pixel loss (Zhang et al. 2017): mean squared error ‖x − G(y)‖₂² / (h·w·c)."""
    return tf.reduce_mean(tf.square(_float32(prediction) - _float32(target)))


def total_variation_loss(images) -> tf.Tensor:
    """Anisotropic total variation (Fila-sGAN's smoothness term, Johnson et al. 2016):
    mean |I[i+1, j] − I[i, j]| + mean |I[i, j+1] − I[i, j]| over the batch.

    images: (B, H, W, C). Per-pixel means keep the value independent of the image size."""
    images = _float32(images)
    vertical = tf.reduce_mean(tf.abs(images[:, 1:, :, :] - images[:, :-1, :, :]))
    horizontal = tf.reduce_mean(tf.abs(images[:, :, 1:, :] - images[:, :, :-1, :]))
    return vertical + horizontal
