"""Adversarial training: the `MedGAN` keras.Model whose `train_step` is Algorithm 1, the
library entry point `train_experiment`, checkpoints and the training loop.

Names are imported lazily, so importing a sibling module (e.g. `medgan_tf.training.runtime`)
does not pull in TensorFlow.
"""

from __future__ import annotations

__all__ = ["MedGAN", "build_model", "train_experiment"]


def __getattr__(name: str):
    if name == "MedGAN":
        from medgan_tf.training.medgan_model import MedGAN

        return MedGAN
    if name == "build_model":
        from medgan_tf.training.build import build_model

        return build_model
    if name == "train_experiment":
        from medgan_tf.training.experiment import train_experiment

        return train_experiment
    raise AttributeError(f"module 'medgan_tf.training' has no attribute {name!r}")
