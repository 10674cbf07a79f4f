"""`medgan-tf train`: the run directory, exact resume, crash safety, strategies, precision.

Runs that change process-wide TensorFlow state (logical devices, op determinism, cluster
membership) run in subprocesses; the rest call `cli.main` in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import cli

TINY = ["--image-size", "64", "--ublocks", "1", "--base-filters", "8", "--vgg-weights", "none", "--quiet"]


@pytest.fixture(scope="module")
def data_dir():
    from medgan_tf.workflows.builtin import ensure_builtin_dataset

    return ensure_builtin_dataset("pet_denoise", 64)


def _subprocess(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "medgan_tf", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _run(args: list[str], env_extra: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = _subprocess(args, env_extra)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _event_tags(directory: Path) -> tuple[set[str], set[str]]:
    """(scalar tags, image tags) found in the TensorBoard event files under `directory`."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars, images = set(tags.get("scalars", [])), set(tags.get("images", []))
    for tag in tags.get("tensors", []):  # TF2 summaries are stored as tensors
        metadata = acc.SummaryMetadata(tag)
        (images if metadata.plugin_data.plugin_name == "images" else scalars).add(tag)
    return scalars, images


def _weights(run_dir: Path) -> list[np.ndarray]:
    from medgan_tf.training.checkpoints import load_generator

    generator, _ = load_generator(run_dir)
    return [w.copy() for w in generator.get_weights()]


def test_smoke_run_writes_a_complete_run_directory(tmp_path):
    run = tmp_path / "run"
    code = cli.main(["train", "--task", "pet_denoise", "--epochs", "1", "--steps-per-epoch", "2",
                     *TINY, "--logdir", str(run)])
    assert code == 0
    assert (run / "config.json").is_file()
    assert list((run / "checkpoints").glob("ckpt-2.index"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 2
    assert summary["generator_updates"] == 6
    assert summary["discriminator_updates"] == 2
    assert all(np.isfinite(v) for v in summary["last_losses"].values())

    scalars, images = _event_tags(run / "train")
    for term in ("cgan", "perceptual", "style", "content", "generator_total", "discriminator_loss"):
        assert f"losses/{term}" in scalars, scalars
    assert {"d_real", "d_fake", "learning_rate/generator", "slices_per_second"} <= scalars
    assert images, "no image summary written"
    val_scalars, _ = _event_tags(run / "validation")
    assert {"metrics/ssim", "metrics/psnr"} <= val_scalars


def test_resume_refuses_an_incompatible_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--task", "pet_denoise", "--epochs", "1", "--steps-per-epoch", "1",
                     *TINY, "--logdir", str(run)]) == 0
    code = cli.main(["train", "--resume", str(run), "--base-filters", "16", "--lambda-style", "0.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "generator.base_filters: run has 8, requested 16" in err
    assert "losses.style" in err


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(data_dir, tmp_path):
    common = ["train", "--task", "pet_denoise", "--data", str(data_dir), *TINY, "--deterministic",
              "--no-augment", "--steps-per-epoch", "2", "--seed", "3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    _run([*common, "--epochs", "2", "--logdir", str(straight)])
    _run([*common, "--epochs", "1", "--logdir", str(split)])
    _run(["train", "--resume", str(split), "--epochs", "2", "--quiet"])

    assert json.loads((split / "summary.json").read_text())["step"] == 4
    assert json.loads((split / "summary.json").read_text())["generator_updates"] == 12
    # Op determinism makes both paths bit-identical; 1e-6 leaves room for nothing but float noise.
    for a, b in zip(_weights(straight), _weights(split)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_sigkill_while_checkpointing_leaves_a_resumable_run(data_dir, tmp_path):
    from medgan_tf.training.checkpoints import latest_checkpoint

    run = tmp_path / "run"
    # One step per epoch: a checkpoint is written after every step, so the process spends
    # much of its time inside a save when it is killed.
    proc = _subprocess(["train", "--task", "pet_denoise", "--data", str(data_dir), *TINY,
                        "--epochs", "400", "--steps-per-epoch", "1", "--keep-checkpoints", "2",
                        "--logdir", str(run)])
    deadline = time.time() + 300
    while len(list(run.glob("checkpoints/ckpt-*.index"))) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoints written"
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (run / "summary.json").exists()

    # What a kill during a save can leave: data files of a checkpoint the state never recorded.
    (run / "checkpoints" / "ckpt-99999.data-00000-of-00001").write_bytes(b"\x00" * 64)
    restored = int(latest_checkpoint(run).rsplit("-", 1)[1])
    assert 1 <= restored < 99999

    _run(["train", "--resume", str(run), "--epochs", str(restored + 2), "--quiet"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == restored + 2
    assert summary["generator_updates"] == 3 * (restored + 2)


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(data_dir, tmp_path):
    run = tmp_path / "run"
    _run(["train", "--task", "pet_denoise", "--data", str(data_dir), *TINY, "--epochs", "1",
          "--steps-per-epoch", "2", "--strategy", "mirrored", "--logical-cpus", "2", "--logdir", str(run)])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_batch_size"] == 2
    assert summary["step"] == 2
    assert all(np.isfinite(v) for v in summary["last_losses"].values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multiworker_strategy_with_two_local_workers(data_dir, tmp_path):
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(_subprocess(["train", "--task", "pet_denoise", "--data", str(data_dir), *TINY,
                                  "--epochs", "1", "--steps-per-epoch", "2", "--strategy", "multiworker",
                                  "--logdir", str(run)], env_extra={"TF_CONFIG": tf_config}))
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_batch_size"] == 2 and summary["step"] == 2
    assert all(np.isfinite(v) for v in summary["last_losses"].values())
    assert not list(run.glob(".worker-*")), "non-chief checkpoint copies must be cleaned up"


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_xla_and_mixed_precision_on_cpu(tmp_path, precision):
    import keras

    run = tmp_path / precision
    try:
        code = cli.main(["train", "--task", "pet_denoise", "--epochs", "1", "--steps-per-epoch", "2", *TINY,
                         "--xla", "on", "--mixed-precision", precision, "--logdir", str(run)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert all(np.isfinite(v) for v in summary["last_losses"].values()), summary["last_losses"]


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(data_dir, tmp_path):
    import tensorflow as tf

    from medgan_tf import config as config_lib

    from medgan_tf import presets
    from medgan_tf.errors import TrainingDiverged
    from medgan_tf.training import checkpoints, driver, runtime

    experiment = config_lib.override(
        presets.task_preset("pet_denoise", "medgan_1g"),
        {"data.image_size": 64, "generator.base_filters": 8, "train.vgg_weights": "none",
         "train.epochs": 3, "train.steps_per_epoch": 2},
    )
    data = driver.tfrecord_data(data_dir, experiment, global_batch=1)
    clean_batches = data.epoch_batches

    def poisoned(epoch):  # epoch 0 trains normally; from epoch 1 on the source is NaN
        batches = clean_batches(epoch)
        return batches if epoch == 0 else batches.map(lambda s, t: (s * float("nan"), t))

    data.epoch_batches = poisoned
    rt = runtime.Runtime(tf.distribute.get_strategy(), False, "float32", True, 0)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"diverged at step 3: .*nan.*last good one is intact"):
        driver.train(experiment, run, data, runtime=rt, quiet=True)

    assert checkpoints.latest_checkpoint(run).endswith("ckpt-2")
    generator, _ = checkpoints.load_generator(run)
    assert all(np.isfinite(w).all() for w in generator.get_weights())
    assert not (run / "summary.json").exists()
