"""`medgan-tf doctor`: what this machine gives medgan-tf — devices, what `auto` chooses, package
versions, cache folders. Read-only: nothing is downloaded, written or compiled.

The choices come from the functions training and export use (`medgan_tf.training.runtime`), so
the report cannot disagree with what `train --xla auto --mixed-precision auto` and
`export --precision auto` then do.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose versions the report lists (PyPI names), the runtime's core first.
PACKAGES = ("tensorflow", "keras", "numpy", "protobuf", "apache-beam", "pydicom", "nibabel", "SimpleITK",
            "tensorflow-serving-api")
# Installed by `tensorflow[and-cuda]` (`make venv GPU=1`): TensorFlow finds CUDA and cuDNN in them.
CUDA_PACKAGES = ("nvidia-cudnn-cu12", "nvidia-cublas-cu12")


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """{distribution: installed version, or None when it is not installed}."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def devices() -> list[dict[str, Any]]:
    """The physical devices TensorFlow sees: name, type and, for GPUs, what the driver reports
    (device name, compute capability)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices():
        entry: dict[str, Any] = {"name": device.name, "type": device.device_type}
        if device.device_type == "GPU":
            details = tf.config.experimental.get_device_details(device)
            entry["description"] = details.get("device_name", "")
            entry["compute_capability"] = ".".join(map(str, details.get("compute_capability", ())))
        found.append(entry)
    return found


def auto_choices() -> dict[str, dict[str, str]]:
    """What `auto` resolves to here, and why: training's --xla and --mixed-precision, export's
    --precision."""
    from medgan_tf.training import runtime

    xla, xla_reason = runtime.choose_xla("auto")
    policy, policy_reason = runtime.choose_precision("auto")
    compute, compute_reason = runtime.choose_inference_precision("auto")
    return {
        "train --xla auto": {"choice": "on" if xla else "off", "why": xla_reason},
        "train --mixed-precision auto": {"choice": policy, "why": policy_reason},
        "export --precision auto": {"choice": compute, "why": compute_reason},
    }


def build_info() -> dict[str, Any]:
    """Whether this TensorFlow was built with CUDA, and the CUDA/cuDNN versions it was built for."""
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    return {"built_with_cuda": bool(tf.test.is_built_with_cuda()),
            "cuda_version": info.get("cuda_version"), "cudnn_version": info.get("cudnn_version"),
            "cuda_libraries": package_versions(CUDA_PACKAGES)}


def caches() -> dict[str, Any]:
    """The cache folders medgan-tf uses and whether the VGG-19 ImageNet weights are in Keras'."""
    from medgan_tf.models.feature_extractor import imagenet_weights_file, keras_cache_dir
    from medgan_tf.workflows.builtin import cache_root

    weights = Path(imagenet_weights_file())
    return {
        "keras_cache": keras_cache_dir(),
        "vgg19_imagenet_weights": str(weights),
        "vgg19_imagenet_cached": weights.is_file(),
        "builtin_datasets": str(cache_root()),
    }


def report() -> dict[str, Any]:
    """Everything `medgan-tf doctor` prints, as one JSON-ready dict."""
    return {"devices": devices(), "auto": auto_choices(), "tensorflow_build": build_info(),
            "packages": package_versions(), "caches": caches()}


def report_lines(result: dict[str, Any]) -> list[str]:
    """`report()` as the lines `medgan-tf doctor` prints."""
    lines = ["devices TensorFlow sees:"]
    for device in result["devices"]:
        extra = f" — {device['description']}, compute capability {device['compute_capability']}" \
            if device["type"] == "GPU" else ""
        lines.append(f"  {device['name']} ({device['type']}){extra}")
    build = result["tensorflow_build"]
    if not any(device["type"] == "GPU" for device in result["devices"]):
        cuda = (f"built with CUDA {build['cuda_version']}, cuDNN {build['cudnn_version']}"
                if build["built_with_cuda"] else "a build without CUDA")
        libraries = "installed" if all(build["cuda_libraries"].values()) else "not installed (make venv GPU=1)"
        lines.append(f"  no GPU visible; TensorFlow is {cuda}; CUDA libraries from pip: {libraries}")
    lines.append("what auto chooses here:")
    for setting, choice in result["auto"].items():
        lines.append(f"  {setting:<30} {choice['choice']:<15} ({choice['why']})")
    lines.append("packages:")
    for name, version in result["packages"].items():
        lines.append(f"  {name:<24} {version or 'MISSING'}")
    cache = result["caches"]
    lines += ["caches:",
              f"  Keras cache                {cache['keras_cache']}",
              f"  VGG-19 ImageNet weights    {cache['vgg19_imagenet_weights']} "
              f"({'cached' if cache['vgg19_imagenet_cached'] else 'not cached: downloaded by the first training that uses them, or --vgg-weights PATH'})",
              f"  built-in datasets          {cache['builtin_datasets']}"]
    return lines
