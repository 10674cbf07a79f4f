"""`medgan-tf evaluate` on a tiny converted dataset, with an export and with a run directory.

The dataset is written here with the record schema (two patients, three 64² slices each, PET
"scale" parameters that differ per patient), so the expected numbers can be computed by hand:
PSNR from its formula, SSIM with scikit-image, MAE from the records' de-normalization parameters
and the generator's own output.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from medgan_tf.cli import main

from helpers import SIZE, make_run  # noqa: E402  (tests/ is on sys.path)
# patient key → (low, high) of its PET "scale" window (SUV); shared by source and target.
PATIENTS = {"a1b2c3d4e5f60718": (0.0, 5.0), "0f1e2d3c4b5a6978": (0.0, 12.0)}
SLICES_PER_PATIENT = 3


def write_dataset(data_dir: Path, image_size: int = SIZE) -> list[dict]:
    """manifest.json + val/data-00000-of-00001.tfrecord.gz; returns the records as written."""
    import tensorflow as tf

    from medgan_tf.data import schema

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:image_size, :image_size] / image_size
    records = []
    (data_dir / "val").mkdir(parents=True)
    path = data_dir / "val" / "data-00000-of-00001.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for key, (low, high) in PATIENTS.items():
            params = {"kind": "scale", "unit": "SUV", "low": low, "high": high}
            for index in range(SLICES_PER_PATIENT):
                target = np.clip(np.sin(6 * xx + index) * np.cos(4 * yy), -1, 1).astype(np.float32)
                source = np.clip(target + rng.normal(0, 0.2, target.shape), -1, 1).astype(np.float32)
                writer.write(schema.encode_example(source, target, key, index, (2.8, 2.8, 2.0), params, params))
                records.append({"source": source, "target": target, "params": params, "key": key, "index": index})
    manifest = {"format": "medgan-tf tfrecords", "task": "pet_denoise", "image_size": image_size}
    (data_dir / "manifest.json").write_text(json.dumps(manifest))
    return records


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from medgan_tf.serving import export

    root = tmp_path_factory.mktemp("evaluate")
    generator, _ = make_run(root / "run", "pet_denoise")
    version_dir = export.export_run(root / "run", root / "savedmodels" / "pet_denoise")
    records = write_dataset(root / "data")
    return root, generator, version_dir, records


def test_evaluate_export_json_and_report(setup, tmp_path, capsys):
    from skimage.metrics import structural_similarity

    root, generator, version_dir, records = setup
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(version_dir), "--data", str(root / "data"), "--json",
                 "--out", str(out), "--batch-size", "4", "--figure-slices", "2"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)  # stdout holds exactly one JSON document
    assert payload["num_slices"] == 6 and payload["num_patients"] == 2 and payload["unit"] == "SUV"
    assert set(payload["lpips"]) == {"available", "reason"}
    for name in ("metrics.json", "metrics.md", "figure.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    summary = payload["summary"]

    def to_255(image):
        return np.clip((image.astype(np.float64) + 1.0) * 127.5, 0, 255)

    # Input row, by hand: PSNR from its formula, SSIM from scikit-image, MAE in SUV from the params.
    psnr = [10 * np.log10(255.0**2 / np.mean((to_255(r["source"]) - to_255(r["target"])) ** 2)) for r in records]
    ssim = [
        structural_similarity(to_255(r["source"]), to_255(r["target"]), data_range=255.0, gaussian_weights=True,
                              sigma=1.5, use_sample_covariance=False)
        for r in records
    ]
    mae_input = [np.mean(np.abs(r["source"] - r["target"])) * (r["params"]["high"] - r["params"]["low"]) / 2 for r in records]
    assert summary["input"]["psnr"]["mean"] == pytest.approx(np.mean(psnr), rel=1e-6)
    assert summary["input"]["ssim"]["mean"] == pytest.approx(np.mean(ssim), abs=1e-6)
    assert summary["input"]["mae"]["mean"] == pytest.approx(np.mean(mae_input), rel=1e-5)
    assert summary["input"]["psnr"]["sd"] == pytest.approx(np.std(psnr, ddof=1), rel=1e-5)

    # Output row: the generator's own output, de-normalized with each record's parameters.
    outputs = np.asarray(generator(np.stack([r["source"][..., None] for r in records]), training=False))[..., 0]
    mae_output = [
        np.mean(np.abs(out_slice - r["target"])) * (r["params"]["high"] - r["params"]["low"]) / 2
        for out_slice, r in zip(outputs, records)
    ]
    assert summary["output"]["mae"]["mean"] == pytest.approx(np.mean(mae_output), rel=1e-4)
    psnr_output = [10 * np.log10(255.0**2 / np.mean((to_255(o) - to_255(r["target"])) ** 2)) for o, r in zip(outputs, records)]
    assert summary["output"]["psnr"]["mean"] == pytest.approx(np.mean(psnr_output), rel=1e-4)

    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["per_patient"]) == set(PATIENTS)
    assert all(entry["num_slices"] == SLICES_PER_PATIENT for entry in saved["per_patient"].values())
    assert len(saved["slices"]) == 6
    markdown = (out / "metrics.md").read_text()
    assert "SSIM" in markdown and "PSNR" in markdown


def test_run_directory_scores_like_its_export(setup, tmp_path, capsys):
    root, _, version_dir, _ = setup
    summaries = []
    for model in (root / "run", version_dir):
        assert main(["evaluate", "--model", str(model), "--data", str(root / "data"), "--json",
                     "--out", str(tmp_path / model.name)]) == 0
        summaries.append(json.loads(capsys.readouterr().out)["summary"])
    for name in ("ssim", "psnr", "mse", "mae"):
        assert summaries[0]["output"][name]["mean"] == pytest.approx(summaries[1]["output"][name]["mean"], rel=1e-4)


def test_markdown_report_without_json(setup, tmp_path, capsys):
    root, _, version_dir, _ = setup
    assert main(["evaluate", "--model", str(version_dir), "--data", str(root / "data"), "--out", str(tmp_path),
                 "--figure-slices", "0", "--max-slices", "2"]) == 0
    printed = capsys.readouterr().out
    assert "SSIM" in printed and "report:" in printed
    assert json.loads((tmp_path / "metrics.json").read_text())["num_slices"] == 2
    assert not (tmp_path / "figure.png").exists()


def test_clear_errors(setup, tmp_path, capsys):
    root, _, version_dir, _ = setup
    write_dataset(tmp_path / "small", image_size=32)
    cases = [
        (["--model", str(version_dir), "--data", str(tmp_path / "small")], "holds 32×32 slices; the model was trained for 64×64"),
        (["--model", str(version_dir), "--data", str(tmp_path)], "is not a converted dataset"),
        (["--model", str(version_dir), "--data", str(root / "data"), "--split", "train"], "no TFRecord shards"),
        (["--model", str(tmp_path / "nothing"), "--data", str(root / "data")], "does not exist"),
    ]
    for arguments, message in cases:
        assert main(["evaluate", *arguments, "--out", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err


def test_a_registered_metric_appears_in_the_evaluate_report(setup, tmp_path, capsys):
    """Adding a metric is one table entry plus its function: the report, the JSON summary and the
    Markdown table pick it up with no other change."""
    from medgan_tf import metrics

    def brightest_error(output, target):  # a toy metric on the 0–255 scale
        return float(np.max(np.abs(np.asarray(output) - np.asarray(target))))

    root, _, version_dir, records = setup
    toy = metrics.Metric("brightest_error", "MaxErr", ".1f", False, brightest_error)
    with metrics.METRICS.temporarily("brightest_error", toy):
        assert main(["evaluate", "--model", str(version_dir), "--data", str(root / "data"), "--json",
                     "--out", str(tmp_path), "--figure-slices", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    expected = [np.max(np.abs(np.clip((r["source"] + 1.0) * 127.5, 0, 255) - np.clip((r["target"] + 1.0) * 127.5, 0, 255)))
                for r in records]
    assert summary["input"]["brightest_error"]["mean"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert summary["output"]["brightest_error"]["n"] == 6
    assert "| MaxErr |" in (tmp_path / "metrics.md").read_text()
    assert "brightest_error" in json.loads((tmp_path / "metrics.json").read_text())["metric_names"]
    assert "brightest_error" not in metrics.METRICS


def test_classical_baselines_are_rows_of_the_records_report(setup, tmp_path, capsys):
    """The Gaussian and non-local-means rows: each patient's slices stacked, filtered in 3-D, and
    scored per slice like the model; the Gaussian row is re-derived here with scipy."""
    import re

    from scipy import ndimage

    root, _, version_dir, records = setup
    assert main(["evaluate", "--model", str(version_dir), "--data", str(root / "data"), "--json",
                 "--out", str(tmp_path), "--figure-slices", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert {"output", "input", "gaussian", "nlm"} <= set(summary)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    description = saved["baselines"]["gaussian"]["description"]
    assert "validation volume" in description
    sigma = float(re.search(r"σ = ([0-9.]+) voxels", description).group(1))
    psnr = []
    for key in PATIENTS:
        mine = sorted((r for r in records if r["key"] == key), key=lambda r: r["index"])
        filtered = ndimage.gaussian_filter(np.stack([r["source"] for r in mine]), sigma, mode="nearest")
        for image, r in zip(filtered, mine):
            error = np.mean((np.clip((image + 1) * 127.5, 0, 255) - np.clip((r["target"] + 1) * 127.5, 0, 255)) ** 2)
            psnr.append(10 * np.log10(255.0**2 / error))
    assert summary["gaussian"]["psnr"]["mean"] == pytest.approx(np.mean(psnr), rel=1e-4)
    assert summary["gaussian"]["psnr"]["mean"] > summary["input"]["psnr"]["mean"]  # noise σ 0.2 on a smooth target
    assert "| gaussian |" in (tmp_path / "metrics.md").read_text()
