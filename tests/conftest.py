"""Shared test setup: quiet TensorFlow, CPU only, deterministic seeds, and no writes to the
user's home (the built-in dataset cache and the pseudonym salt go to a session temp folder)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """One built-in dataset cache per test process (made once, through the real converter)."""
    root = tmp_path_factory.mktemp("home")
    saved = {name: os.environ.get(name) for name in ("MEDGAN_TF_CACHE", "XDG_CONFIG_HOME")}
    os.environ["MEDGAN_TF_CACHE"] = str(root / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends under the float32 dtype policy: a command that trains in
    mixed precision (e.g. `auto` → bfloat16 on CPUs with native bf16) must not leak into the next
    test of the same worker."""
    yield
    import sys

    if "keras" in sys.modules:
        import keras

        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    yield
