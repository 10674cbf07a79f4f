"""`medgan-tf doctor`: exits 0 on a clean machine (no caches, no GPU), reports what `auto` chooses
through the same functions training and export use, package versions and the VGG-19 cache; and
`make venv GPU=1` installs the CUDA build of the pinned TensorFlow."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from medgan_tf.cli import main
from medgan_tf.workflows import doctor

ROOT = Path(__file__).resolve().parent.parent


def test_clean_clone_real_command_exits_0(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("KERAS_HOME", "XDG_CACHE_HOME",
                                                                         "MEDGAN_TF_CACHE")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-m", "medgan_tf", "doctor"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/physical_device:CPU:0 (CPU)" in out and "no GPU visible" in out
    assert re.search(r"train --xla auto\s+off\s+\(auto: no GPU", out)
    assert f"Keras cache                {home / '.keras'}" in out
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 (not cached" in out
    assert str(home / ".cache" / "medgan-tf") in out
    assert not list((home / ".keras").glob("models/*"))  # nothing downloaded


def test_json_follows_the_runtime_and_the_installed_packages(capsys, tmp_path, monkeypatch):
    import tensorflow as tf

    from medgan_tf.training import runtime

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    weights = tmp_path / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    weights.parent.mkdir()
    weights.write_bytes(b"h5")
    assert main(["doctor", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["auto"]["train --mixed-precision auto"] == dict(zip(("choice", "why"), runtime.choose_precision("auto")))
    assert result["auto"]["export --precision auto"] == dict(zip(("choice", "why"),
                                                                  runtime.choose_inference_precision("auto")))
    assert result["auto"]["train --xla auto"]["choice"] == ("on" if runtime.resolve_xla("auto") else "off")
    assert result["packages"]["tensorflow"] == tf.__version__
    assert set(doctor.PACKAGES) == set(result["packages"])
    assert result["caches"] == {**result["caches"], "keras_cache": str(tmp_path), "vgg19_imagenet_weights": str(weights),
                                "vgg19_imagenet_cached": True}
    assert [d["type"] for d in result["devices"]] == [d.device_type for d in tf.config.list_physical_devices()]


def test_missing_package_and_gpu_lines():
    assert doctor.package_versions(("numpy", "no-such-distribution-medgan")) == {
        "numpy": __import__("numpy").__version__, "no-such-distribution-medgan": None}
    report = {
        "devices": [{"name": "/physical_device:CPU:0", "type": "CPU"},
                    {"name": "/physical_device:GPU:0", "type": "GPU", "description": "NVIDIA A100",
                     "compute_capability": "8.0"}],
        "auto": {"train --xla auto": {"choice": "on", "why": "auto: a GPU is visible"}},
        "tensorflow_build": {"built_with_cuda": True, "cuda_version": "12", "cudnn_version": "9",
                             "cuda_libraries": {"nvidia-cudnn-cu12": "9"}},
        "packages": {"pydicom": None},
        "caches": {"keras_cache": "/k", "vgg19_imagenet_weights": "/k/models/w.h5", "vgg19_imagenet_cached": True,
                   "builtin_datasets": "/c"},
    }
    text = "\n".join(doctor.report_lines(report))
    assert "/physical_device:GPU:0 (GPU) — NVIDIA A100, compute capability 8.0" in text
    assert "no GPU visible" not in text
    assert re.search(r"pydicom\s+MISSING", text) and "(cached)" in text


def test_gpu_venv_installs_the_cuda_build_of_the_same_tensorflow(tmp_path):
    pinned = re.search(r"^tensorflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(rf"^tensorflow\[and-cuda\]=={re.escape(pinned)}$", (ROOT / "requirements-gpu.txt").read_text(), re.M)
    commands = {}
    for gpu in ("", "1"):
        result = subprocess.run(["make", "-n", "venv", f"GPU={gpu}", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        commands[gpu] = [line for line in result.stdout.splitlines() if "install -r requirements.txt" in line]
    assert len(commands[""]) == len(commands["1"]) == 1
    assert "requirements-gpu.txt" in commands["1"][0] and "requirements-gpu.txt" not in commands[""][0]


def test_xla_choice_and_the_vgg_cache_the_reports_share(tmp_path, monkeypatch):
    from medgan_tf.training import runtime
    from medgan_tf.workflows.comparison import vgg_weights_note

    assert runtime.choose_xla("on") == (True, "--xla on") and runtime.choose_xla("off") == (False, "--xla off")
    monkeypatch.setattr(runtime, "has_gpu", lambda: True)
    assert runtime.choose_xla("auto") == (True, "auto: a GPU is visible") and runtime.resolve_xla("auto")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert "RANDOM" in vgg_weights_note("auto")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"h5")
    assert vgg_weights_note("auto") == "VGG-19 weights: ImageNet (Keras cache)."
