"""Named presets: the registered model recipes (paper §3), and a task trained as one of them.

`task_preset(task, model)` is the one way to get a ready `ExperimentConfig`: the data settings of
the task (`medgan_tf.tasks`; the paper's in §3.1) trained as the registered recipe `model` (paper §3.2).

A recipe states everything that makes a variant itself: its display name, the table of the paper
it appears in, its CasNet depth, its loss terms and weights, and the builders of its generator and
discriminator. Adding a baseline is one `MODELS.add(ModelRecipe(...))` — with its own networks if
it needs them (a builder is any function `ExperimentConfig → keras.Model` with the interface of
`medgan_tf.models.build_casnet` / `build_discriminator`).

All recipes but `medgan` use a single U-block, the paper's protocol for a fair comparison
(§3.2.1, §3.2.2): the same 16×16 spectral-normalized PatchGAN and the same Algorithm 1 schedule
(N_G = 3, Adam 2e-4 / β1 0.5, batch 1) — only the loss terms differ.

Weights: MedGAN states λ1 = 20, λ2 = λ3 = 1e-4 and nothing for the baselines. A baseline uses the
weight of the paper it comes from where that paper (or its authors' code) states one for a loss
of the same form; otherwise MedGAN's λ for the matching term. Every recipe's description says
which. The cGAN weight is 1 everywhere, so other weights are relative to the adversarial term.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from medgan_tf import tasks
from medgan_tf.config import LOSS_TERMS, ExperimentConfig, LossConfig, validate
from medgan_tf.registry import Registry

# --------------------------------------------------------------------------- network builders

NetworkBuilder = Callable[[ExperimentConfig], Any]  # ExperimentConfig → keras.Model


def casnet_generator(config: ExperimentConfig) -> Any:
    """The paper's CasNet of `config.generator.num_ublocks` U-blocks (§2.4)."""
    from medgan_tf.models import build_casnet

    return build_casnet(config.generator, config.data.image_size, input_channels=config.data.input_channels,
                        centre_channel=config.data.centre_channel)


def patchgan_discriminator(config: ExperimentConfig) -> Any:
    """The paper's conditional 16×16 spectral-normalized PatchGAN (§2.4.3)."""
    from medgan_tf.models import build_discriminator

    return build_discriminator(config.discriminator, config.data.image_size, channels=config.generator.channels,
                               source_channels=config.data.input_channels, source_centre=config.data.centre_channel)


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class ModelRecipe:
    """One registered model variant.

    name:          registry key (`--model NAME`).
    display_name:  how the paper's tables write it.
    paper_tables:  the tables of the paper it appears in ("I": loss ablations, "II": the state
                   of the art), in the order of `TABLE_ORDER`.
    num_ublocks:   CasNet depth.
    losses:        loss terms, weights, layers, references.
    description:   the citation and the reason for each weight.
    generator / discriminator: network builders, `ExperimentConfig → keras.Model`.
    """

    name: str
    display_name: str
    num_ublocks: int
    losses: LossConfig
    paper_tables: tuple[str, ...] = ()
    description: str = ""
    generator: NetworkBuilder = casnet_generator
    discriminator: NetworkBuilder = patchgan_discriminator

    def apply(self, config: ExperimentConfig) -> ExperimentConfig:
        """`config` trained as this variant (model name, generator depth and losses replaced)."""
        return dataclasses.replace(
            config,
            model=self.name,
            generator=dataclasses.replace(config.generator, num_ublocks=self.num_ublocks),
            losses=self.losses,
        )


MODELS: Registry[ModelRecipe] = Registry("model")


def task_preset(task: "str | tasks.Task", model: str = "medgan") -> ExperimentConfig:
    """The configuration of `task` (a registered name, a TOML file or a `tasks.Task`) trained as
    registered variant `model`."""
    resolved = tasks.get(task)
    config = ExperimentConfig(task=resolved.name, model=model, data=resolved.data)
    return validate(MODELS.get(model).apply(config))


def recipe_of(config: ExperimentConfig) -> ModelRecipe:
    """The registered recipe a config was made from (its networks' builders)."""
    return MODELS.get(config.model)


def tables(names: list[str] | tuple[str, ...] = ()) -> dict[str, list[str]]:
    """{paper table: [recipe names in registration order]}, restricted to `names` when given."""
    out: dict[str, list[str]] = {}
    for name, recipe in MODELS.items():
        if names and name not in names:
            continue
        for table in recipe.paper_tables:
            out.setdefault(table, []).append(name)
    return out


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
# another scale); ours is a per-pixel mean on [-1, 1] (about 0.05–0.2 on PET slices), so weight 1
# keeps it a mild smoothness prior well below L1·100.
FILA_SGAN_TOTAL_VARIATION = 1.0
# PAN's positive margin m of the discriminator's hinge [m − Σ_j λ_j P_j]⁺ (Wang et al. 2018, §III-B).
PAN_MARGIN = 1.0


def only(**weights: float) -> LossConfig:
    """A LossConfig with every generator term off except `weights` (cGAN is always 1)."""
    unknown = sorted(set(weights) - set(LOSS_TERMS))
    if unknown:
        raise ValueError(f"unknown loss terms {unknown}; expected some of {', '.join(LOSS_TERMS)}")
    off = {name: 0.0 for name in LOSS_TERMS}
    return LossConfig(**{**off, "cgan": 1.0, **weights})


def _add(name: str, display_name: str, num_ublocks: int, losses: LossConfig, tables_: tuple[str, ...], description: str) -> None:
    MODELS.add(name, ModelRecipe(name, display_name, num_ublocks, losses, tables_, " ".join(description.split())))


# Registration order is the paper's: Table I's loss ablations, then Table II, MedGAN last.
_add("cgan", "cGAN", 1, only(), ("I",), """Ablation "cGAN" (MedGAN, Armanious et al. 2018, §3.2.1,
    Table I): the conditional adversarial loss alone (Algorithm 1 line 4), single U-block.""")
_add("perceptual", "Perceptual", 1, only(perceptual=MEDGAN_PERCEPTUAL), ("I",), """Ablation "Perceptual"
    (MedGAN, Armanious et al. 2018, §3.2.1, Table I): cGAN + 20·perceptual (eq. 7 with the i = 0
    pixel term; MedGAN's λ1), single U-block.""")
_add("style_content", "Style-content", 1, only(style=MEDGAN_STYLE, content=MEDGAN_CONTENT), ("I",),
     """Ablation "Style-content" (MedGAN, Armanious et al. 2018, §3.2.1, Table I): cGAN + 1e-4·style +
    1e-4·content (eq. 10–11 on VGG-19; MedGAN's λ2, λ3), single U-block.""")
_add("medgan_1g", "MedGAN-1G", 1, LossConfig(), ("I",), """MedGAN-1G (MedGAN, Armanious et al. 2018,
    §3.2.1, Table I): MedGAN's losses and weights (cGAN + 20·perceptual + 1e-4·style + 1e-4·content)
    with a single U-block generator.""")
_add("pix2pix", "pix2pix", 1, only(l1=PIX2PIX_L1), ("II",), """pix2pix (Isola et al. 2017,
    "Image-to-image translation with conditional adversarial networks", CVPR; MedGAN §3.2.2):
    cGAN + 100·L1 (λ = 100 of Isola et al. §4), single U-block.""")
_add("pan", "PAN", 1,
     dataclasses.replace(only(feature_matching=MEDGAN_PERCEPTUAL), discriminator_loss="pan_margin", pan_margin=PAN_MARGIN),
     ("II",), """PAN (Wang et al. 2018, "Perceptual adversarial networks for image-to-image
    transformation", IEEE TIP 27(8), arXiv 1706.09138; MedGAN §3.2.2): cGAN + 20·feature matching
    on the discriminator's hidden layers (no i = 0 pixel term), and PAN's positive-margin
    discriminator loss −log D(x,y) − log(1 − D(G(y),y)) + [m − Σ_j λ_j P_j]⁺ with margin m = 1, the
    hinge using the same per-layer weights λ_j as the generator's term. PAN's per-layer weights
    belong to its own 4-hidden-layer discriminator; under MedGAN's protocol D has 2 hidden layers,
    so they get MedGAN's equal λ_pi and the sum MedGAN's λ1 = 20. Single U-block.""")
_add("id_cgan", "ID-CGAN", 1,
     dataclasses.replace(only(l2=ID_CGAN_L2, content=ID_CGAN_CONTENT), content_layers=ID_CGAN_CONTENT_LAYERS),
     ("II",), """ID-CGAN (Zhang, Sindagi & Patel 2017, "Image de-raining using a conditional
    generative adversarial network", arXiv 1701.05957; MedGAN §3.2.2): cGAN + 150·L2 + 150·content,
    the content term (eq. 11) on VGG relu2_2 (block2_conv2) only. Weights: ID-CGAN's λ_a = 6.6e-3,
    λ_p = 1 rescaled to a cGAN weight of 1, as in the authors' code (lambda = lambda1 = 150). Single
    U-block.""")
_add("fila_sgan", "Fila-sGAN", 1,
     dataclasses.replace(
         only(l1=PIX2PIX_L1, style=MEDGAN_STYLE, content=MEDGAN_CONTENT, total_variation=FILA_SGAN_TOTAL_VARIATION),
         style_reference="source"),
     ("II",), """Fila-sGAN (Zhao et al. 2017, "Synthesizing filamentary structured images with GANs",
    arXiv 1706.02185; MedGAN §3.2.2): cGAN + 100·L1 + 1e-4·style + 1e-4·content + 1·total variation,
    the style reference being the *source* image (MedGAN's re-implementation for translation).
    Weights: L1 = pix2pix's 100 (Fila-sGAN's pixel term comes from pix2pix); style and content use
    MedGAN's λ2 = λ3 = 1e-4 on the same VGG-19 layers and eq. 10–11 (Fila-sGAN's own weights apply
    to other normalizations); TV = 1 on our per-pixel-mean TV. Single U-block.""")
_add("medgan", "MedGAN", 6, LossConfig(), ("I", "II"), """MedGAN (Armanious et al. 2018, arXiv
    1806.06397, eq. 12): CasNet of 6 U-blocks, cGAN + 20·perceptual + 1e-4·style + 1e-4·content
    (λ1, λ2, λ3 of §2.5).""")
