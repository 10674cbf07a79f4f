"""Where training runs: device placement, tf.distribute strategy, XLA and mixed precision.

`auto` settings follow measurements on a 2-core CPU machine: forcing XLA was 1.5–3×
slower and mixed_float16 ~7× slower (CPUs emulate float16), so XLA is on for a GPU and off for a
CPU. Precision `auto` follows the hardware's native formats: bfloat16 where the device computes it
natively (a CPU with `avx512_bf16`/`amx_bf16`: one 256² U-block at batch 8 took 0.54× the float32
time, largest output difference 0.012 on [-1, 1]; a GPU of compute capability ≥ 8.0), float16
with loss scaling on older GPUs, float32 elsewhere. Forced settings are honoured everywhere (the
tests force them on CPU with tiny models).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import tensorflow as tf

from medgan_tf.errors import UserError

log = logging.getLogger(__name__)

PRECISION_POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
# /proc/cpuinfo flags of native bfloat16 dot products (AVX-512 BF16: Cooper Lake, Zen 4 and later;
# AMX: Sapphire Rapids and later). Without them TensorFlow emulates bfloat16, slower than float32.
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# NVIDIA Ampere (8.0) and later have bfloat16 tensor cores; older GPUs only float16 ones.
GPU_BFLOAT16_COMPUTE_CAPABILITY = (8, 0)
CPUINFO = "/proc/cpuinfo"


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


def choose_xla(setting: str) -> tuple[bool, str]:
    """(whether to compile with XLA, why) for `--xla` auto | on | off; auto: on exactly when a
    GPU is visible (on a CPU, XLA measured 1.5–3× slower)."""
    if setting not in ("auto", "on", "off"):
        raise UserError(f"--xla must be auto, on or off, got {setting!r}")
    if setting != "auto":
        return setting == "on", f"--xla {setting}"
    if has_gpu():
        return True, "auto: a GPU is visible"
    return False, "auto: no GPU (on a CPU XLA measured 1.5-3x slower)"


def resolve_xla(setting: str) -> bool:
    return choose_xla(setting)[0]


def cpu_bfloat16_flags(cpuinfo: str | os.PathLike = CPUINFO) -> list[str]:
    """The native-bfloat16 flags (`CPU_BFLOAT16_FLAGS`) the CPU lists in `cpuinfo`; [] when the
    file is missing or unreadable (not Linux), which `auto` treats as "no native bfloat16"."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags.update(line.split(":", 1)[1].split())
    return [flag for flag in CPU_BFLOAT16_FLAGS if flag in flags]


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) compute capability of each visible GPU; (0, 0) when the driver does not say."""
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def bfloat16_support(cpuinfo: str | os.PathLike = CPUINFO) -> tuple[bool, str]:
    """(whether this process computes bfloat16 natively, why) — the device the models run on:
    the GPUs when there are any (all need compute capability ≥ 8.0), else the CPU's flags."""
    capabilities = gpu_compute_capabilities()
    if capabilities:
        lowest = min(capabilities)
        needed = ".".join(map(str, GPU_BFLOAT16_COMPUTE_CAPABILITY))
        if lowest >= GPU_BFLOAT16_COMPUTE_CAPABILITY:
            return True, f"GPU compute capability {lowest[0]}.{lowest[1]} ≥ {needed}"
        return False, f"GPU compute capability {lowest[0]}.{lowest[1]} < {needed}"
    flags = cpu_bfloat16_flags(cpuinfo)
    if flags:
        return True, f"CPU has {'/'.join(flags)}"
    return False, f"CPU has neither {' nor '.join(CPU_BFLOAT16_FLAGS)}"


def choose_precision(setting: str) -> tuple[str, str]:
    """(Keras dtype policy, why) for `--mixed-precision` `setting` (auto | off | float16 | bfloat16).

    auto: bfloat16 where native (same exponent range as float32: no loss scaling); float16 with
    loss scaling on a GPU without bfloat16; float32 on a CPU without it (emulation is slower).
    """
    if setting != "auto":
        if setting not in PRECISION_POLICIES:
            raise UserError(
                f"--mixed-precision must be auto, off, float16 or bfloat16; received {setting!r}. "
                "Leave it at auto to follow the hardware."
            )
        return PRECISION_POLICIES[setting], f"--mixed-precision {setting}"
    supported, reason = bfloat16_support()
    if supported:
        return "mixed_bfloat16", f"auto: {reason}"
    if has_gpu():
        return "mixed_float16", f"auto: {reason}, float16 with loss scaling"
    return "float32", f"auto: {reason}"


def resolve_precision(setting: str) -> str:
    """The Keras dtype policy of `choose_precision(setting)`."""
    return choose_precision(setting)[0]


def choose_inference_precision(setting: str) -> tuple[str, str]:
    """(compute dtype "float32" | "bfloat16", why) of an exported graph for `--precision`
    auto | float32 | bfloat16; auto follows `bfloat16_support()` of *this* machine."""
    if setting in ("float32", "bfloat16"):
        return setting, f"--precision {setting}"
    if setting != "auto":
        raise UserError(
            f"--precision must be auto, float32 or bfloat16; received {setting!r}. "
            "float32 is exact everywhere; bfloat16 is faster where the processor has it."
        )
    supported, reason = bfloat16_support()
    return ("bfloat16" if supported else "float32"), f"auto: {reason}"


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
    policy, reason = choose_precision(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    is_chief, index = worker_role()
    log.info(
        "runtime: %s with %d replica(s), XLA %s, precision %s (%s)%s",
        type(dist).__name__,
        dist.num_replicas_in_sync,
        "on" if jit else "off",
        policy,
        reason,
        "" if is_chief else f" (worker {index})",
    )
    return Runtime(dist, jit, policy, is_chief, index)


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to `name` inside the block, the previous one restored after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
