"""`medgan-tf demo` end to end with a two-step training (the full demo is `make demo`)."""

import json

import pytest

from medgan_tf import cli


@pytest.mark.slow
def test_demo_writes_every_artifact_and_its_verdict_decides_the_exit_status(tmp_path, capsys):
    import keras

    out = tmp_path / "demo"
    try:
        status = cli.main(["demo", "--task", "pet_denoise", "--steps", "2", "--quiet", "--out", str(out)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    verdict = json.loads((out / "demo.json").read_text())
    # The verdict is the report's own numbers: model vs untouched input on SSIM and PSNR, held-out test split.
    summary = json.loads((out / "report" / "metrics.json").read_text())["summary"]
    model_ssim, input_ssim = summary["output"]["ssim"]["mean"], summary["input"]["ssim"]["mean"]
    assert verdict["model_metrics"]["ssim"] == model_ssim and verdict["input_metrics"]["ssim"] == input_ssim
    model_psnr, input_psnr = summary["output"]["psnr"]["mean"], summary["input"]["psnr"]["mean"]
    beats_baselines = all(verdict["model_metrics"][k] > summary[name][k]["mean"]
                          for name in verdict["beats_baselines"] for k in ("ssim", "psnr"))
    assert verdict["passed"] == (model_ssim > input_ssim and model_psnr > input_psnr)
    assert verdict["wins"] == (verdict["passed"] and beats_baselines)
    # The classical baselines of denoising are rows of the table and of the verdict.
    assert {"gaussian", "nlm"} <= set(summary) and set(verdict["beats_baselines"]) == {"gaussian", "nlm"}
    assert verdict["baseline_metrics"]["gaussian"]["ssim"] == summary["gaussian"]["ssim"]["mean"]
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    test_keys = {v["patient_key"] for v in manifest["volumes"] if v.get("split") == "test"}
    assert len(test_keys) == 2 and all(s["patient_key"] in test_keys for s in json.loads(
        (out / "report" / "metrics.json").read_text())["slices"])
    # Two iterations of Algorithm 1 cannot denoise: the demo must say so, naming what it lost, and fail.
    assert not verdict["passed"] and status == 1 and "the untouched input on PSNR" in verdict["failed"]
    captured = capsys.readouterr()
    assert "error: the demo model did not beat the untouched input on" in captured.err
    assert (out / "volumes" / "pairs.csv").is_file()
    assert (out / "dataset" / "manifest.json").is_file()
    assert json.loads((out / "run" / "summary.json").read_text())["generator_updates"] == 6
    assert (out / "savedmodel" / "1" / "saved_model.pb").is_file()
    assert (out / "translated" / f"{verdict['held_out_patient']}_translated.nii.gz").is_file()
    for name in ("metrics.json", "metrics.md", "figure.png", "slices.png"):
        assert (out / "report" / name).is_file()
    readme = (out / "README.md").read_text()
    assert "| model |" in readme and "| input (untouched) |" in readme
    assert set(verdict["model_metrics"]) == {"ssim", "psnr", "mse", "vif", "uqi"}
    assert "model beats the untouched input: SSIM NO" in captured.out
