"""Adversarial training: the `MedGAN` keras.Model whose `train_step` is Algorithm 1.

`MedGAN`, `build_model` and `LOSS_TERMS` are imported lazily, so importing a sibling module
(e.g. `medgan_tf.training.runtime`) does not pull in TensorFlow.
"""

from __future__ import annotations

__all__ = ["LOSS_TERMS", "MedGAN", "build_model"]


def __getattr__(name: str):
    if name in __all__:
        from medgan_tf.training import medgan_model

        return getattr(medgan_model, name)
    raise AttributeError(f"module 'medgan_tf.training' has no attribute {name!r}")
