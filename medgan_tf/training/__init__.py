"""Adversarial training: the `MedGAN` keras.Model whose `train_step` is Algorithm 1."""

from medgan_tf.training.medgan_model import LOSS_TERMS, MedGAN, build_model

__all__ = ["LOSS_TERMS", "MedGAN", "build_model"]
