"""`medgan-tf tasks`: the registered tasks, one line each; `--show` prints a complete TOML that
`--task FILE.toml` reads back; a bad task file is one `error:` line naming the key and what is
allowed, whichever command reads it. And `evaluate --pairs --task mr_ct --protocol synthrad2023`
scores a prediction column of CT volumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import tasks
from medgan_tf.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _error_line(capsys) -> str:
    """The command's stderr, which must be exactly one `error:` line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_tasks_lists_every_registered_task_on_one_line(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name, task in tasks.TASKS.items():
        [line] = [line for line in out if line.startswith(name + " ")]
        data = task.data
        assert f"{data.source_modality} → {data.target_modality}" in line
        assert f"{data.image_size}²" in line and task.protocol in line and task.description in line
        assert ("built-in data" in line) == bool(task.phantom)
    assert re.search(r"pet_denoise +PT → PT +2\.8×2\.8×2 mm, 256² +pet +built-in data", "\n".join(out))
    assert "tasks --show NAME" in out[-1]


@pytest.mark.parametrize("name", tasks.TASKS.names())
def test_show_prints_a_complete_toml_that_reads_back_to_the_task(name, tmp_path, capsys):
    assert main(["tasks", "--show", name]) == 0
    text = capsys.readouterr().out
    assert all(re.search(rf"(?m)^{key} = ", text) for key in tasks.TOML_KEYS if not key.endswith("_normalization"))
    assert "[source_normalization]" in text and "[target_normalization]" in text
    (tmp_path / "t.toml").write_text(text)
    again = tasks.task_from_toml(tmp_path / "t.toml")
    registered = tasks.get(name)
    assert (again.name, again.data, again.description, again.reference, again.protocol) == (
        registered.name, registered.data, registered.description, registered.reference, registered.protocol)
    assert main(["tasks", "--show", str(tmp_path / "t.toml")]) == 0  # a file shows as it is read
    assert capsys.readouterr().out == text


def test_an_unknown_task_name_lists_the_registered_ones(capsys):
    assert main(["tasks", "--show", "pet_mr"]) == 2
    line = _error_line(capsys)
    assert "unknown task 'pet_mr'" in line and ", ".join(tasks.TASKS.names()) in line


BASE = 'name = "mine"\nsource = "MR"\ntarget = "CT"\nspacing_mm = [1.0, 1.0, 2.5]\nimage_size = 32\n'
BAD = {
    "key": (BASE + 'colour = "blue"\n', ["unknown key(s) colour", "expected some of " + ", ".join(tasks.TOML_KEYS)]),
    "modality": (BASE.replace('"CT"', '"XR"'), ["target 'XR' is not a modality", "expected one of CT, CBCT, MR, PT"]),
    "spacing": (BASE.replace("[1.0, 1.0, 2.5]", "[1.0, -1.0]"), ["spacing_mm: expected three positive sizes in mm",
                                                                  "received [1.0, -1.0]"]),
    "normalization": (BASE + '[target_normalization]\nkind = "zscore"\n',
                      ["target_normalization.kind: expected one of window, scale, percentile", "'zscore'"]),
    "unit": (BASE.replace('target = "CT"', 'target = "MR"') + '[target_normalization]\nunit = "HU"\n',
             ["target_normalization.unit: 'HU' does not fit MR", 'delete it to take MR\'s default (kind = "percentile"']),
    "per-volume target": (BASE.replace('source = "MR"', 'source = "CT"').replace('target = "CT"', 'target = "MR"'),
                          ["target_normalization: kind 'percentile' is fitted on each target volume",
                           'expected kind = "window" with low and high in a.u., or share_source = true']),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_task_file_is_one_error_line_naming_the_key_and_the_allowed_values(case, tmp_path, capsys):
    text, expected = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for argv in (["tasks", "--show", str(path)],
                 ["convert", "--pairs", str(tmp_path / "pairs.csv"), "--task", str(path), "--out", str(tmp_path / "o")],
                 ["summary", "--task", str(path)],
                 ["evaluate", "--pairs", str(tmp_path / "pairs.csv"), "--task", str(path)]):
        (tmp_path / "pairs.csv").write_text("patient_id,target,prediction\n")
        assert main(argv) == 2, argv
        line = _error_line(capsys)
        assert line.startswith(f"error: task file {path}: "), line
        assert all(part in line for part in expected), (line, expected)
    assert not (tmp_path / "o").exists()


def test_a_missing_or_unreadable_task_file(tmp_path, capsys):
    assert main(["tasks", "--show", str(tmp_path / "none.toml")]) == 2
    assert f"task file {tmp_path / 'none.toml'} does not exist" in _error_line(capsys)
    (tmp_path / "broken.toml").write_text('name = "x\n')
    assert main(["tasks", "--show", str(tmp_path / "broken.toml")]) == 2
    assert "not a readable TOML file" in _error_line(capsys)


def test_the_readme_example_task_reads(tmp_path):
    """README "Your own task": its TOML example is a valid task, and every TOML key is documented."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own task", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```toml\n(.*?)```", section, re.S)
    (tmp_path / "example.toml").write_text(example)
    task = tasks.task_from_toml(tmp_path / "example.toml")
    assert task.name not in tasks.TASKS
    assert all(f"`{key}`" in section for key in tasks.TOML_KEYS)
    assert all(f"`{name}`" in readme for name in tasks.TASKS.names())


# --------------------------------------------------------------------------- evaluate --pairs on mr_ct


def _ct_head(shape=(24, 24, 8)) -> np.ndarray:
    """A CT head in HU: air −1000 around an ellipse of soft tissue (40 HU) with a bone ring (1200 HU)."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    r = np.sqrt((x / 0.8) ** 2 + (y / 0.9) ** 2)
    slice_ = np.where(r < 0.85, np.where(r > 0.7, 1200.0, 40.0 + 30.0 * x), -1000.0)
    return np.repeat(slice_[:, :, None], shape[2], axis=2) + np.arange(shape[2]) * 2.0


def test_evaluate_pairs_scores_a_prediction_column_of_mr_ct_by_synthrad2023(tmp_path, capsys):
    from medgan_tf.data.io import Volume, write_nifti

    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    rows = ["patient_id,source,target,prediction"]
    for number in range(2):
        ct = _ct_head()
        prediction = ct + np.random.default_rng(number).normal(0.0, 20.0, ct.shape) * (ct > -500)
        mr = np.where(ct > 500, 50.0, np.where(ct > -500, 600.0, 5.0))
        for name, array, modality, unit in (("mr", mr, "MR", "a.u."), ("ct", ct, "CT", "HU"),
                                            ("sct", prediction, "CT", "HU")):
            write_nifti(Volume(array.astype(np.float32), affine, modality, unit), tmp_path / f"{name}{number}.nii.gz")
        rows.append(f"p{number},mr{number}.nii.gz,ct{number}.nii.gz,sct{number}.nii.gz")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", "--pairs", str(tmp_path / "pairs.csv"), "--task", "mr_ct", "--protocol", "synthrad2023",
                 "--out", str(tmp_path / "report"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["protocol"] == "synthrad2023" and payload["task"] == "mr_ct" and payload["num_patients"] == 2
    assert payload["unit"] == "HU" and not payload["failures"]
    model = payload["summary"]["model"]
    assert {"mae", "psnr", "ssim"} <= set(model)
    assert 5.0 < model["mae"]["mean"] < 30.0  # about 0.8·20 HU inside the body, 0 in air
    assert model["psnr"]["mean"] > 35.0 and model["ssim"]["mean"] > 0.8
    markdown = (tmp_path / "report" / "metrics.md").read_text()
    assert "mr_ct" in markdown and "synthrad2023" in markdown
