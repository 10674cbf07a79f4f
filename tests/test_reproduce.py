"""`medgan-tf reproduce`: the acceptance command end to end (table, figure, results.json with both
rows), resumability, and the run-planning / report logic on its own (no training)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from medgan_tf import cli, presets
from medgan_tf.workflows import comparison, reproduce, run_cache
from medgan_tf.errors import UserError

ACCEPTANCE = ["reproduce", "--task", "pet_denoise", "--models", "pix2pix,medgan_1g", "--budget-steps", "2",
              "--image-size", "64", "--base-filters", "8"]


def _mtimes(directory: Path) -> dict[str, int]:
    return {str(path.relative_to(directory)): path.stat().st_mtime_ns for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_acceptance_command_writes_the_report_and_a_second_run_does_not_retrain(tmp_path, caplog):
    out = tmp_path / "report"
    caplog.set_level(logging.INFO)
    assert cli.main([*ACCEPTANCE, "--out", str(out)]) == 0

    table = (out / "table.md").read_text()
    assert "| Method | SSIM | PSNR(dB) | MSE | VIF | UQI | LPIPS |" in table
    for label in ("pix2pix", "MedGAN-1G", "input (untouched)"):
        assert f"| {label} |" in table
    figure = (out / "figure.png").read_bytes()
    assert figure[:8] == b"\x89PNG\r\n\x1a\n" and len(figure) > 10_000
    results = json.loads((out / "results.json").read_text())
    rows = {row["run"]: row for row in results["rows"]}
    assert list(rows) == ["pix2pix", "medgan_1g"]
    for name, row in rows.items():
        assert row["steps"] == 2 and row["trained_this_invocation"]
        assert set(row["metrics"]) >= {"ssim", "psnr", "mse", "vif", "uqi", "lpips"}
        assert 0.0 < row["metrics"]["ssim"]["mean"] < 1.0
        assert row["metrics"]["lpips"]["mean"] is None  # unavailable here: shown as n/a
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["step"] == 2 and summary["generator_updates"] == 6
    assert rows["pix2pix"]["loss_terms"] == {"cgan": 1.0, "l1": 100.0}
    assert rows["medgan_1g"]["num_ublocks"] == 1
    # Same slices for both methods: the table's numbers come from the same 32 validation slices.
    assert rows["pix2pix"]["num_slices"] == rows["medgan_1g"]["num_slices"] == results["input"]["metrics"]["ssim"]["n"]
    # Every row's numbers are those of the run's own cached evaluation.
    cached = json.loads((out / "runs" / "pix2pix" / "evaluation" / "metrics.json").read_text())
    assert rows["pix2pix"]["metrics"]["mse"]["mean"] == pytest.approx(cached["summary"]["output"]["mse"]["mean"])

    before = _mtimes(out / "runs")
    caplog.clear()
    assert cli.main([*ACCEPTANCE, "--out", str(out)]) == 0
    assert _mtimes(out / "runs") == before  # no checkpoint, summary or evaluation rewritten
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert messages.count("not training again") == 2 and messages.count("evaluation cached") == 2
    again = json.loads((out / "results.json").read_text())
    assert [row["trained_this_invocation"] for row in again["rows"]] == [False, False]
    assert again["rows"][0]["metrics"] == results["rows"][0]["metrics"]

    # The comparison's settings are pinned: another budget in the same folder is refused.
    assert cli.main([*ACCEPTANCE[:6], "3", *ACCEPTANCE[7:], "--out", str(out)]) == 2


# --------------------------------------------------------------------------- without training


def test_plan_adds_the_sweep_and_reuses_pix2pix_for_depth_one():
    entries = reproduce.plan(["pix2pix", "medgan"], [1, 2, 3, 2])
    assert [(e.name, e.model, e.num_ublocks) for e in entries] == [
        ("pix2pix", "pix2pix", None),
        ("medgan", "medgan", None),
        ("pix2pix_ublocks2", "pix2pix", 2),
        ("pix2pix_ublocks3", "pix2pix", 3),
    ]
    assert reproduce.sweep_run_name(1, entries) == "pix2pix"
    only_sweep = reproduce.plan([], [1])
    assert [(e.name, e.num_ublocks) for e in only_sweep] == [("pix2pix_ublocks1", 1)]


@pytest.mark.parametrize(
    "models, sweep, message",
    [(["pix2pix", "nope"], [], "unknown model(s) nope; registered: cgan, perceptual"),
     (["pix2pix", "pix2pix"], [], "lists a model twice"),
     (["pix2pix"], [0], "depths must be ≥ 1")],
)
def test_plan_rejects_bad_requests(models, sweep, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reproduce.plan(models, sweep)


def test_cli_rejects_bad_lists_before_any_training(capsys, tmp_path):
    assert cli.main(["reproduce", "--models", "pix2pix,unknown", "--out", str(tmp_path)]) == 2
    assert "unknown model(s) unknown" in capsys.readouterr().err
    assert cli.main(["reproduce", "--ublocks-sweep", "1,two", "--out", str(tmp_path)]) == 2
    assert "expected integers" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_experiment_config_shares_the_budget_and_changes_only_the_recipe():
    from medgan_tf import config

    settings = reproduce.Settings(task="pet_denoise", budget_steps=40, image_size=64, base_filters=8, seed=3)
    pix2pix = reproduce.experiment_config(reproduce.Entry("pix2pix", "pix2pix"), settings)
    medgan = reproduce.experiment_config(reproduce.Entry("medgan", "medgan"), settings)
    deep = reproduce.experiment_config(reproduce.Entry("pix2pix_ublocks4", "pix2pix", 4), settings)
    for experiment in (pix2pix, medgan, deep):
        assert experiment.train.epochs * experiment.train.steps_per_epoch == 40
        assert (experiment.train.seed, experiment.train.batch_size, experiment.train.generator_steps) == (3, 1, 3)
        assert (experiment.data.image_size, experiment.generator.base_filters) == (64, 8)
        assert experiment.train.checkpoint_every_steps == 4
    assert {key.split(".")[0] for key in config.diff(pix2pix, medgan)} == {"model", "generator", "losses"}
    assert set(config.diff(pix2pix, deep)) == {"generator.num_ublocks"}
    assert deep.generator.num_ublocks == 4 and deep.model == "pix2pix"


def _fake_result(ssim: float, keys=(("p1", 3), ("p2", 5))):
    from medgan_tf.evaluation import scoring

    rng = np.random.default_rng(0)
    slices = [scoring.SliceScores(key, index, {"ssim": ssim, "psnr": 20.0, "mse": 100.0, "vif": 0.3, "uqi": 0.5,
                                                  "lpips": None, "mae": 0.1},
                                     {"ssim": 0.5, "psnr": 18.0, "mse": 120.0, "vif": 0.2, "uqi": 0.4, "lpips": None,
                                      "mae": 0.2}) for key, index in keys]
    examples = [scoring.ExampleSlice(key, index, *(rng.uniform(-1, 1, (16, 16)).astype("float32") for _ in range(3)))
                for key, index in keys]
    return scoring.EvaluationResult(slices, examples, unit="SUV", lpips_available=False, lpips_reason="no weights")


def test_run_entry_trains_only_what_is_missing(tmp_path, monkeypatch):
    """Fresh → trained; checkpointed but short → continued; finished and scored → skipped."""
    settings = reproduce.Settings(task="pet_denoise", budget_steps=5, image_size=64, base_filters=8)
    calls = []

    def fake_train(entry, settings, run_dir, data_dir, runtime):
        calls.append(("train", entry.name, (run_dir / "config.json").is_file()))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text("{}")
        (run_dir / "summary.json").write_text(json.dumps({"step": settings.budget_steps}))
        return {"step": settings.budget_steps}

    def fake_evaluate(run_dir, data_dir, settings, title):
        calls.append(("evaluate", run_dir.name))
        out = run_dir / run_cache.EVALUATION_DIR
        out.mkdir(parents=True, exist_ok=True)
        result = _fake_result(0.7)
        (out / "metrics.json").write_text(json.dumps(result.to_dict()))
        run_cache.save_examples(out / run_cache.EXAMPLES_FILE, result.examples)
        (out / run_cache.EVALUATION_STATE).write_text(json.dumps(
            {"step": run_cache.trained_steps(run_dir), "split": "val", "figure_slices": settings.figure_slices}))
        return run_cache.load_evaluation(run_dir)

    monkeypatch.setattr(reproduce, "train_entry", fake_train)
    monkeypatch.setattr(reproduce, "evaluate_entry", fake_evaluate)
    fresh, partial = reproduce.Entry("pix2pix", "pix2pix"), reproduce.Entry("pan", "pan")
    (tmp_path / "runs" / "pan").mkdir(parents=True)
    (tmp_path / "runs" / "pan" / "config.json").write_text("{}")  # interrupted: no summary.json yet

    first = reproduce.run_entry(fresh, settings, tmp_path, tmp_path, None, "[1/2]")
    second = reproduce.run_entry(partial, settings, tmp_path, tmp_path, None, "[2/2]")
    assert calls == [("train", "pix2pix", False), ("evaluate", "pix2pix"), ("train", "pan", True), ("evaluate", "pan")]
    assert first["trained"] and second["trained"]

    calls.clear()
    again = reproduce.run_entry(fresh, settings, tmp_path, tmp_path, None, "[1/2]")
    assert calls == [] and not again["trained"]
    assert [(e.patient_key, e.slice_index) for e in again["result"].examples] == [("p1", 3), ("p2", 5)]
    assert again["result"].summary()["output"]["ssim"]["mean"] == pytest.approx(0.7)

    # A longer budget makes the cached evaluation stale and the run short: both are redone.
    longer = reproduce.Settings(task="pet_denoise", budget_steps=9, image_size=64, base_filters=8)
    reproduce.run_entry(fresh, longer, tmp_path, tmp_path, None, "[1/2]")
    assert calls == [("train", "pix2pix", True), ("evaluate", "pix2pix")]


def test_settings_are_pinned_per_output_folder(tmp_path):
    settings = reproduce.Settings(task="pet_denoise", budget_steps=5, image_size=64, base_filters=8)
    run_cache.check_settings(tmp_path, settings)
    run_cache.check_settings(tmp_path, settings)  # same settings: fine
    with pytest.raises(UserError, match=r"budget_steps: 5 there, 6 now"):
        run_cache.check_settings(tmp_path, reproduce.Settings(task="pet_denoise", budget_steps=6, image_size=64,
                                                              base_filters=8))


def test_report_tables_figures_and_sweep_plot(tmp_path):
    settings = reproduce.Settings(task="pet_denoise", budget_steps=5, image_size=64, base_filters=8, vgg_weights="none")
    results = {"cgan": _fake_result(0.61), "medgan": _fake_result(0.83), "pix2pix": _fake_result(0.72)}
    labels = {name: presets.MODELS.get(name).display_name for name in results}
    summaries = {name: result.summary()["output"] for name, result in results.items()}
    sweep = {1: summaries["pix2pix"], 3: summaries["medgan"]}
    text = comparison.table_markdown(settings, labels, summaries, results["cgan"].summary()["input"], "no weights", sweep)
    assert "## Table I — loss components" in text and "## Table II — state-of-the-art methods" in text
    assert "| cGAN | 0.6100 | 20.00 | 100.00 | 0.3000 | 0.5000 | n/a |" in text
    assert "| MedGAN | 0.8300 |" in text and "| CasNet-3 | 0.8300 |" in text
    assert "| input (untouched) | 0.5000 | 18.00 | 120.00 |" in text
    assert "RANDOM" in text and "LPIPS: n/a — no weights" in text
    # Table I lists cGAN before MedGAN, Table II pix2pix before MedGAN (the paper's order).
    table_one = text.split("## Table I")[1].split("## Table II")[0]
    assert table_one.index("| cGAN |") < table_one.index("| MedGAN |") and "pix2pix" not in table_one

    comparison.save_figure(tmp_path / "figure.png", labels, results, title="t")
    comparison.save_sweep_figure(tmp_path / "ublocks.png", sweep, title="t")
    for name in ("figure.png", "ublocks.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    mismatched = {**results, "pan": _fake_result(0.5, keys=(("p9", 1), ("p2", 5)))}
    with pytest.raises(UserError, match="other example slices"):
        comparison.save_figure(tmp_path / "bad.png", {**labels, "pan": "PAN"}, mismatched, title="t")


def test_too_small_slices_are_refused_before_any_training(tmp_path):
    settings = reproduce.Settings(task="pet_denoise", budget_steps=1, image_size=32, base_filters=8)
    with pytest.raises(UserError, match=r"VIF needs slices of at least 41×41"):
        reproduce.reproduce(settings, tmp_path / "out", models=["pix2pix"])
    assert not (tmp_path / "out").exists()


def test_settings_missing_from_an_older_folder_count_as_defaults(tmp_path):
    settings = reproduce.Settings(task="pet_denoise", budget_steps=5, image_size=64, base_filters=8)
    saved = dataclasses.asdict(settings)
    del saved["deterministic"]
    (tmp_path / run_cache.SETTINGS_FILE).write_text(json.dumps(saved))
    run_cache.check_settings(tmp_path, settings)
    with pytest.raises(UserError, match="deterministic: False there, True now"):
        run_cache.check_settings(tmp_path, dataclasses.replace(settings, deterministic=True))


def test_protocol_tables_score_every_run_on_held_out_volumes_with_baselines(tmp_path):
    """`reproduce --protocol pet` without training: two run directories scored on held-out
    synthetic volumes; the table holds both methods, the input and both denoising baselines."""
    from helpers import make_run

    from medgan_tf.workflows.protocol_tables import write_protocol_tables

    for name in ("pix2pix", "medgan_1g"):
        make_run(tmp_path / "runs" / name, "pet_denoise", image_size=32)
    settings = reproduce.Settings(task="pet_denoise", budget_steps=1, image_size=32, base_filters=8)
    labels = {"pix2pix": "pix2pix", "medgan_1g": "MedGAN-1G"}
    paths = write_protocol_tables(tmp_path, settings, labels, "pet", None, data_given=False)
    table = Path(paths["table_pet"]).read_text()
    for row in ("pix2pix", "MedGAN-1G", "input", "gaussian", "nlm"):
        assert f"| {row} |" in table
    assert "| Row | SSIM | PSNR(dB) | NRMSE |" in table
    results = json.loads(Path(paths["results_pet"]).read_text())
    assert list(results["rows"]) == ["pix2pix", "MedGAN-1G", "input", "gaussian", "nlm"]
    assert results["rows"]["input"]["nrmse"]["n"] == 2  # the two held-out test patients
    with pytest.raises(UserError, match="--pairs"):
        write_protocol_tables(tmp_path, settings, labels, "pet", None, data_given=True)
