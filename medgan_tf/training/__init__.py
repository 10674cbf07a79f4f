"""Adversarial training: the `MedGAN` keras.Model whose `train_step` is Algorithm 1, the
library entry point `train_experiment`, checkpoints and the training loop.

Names are imported lazily, so importing a sibling module (e.g. `medgan_tf.training.runtime`)
does not pull in TensorFlow.
"""

from __future__ import annotations

__all__ = ["MedGAN", "build_model", "train_experiment"]

_HOMES = {"MedGAN": "medgan_model", "build_model": "experiment", "train_experiment": "experiment"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"medgan_tf.training.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'medgan_tf.training' has no attribute {name!r}")
