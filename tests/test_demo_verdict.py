"""The demo's verdict and per-task presets, without training (`tests/test_demo.py` runs the demo)."""

import dataclasses
import json

import pytest

from medgan_tf import tasks
from medgan_tf.errors import UserError
from medgan_tf.metrics import metric_names
from medgan_tf.workflows import demo


def _summary(model, given, **baselines):
    rows = {"output": model, "input": given, **baselines}
    others = {name: {"mean": None} for name in metric_names(scale="0-255")}
    return {name: {**others, "ssim": {"mean": ssim}, "psnr": {"mean": psnr}} for name, (ssim, psnr) in rows.items()}


def _verdict(tmp_path, task, summary):
    (tmp_path / "report").mkdir(exist_ok=True)
    (tmp_path / "report" / "metrics.md").write_text("| model |\n")
    return demo._verdict(tmp_path, tasks.get(task), demo.demo_preset(task), "p", tmp_path / "t.nii.gz",
                         tmp_path / "export", summary, {"train": 1.0})


def _task(same_unit: bool) -> str:
    return next(name for name, task in tasks.TASKS.items() if task.phantom and task.same_unit == same_unit
                and not task.denoising)


def test_wins_needs_the_input_and_every_baseline_beaten_and_passing_the_input(tmp_path):
    task = _task(same_unit=True)
    won = _verdict(tmp_path, task, _summary((0.9, 40.0), (0.5, 30.0), intensity_map=(0.8, 35.0)))
    assert won["wins"] and won["passed"] and won["failed"] == [] and won["input_comparable"]
    lost = _verdict(tmp_path, task, _summary((0.9, 40.0), (0.5, 30.0), intensity_map=(0.8, 41.0)))
    assert not lost["wins"] and lost["failed"] == ["the classical baseline intensity_map on PSNR"]
    assert lost["passed"]  # the input is beaten: the command exits 0 and says it does not win yet
    assert json.loads((tmp_path / "demo.json").read_text())["failed"] == lost["failed"]
    assert "**Passed, does not win yet**" in (tmp_path / "README.md").read_text()
    below_input = _verdict(tmp_path, task, _summary((0.4, 40.0), (0.5, 30.0), intensity_map=(0.3, 35.0)))
    assert below_input["failed"] == ["the untouched input on SSIM"] and not below_input["passed"]
    assert "**Failed**" in (tmp_path / "README.md").read_text()


def test_an_input_of_another_unit_does_not_decide_the_verdict(tmp_path):
    task = _task(same_unit=False)
    verdict = _verdict(tmp_path, task, _summary((0.7, 25.0), (0.9, 45.0), intensity_map=(0.6, 24.0)))
    assert verdict["passed"] and verdict["wins"] and verdict["beats_input"] is None and not verdict["input_comparable"]
    behind = _verdict(tmp_path, task, _summary((0.7, 25.0), (0.9, 45.0), intensity_map=(0.8, 24.0)))
    assert not behind["passed"]  # no comparable input: the baselines decide
    assert "not comparable" in (tmp_path / "README.md").read_text()


def test_every_task_with_a_phantom_has_a_valid_demo_preset_whose_grid_holds_a_patient():
    for name in ("pet_denoise", "mr_ct", "cbct_ct", "ct_denoise"):  # the demos the issue asks to win
        preset = demo.demo_preset(name)
        grid = demo.demo_task(name, preset).data
        assert grid.image_size == preset.image_size
        # The phantom fills image_size × spacing[0] mm: a head or a trunk of real size, not a few cm.
        assert grid.image_size * grid.spacing_mm[0] >= 150.0, name
        assert demo.demo_config(name).data.spacing_mm == grid.spacing_mm


def test_unknown_demo_settings_are_refused():
    task = dataclasses.replace(tasks.get(tasks.DEFAULT_TASK), demo={"stepz": 3})
    with pytest.raises(UserError, match="stepz"):
        demo.demo_preset(task)
