"""Registered model variants (SPEC.md §2, paper §3.2).

Each recipe states its generator depth, its loss terms and their weights, and cites the paper it
comes from. All but `medgan` use a single U-block, the paper's protocol for a fair comparison
(§3.2.1, §3.2.2): same 16×16 spectral-normalized PatchGAN, same Algorithm 1 schedule (N_G = 3,
Adam 2e-4 / β1 0.5, batch 1) — only the loss terms differ.

Weights: MedGAN states λ1 = 20, λ2 = λ3 = 1e-4 and nothing for the baselines. A baseline uses the
weight of the paper it comes from where that paper (or its authors' code) states one for a loss
of the same form; otherwise MedGAN's λ for the matching term. Every recipe's docstring says which.
The cGAN weight is 1 everywhere, so other weights are relative to the adversarial term.
"""

from __future__ import annotations

import dataclasses

from medgan_tf.config import LossConfig
from medgan_tf.registry import MODELS, ModelRecipe

# MedGAN (eq. 12, §2.5): λ1 (perceptual), λ2 (style), λ3 (content).
MEDGAN_PERCEPTUAL = 20.0
MEDGAN_STYLE = 1e-4
MEDGAN_CONTENT = 1e-4
# pix2pix (Isola et al. 2017, CVPR, eq. 4 and §4): λ = 100 on the L1 term.
PIX2PIX_L1 = 100.0
# ID-CGAN (Zhang, Sindagi & Patel 2017, arXiv 1701.05957): L = L_E + λ_a·L_A + λ_p·L_P with
# λ_a = 6.6e-3, λ_p = 1; the authors' Torch code (IDGAN/train.lua) writes the same as
# L_A + 150·L_E + 150·L_P (1/6.6e-3 ≈ 150), the content layer being VGG relu2_2 (layer 9).
ID_CGAN_L2 = 150.0
ID_CGAN_CONTENT = 150.0
ID_CGAN_CONTENT_LAYERS = ("block2_conv2",)  # relu2_2: Keras' VGG convs include the ReLU
# Fila-sGAN's total-variation weight is not transferable (its TV is a sum over pixels of images on
# another scale, and the value could not be checked offline); ours is a per-pixel mean on [-1, 1]
# (about 0.05–0.2 on PET slices), so weight 1 keeps it a mild smoothness prior well below L1·100.
FILA_SGAN_TOTAL_VARIATION = 1.0


def _recipe(name: str, num_ublocks: int, losses: LossConfig, factory) -> ModelRecipe:
    return ModelRecipe(name, num_ublocks=num_ublocks, losses=losses, description=" ".join((factory.__doc__ or "").split()))


_replace = dataclasses.replace


def _only(**weights: float) -> LossConfig:
    """A LossConfig with every generator term off except `weights` (cGAN is always 1)."""
    off = dict(perceptual=0.0, style=0.0, content=0.0, l1=0.0, l2=0.0, total_variation=0.0, feature_matching=0.0)
    return LossConfig(**{**off, "cgan": 1.0, **weights})


# --------------------------------------------------------------------------- MedGAN


@MODELS.register("medgan")
def medgan() -> ModelRecipe:
    """MedGAN (Armanious et al. 2018, arXiv 1806.06397, eq. 12): CasNet of 6 U-blocks,
    cGAN + 20·perceptual + 1e-4·style + 1e-4·content (λ1, λ2, λ3 of §2.5)."""
    return _recipe("medgan", 6, LossConfig(), medgan)


@MODELS.register("medgan_1g")
def medgan_1g() -> ModelRecipe:
    """MedGAN-1G (MedGAN, Armanious et al. 2018, §3.2.1, Table I): MedGAN's losses and weights
    (cGAN + 20·perceptual + 1e-4·style + 1e-4·content) with a single U-block generator."""
    return _recipe("medgan_1g", 1, LossConfig(), medgan_1g)


# --------------------------------------------------------------------------- loss ablations (Table I)


@MODELS.register("cgan")
def cgan() -> ModelRecipe:
    """Ablation "cGAN" (MedGAN, Armanious et al. 2018, §3.2.1, Table I): the conditional
    adversarial loss alone (Algorithm 1 line 4), single U-block."""
    return _recipe("cgan", 1, _only(), cgan)


@MODELS.register("perceptual")
def perceptual() -> ModelRecipe:
    """Ablation "Perceptual" (MedGAN, Armanious et al. 2018, §3.2.1, Table I): cGAN +
    20·perceptual (eq. 7 with the i = 0 pixel term; MedGAN's λ1), single U-block."""
    return _recipe("perceptual", 1, _only(perceptual=MEDGAN_PERCEPTUAL), perceptual)


@MODELS.register("style_content")
def style_content() -> ModelRecipe:
    """Ablation "Style-content" (MedGAN, Armanious et al. 2018, §3.2.1, Table I): cGAN +
    1e-4·style + 1e-4·content (eq. 10–11 on VGG-19; MedGAN's λ2, λ3), single U-block."""
    return _recipe("style_content", 1, _only(style=MEDGAN_STYLE, content=MEDGAN_CONTENT), style_content)


# --------------------------------------------------------------------------- state of the art (Table II)


@MODELS.register("pix2pix")
def pix2pix() -> ModelRecipe:
    """pix2pix (Isola et al. 2017, "Image-to-image translation with conditional adversarial
    networks", CVPR; MedGAN §3.2.2): cGAN + 100·L1 (λ = 100 of Isola et al. §4), single U-block."""
    return _recipe("pix2pix", 1, _only(l1=PIX2PIX_L1), pix2pix)


@MODELS.register("pan")
def pan() -> ModelRecipe:
    """PAN (Wang et al. 2018, "Perceptual adversarial networks for image-to-image
    transformation", IEEE TIP 27(8), arXiv 1706.09138; MedGAN §3.2.2): cGAN + 20·feature matching
    on the discriminator's hidden layers (no i = 0 pixel term), and PAN's positive-margin
    discriminator loss −log D(x,y) − log(1 − D(G(y),y)) + [m − Σ_j P_j]⁺ with m = 1.

    PAN's per-layer weights belong to its own 4-hidden-layer discriminator; under MedGAN's protocol
    D has 2 hidden layers, so they get MedGAN's equal λ_pi and the sum MedGAN's λ1 = 20; the margin
    is `LossConfig.pan_margin` (1). Single U-block."""
    losses = _replace(_only(feature_matching=MEDGAN_PERCEPTUAL), discriminator_loss="pan_margin")
    return _recipe("pan", 1, losses, pan)


@MODELS.register("id_cgan")
def id_cgan() -> ModelRecipe:
    """ID-CGAN (Zhang, Sindagi & Patel 2017, "Image de-raining using a conditional generative
    adversarial network", arXiv 1701.05957; MedGAN §3.2.2): cGAN + 150·L2 + 150·content, the
    content term (eq. 11) on VGG relu2_2 (block2_conv2) only. Weights: ID-CGAN's λ_a = 6.6e-3,
    λ_p = 1 rescaled to a cGAN weight of 1, as in the authors' code (lambda = lambda1 = 150).
    Single U-block."""
    losses = _replace(_only(l2=ID_CGAN_L2, content=ID_CGAN_CONTENT), content_layers=ID_CGAN_CONTENT_LAYERS)
    return _recipe("id_cgan", 1, losses, id_cgan)


@MODELS.register("fila_sgan")
def fila_sgan() -> ModelRecipe:
    """Fila-sGAN (Zhao et al. 2017, "Synthesizing filamentary structured images with GANs",
    arXiv 1706.02185; MedGAN §3.2.2): cGAN + 100·L1 + 1e-4·style + 1e-4·content + 1·total
    variation, the style reference being the *source* image (MedGAN's re-implementation for
    translation). Weights: L1 = pix2pix's 100 (Fila-sGAN's pixel term comes from pix2pix); style and
    content use MedGAN's λ2 = λ3 = 1e-4 on the same VGG-19 layers and eq. 10–11 (Fila-sGAN's own
    weights apply to other normalizations); TV = 1 on our per-pixel-mean TV (see
    FILA_SGAN_TOTAL_VARIATION). Single U-block."""
    losses = _replace(
        _only(l1=PIX2PIX_L1, style=MEDGAN_STYLE, content=MEDGAN_CONTENT, total_variation=FILA_SGAN_TOTAL_VARIATION),
        style_reference="source",
    )
    return _recipe("fila_sgan", 1, losses, fila_sgan)
