"""Registered model variants (SPEC.md §2, paper §3.2).

Each recipe states its generator depth, its loss terms and their weights, and cites the paper it
comes from. All but `medgan` use a single U-block, the paper's protocol for fair comparison.
"""

from __future__ import annotations

from medgan_tf.config import LossConfig
from medgan_tf.registry import MODELS, ModelRecipe


@MODELS.register("medgan")
def medgan() -> ModelRecipe:
    """MedGAN (Armanious et al. 2018, eq. 12): CasNet-6, cGAN + 20·perceptual + 1e-4·style +
    1e-4·content."""
    return ModelRecipe("medgan", num_ublocks=6, losses=LossConfig(), description=medgan.__doc__ or "")


@MODELS.register("medgan_1g")
def medgan_1g() -> ModelRecipe:
    """MedGAN-1G (paper §3.2.1): MedGAN's losses and weights with a single U-block generator."""
    return ModelRecipe("medgan_1g", num_ublocks=1, losses=LossConfig(), description=medgan_1g.__doc__ or "")
