"""medgan-tf: MedGAN (Armanious et al., arXiv 1806.06397) in TensorFlow / Keras 3."""

__version__ = "0.1.0"
