"""What a translated volume says about where it came from: the model's name, task and version (a
DICOM series output carries them as SeriesDescription and DerivationDescription, through
`data.io.Provenance`). Which format an output is written in, and how, is the format table's
business (`medgan_tf.data.io.formats`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_description(model: Any) -> tuple[str, str]:
    """(SeriesDescription, DerivationDescription) naming the model, its task and its version."""
    import medgan_tf

    config = model.config
    path = Path(getattr(model, "path", "model"))
    version = f"export version {path.name}" if path.name.isdigit() else f"run {path.name}"
    short = f"medgan-tf {config.model} {config.task} v{path.name}" if path.name.isdigit() else f"medgan-tf {config.model} {config.task}"
    long = (f"Synthetic {config.data.target_modality} translated from {config.data.source_modality} by medgan-tf "
            f"{medgan_tf.__version__}, model {config.model} (task {config.task}, {version}); not acquired")
    return short[:64], long
