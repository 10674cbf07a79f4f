"""Timing, FLOP counting and the model measurements (GEMM, SavedModel inference, translate, one
MedGAN iteration, input pipeline) for `medgan-tf bench`, TensorFlow-free at import (cheap to test).

Every figure is the median of `repeats` timed calls after `warmup` untimed ones (tracing, graph
optimization, allocator growth and file caches happen in the warm-up).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


@dataclasses.dataclass
class Timing:
    """Wall times (seconds) of the timed repeats of one measurement; warm-up runs excluded."""

    seconds: list[float]
    warmup: int

    @property
    def median(self) -> float:
        return median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "repeats_s": [round(s, 6) for s in self.seconds], "warmup": self.warmup}


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (the mean of the middle two for an even count)."""
    if len(values) == 0:
        raise ValueError("median of no values; expected at least one timed repeat")
    return float(statistics.median(values))


def time_repeats(
    function: Callable[[], Any],
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Call `function` `warmup` times untimed, then `repeats` times timed, each call on its own.

    `function` must block until its work is done (return numpy, not a pending tensor).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0; received repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        start = clock()
        function()
        seconds.append(clock() - start)
    return Timing(seconds, warmup)


# --------------------------------------------------------------------------- FLOP counting


def _layer_flops(layer: Any) -> int:
    """Multiply-adds × 2 of one layer for one example (convolutions and dense layers; the
    normalizations and activations are O(activations), < 0.1 % of a U-block, and not counted)."""
    import keras

    if isinstance(layer, keras.layers.SpectralNormalization):
        layer = layer.layer
    if isinstance(layer, keras.layers.Conv2DTranspose):
        # Every input pixel scatters a kh×kw×C_out patch from C_in channels.
        _, height, width, channels_in = layer.input.shape
        kernel_h, kernel_w = layer.kernel_size
        return 2 * height * width * channels_in * kernel_h * kernel_w * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, channels_out = layer.output.shape
        channels_in = layer.input.shape[-1]
        kernel_h, kernel_w = layer.kernel_size
        return 2 * height * width * channels_out * kernel_h * kernel_w * (channels_in // layer.groups)
    if isinstance(layer, keras.layers.Dense):
        positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
        return 2 * positions * layer.input.shape[-1] * layer.units
    return 0


def model_flops(model: Any) -> int:
    """FLOP of one forward pass of one example through a built functional `keras.Model`,
    counted from its layers' shapes (nested models, e.g. CasNet's U-blocks, are entered).

    Conv2D: 2·H_out·W_out·C_out·k_h·k_w·C_in; Conv2DTranspose: 2·H_in·W_in·C_in·k_h·k_w·C_out;
    Dense: 2·C_in·C_out per position. CasNet-6 at 256² → ≈ 71.4 GFLOP.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += model_flops(layer)
        else:
            total += _layer_flops(layer)
    return int(total)


def gemm_gflops(size: int, repeats: int, warmup: int = 1, dtype: str = "float32") -> dict[str, Any]:
    """GEMM rate of this machine: tf.linalg.matmul of two size×size `dtype` matrices
    ("float32" | "bfloat16"; bfloat16 products accumulate in float32 inside oneDNN)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.cast(tf.constant(rng.standard_normal((size, size), dtype=np.float32)), dtype)
    b = tf.cast(tf.constant(rng.standard_normal((size, size), dtype=np.float32)), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b)[:1, :1], tf.float32)))  # tiny fetch, full GEMM
    timing = time_repeats(lambda: matmul().numpy(), repeats, warmup)
    return {"size": size, "dtype": dtype, "gflops": 2.0 * size**3 / timing.median / 1e9, **timing.as_dict()}


# --------------------------------------------------------------------------- model measurements




def inference_figures(exported: Any, flops_per_slice: int, batch_size: int, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """slices/s and achieved GFLOP/s of `exported` (an ExportedModel) on a batch of random slices."""
    size = exported.image_size
    batch = np.random.default_rng(1).uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32)
    timing = time_repeats(lambda: exported(batch), repeats, warmup)
    per_slice = timing.median / batch_size
    return {
        "batch_size": batch_size,
        "slices_per_s": 1.0 / per_slice,
        "seconds_per_slice": per_slice,
        "gflops": flops_per_slice / per_slice / 1e9,
        **timing.as_dict(),
    }


def write_test_volume(path: Path, image_size: int, slices: int, spacing_mm: float = 1.0) -> Path:
    """A PET-like NIfTI volume (Bq/ml) whose model grid (task spacing `spacing_mm`) has exactly
    `slices` axial slices of image_size²."""
    from medgan_tf.data.io import Volume, write_nifti

    rng = np.random.default_rng(2)
    array = rng.gamma(2.0, 1000.0, (image_size, image_size, slices)).astype(np.float32)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = -spacing_mm * (np.array(array.shape) - 1) / 2.0
    return write_nifti(Volume(array, affine, "PT", "Bq/ml", {"format": "bench"}), path)


def translate_figures(exported: Any, work_dir: Path, slices: int, batch_size: int, repeats: int, warmup: int,
                      tta: str = "none") -> dict[str, Any]:
    """Seconds of `translate_file` of a `slices`-slice NIfTI volume (read → write) with TTA `tta`."""
    from medgan_tf.serving.translation import translate_file

    spacing = float(exported.config.data.spacing_mm[0])
    volume_path = write_test_volume(work_dir / "bench-volume.nii.gz", exported.image_size, slices, spacing)
    output_path = work_dir / "bench-translated.nii.gz"
    grid_slices = {}

    def translate() -> None:
        translation = translate_file(exported, volume_path, output_path, batch_size=batch_size, quiet=True, tta=tta)
        grid_slices["value"] = translation.grid_shape[2]

    timing = time_repeats(translate, repeats, warmup)
    return {"slices": grid_slices["value"], "batch_size": batch_size, "tta": tta, "seconds": timing.median,
            **timing.as_dict()}


def train_iteration_figures(experiment: Any, batch_size: int, repeats: int, warmup: int = 1, policy: str = "float32") -> dict[str, Any]:
    """Seconds of one MedGAN iteration (N_G generator updates + 1 discriminator update, every
    loss of the recipe, VGG with random weights) through the training driver's step function,
    with the networks built under the Keras dtype `policy` ("float32" | "mixed_bfloat16" | …;
    the global policy is restored afterwards)."""
    import tensorflow as tf

    from medgan_tf.training.build import build_model
    from medgan_tf.training.driver import make_train_step
    from medgan_tf.training.runtime import dtype_policy

    size = experiment.data.image_size
    with dtype_policy(policy):
        model = build_model(experiment, vgg_weights="none", jit_compile=False)
    rng = np.random.default_rng(3)
    pair = tuple(tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 1)).astype(np.float32)) for _ in range(2))
    iterator = iter(tf.data.Dataset.from_tensors(pair).repeat())
    step = make_train_step(model, tf.distribute.get_strategy(), jit_compile=False)
    timing = time_repeats(lambda: {k: v.numpy() for k, v in step(iterator).items()}, repeats, warmup)
    del model
    return {
        "image_size": size,
        "num_ublocks": experiment.generator.num_ublocks,
        "base_filters": experiment.generator.base_filters,
        "batch_size": batch_size,
        "generator_steps": experiment.train.generator_steps,
        "policy": policy,
        "seconds": timing.median,
        "slices_per_s": batch_size / timing.median,
        **timing.as_dict(),
    }


def input_pipeline_figures(data_dir: Path, batch_size: int, batches: int, repeats: int) -> dict[str, Any]:
    """slices/s of `make_dataset` (shuffle, repeat, augmentation, batch, prefetch) over the
    training split of a converted dataset, `batches` batches per timed repeat, after one warm-up
    pass (fills the shuffle buffer and the prefetch)."""
    from medgan_tf.data import dataset

    manifest = dataset.read_manifest(data_dir)
    batches_iterator = iter(
        dataset.make_dataset(data_dir, "train", batch_size, augment=True, shuffle=True, repeat=True, seed=0)
    )

    def consume() -> None:
        for _ in range(batches):
            source, _target = next(batches_iterator)
        source.numpy()

    timing = time_repeats(consume, repeats, warmup=1)
    return {
        "task": manifest["task"],
        "image_size": manifest["image_size"],
        "batch_size": batch_size,
        "slices_per_s": batches * batch_size / timing.median,
        **timing.as_dict(),
    }
