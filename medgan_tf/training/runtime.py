"""Where training runs: device placement, tf.distribute strategy, XLA and mixed precision.

`auto` settings follow measurements on a 2-core CPU machine: forcing XLA was 1.5–3×
slower and mixed_float16 ~7× slower, so both are on for a GPU and off for a CPU. Forced settings
are honoured everywhere (the tests force them on CPU with tiny models).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import tensorflow as tf

from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

PRECISION_POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one training process."""

    strategy: tf.distribute.Strategy
    jit_compile: bool
    precision_policy: str  # "float32" | "mixed_float16" | "mixed_bfloat16"
    is_chief: bool
    worker_index: int

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_xla(setting: str) -> bool:
    if setting not in ("auto", "on", "off"):
        raise UserError(f"--xla must be auto, on or off, got {setting!r}")
    return has_gpu() if setting == "auto" else setting == "on"


def resolve_precision(setting: str) -> str:
    if setting == "auto":
        return "mixed_float16" if has_gpu() else "float32"
    if setting not in PRECISION_POLICIES:
        raise UserError(f"--mixed-precision must be auto, off, float16 or bfloat16, got {setting!r}")
    return PRECISION_POLICIES[setting]


def split_cpu(num_logical_devices: int) -> None:
    """Expose the CPU as several logical devices (to exercise MirroredStrategy without GPUs).

    Must run before TensorFlow initialises its devices, i.e. before any op executes.
    """
    if num_logical_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_logical_devices
        )
    except RuntimeError as error:  # devices already initialised in this process
        raise UserError(f"cannot split the CPU into {num_logical_devices} devices: {error}") from error


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`auto` | `default` | `mirrored` | `multiworker` → a tf.distribute strategy (several GPUs, or several hosts from TF_CONFIG).

    Only physical devices are listed before the strategy exists: listing logical devices would
    initialise the TF context, after which MultiWorkerMirroredStrategy can no longer be set up.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        logical = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in logical])
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError(
                "--strategy multiworker needs the TF_CONFIG environment variable describing the "
                'cluster, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.NCCL
            if gpus
            else tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise UserError(f"--strategy must be auto, default, mirrored or multiworker, got {name!r}")


def worker_role() -> tuple[bool, int]:
    """(is_chief, worker index) from TF_CONFIG; a single process is the chief."""
    spec = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = spec.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    has_chief = "chief" in spec.get("cluster", {})
    is_chief = kind == "chief" or (not has_chief and kind == "worker" and index == 0)
    return is_chief, index


def setup(strategy: str, xla: str, mixed_precision: str, logical_cpus: int = 1) -> Runtime:
    """Resolve and apply every runtime setting; call before any model is built."""
    import keras

    split_cpu(logical_cpus)
    dist = make_strategy(strategy)
    jit = resolve_xla(xla)
    policy = resolve_precision(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    is_chief, index = worker_role()
    log.info(
        "runtime: %s with %d replica(s), XLA %s, precision %s%s",
        type(dist).__name__,
        dist.num_replicas_in_sync,
        "on" if jit else "off",
        policy,
        "" if is_chief else f" (worker {index})",
    )
    return Runtime(dist, jit, policy, is_chief, index)
