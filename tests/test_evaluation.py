"""Evaluation reports: scoring with fake predict functions, grouping, summaries and report files."""

import json
import math

import numpy as np
import pytest

from medgan_tf import metrics
from medgan_tf.evaluation import figures, reports, scoring, tables
from medgan_tf.errors import UserError

SIZE = 48  # the smallest convenient size at which all four VIF scales have valid windows
SLICES_PER_PATIENT = {"patient-b": 2, "patient-a": 3}


def _records():
    """5 slices of 2 patients: smooth targets in [-0.8, 0.8], sources = target + noise."""
    rng = np.random.default_rng(11)
    rows, columns = np.mgrid[:SIZE, :SIZE]
    records = []
    for patient, count in SLICES_PER_PATIENT.items():
        for slice_index in range(count):
            target = 0.8 * np.sin(columns / (4.0 + slice_index)) * np.cos(rows / 6.0)
            source = target + rng.normal(0, 0.1, target.shape)
            records.append(
                {
                    "source": source[..., None].astype(np.float32),
                    "target": target[..., None].astype(np.float32),
                    "patient_key": patient,
                    "slice_index": slice_index,
                    "scale": 1000.0,  # stands in for normalization parameters
                }
            )
    return records


def _oracle(records):
    """predict_fn that returns each slice's target, found by its source."""
    targets = {record["source"].tobytes(): record["target"] for record in records}
    return lambda batch: np.stack([targets[source.tobytes()] for source in batch])


def _denormalize(image, record):
    return image.astype(np.float64) * record["scale"]


def _direct_scores(candidate, target):
    return metrics.slice_metrics(metrics.to_255(candidate), metrics.to_255(target))


def test_oracle_scores_perfectly_and_input_row_is_scored_directly():
    records = _records()
    result = scoring.evaluate_slices(records, _oracle(records), batch_size=2)
    summary = result.summary()
    assert summary["output"]["ssim"]["mean"] == pytest.approx(1.0, abs=1e-12)
    assert summary["output"]["mse"] == {"mean": 0.0, "sd": 0.0, "median": 0.0, "n": 5, "n_infinite": 0}
    assert summary["output"]["psnr"] == {"mean": math.inf, "sd": None, "median": math.inf, "n": 0, "n_infinite": 5}
    for record, scores in zip(records, result.slices):
        expected = _direct_scores(record["source"], record["target"])
        for name, value in expected.items():
            assert scores.input[name] == value
        assert scores.input["lpips"] is None and scores.output["lpips"] is None
    assert summary["input"]["ssim"]["mean"] < 0.99


def test_identity_model_scores_like_the_input():
    records = _records()
    result = scoring.evaluate_slices(records, lambda batch: batch, batch_size=3)
    for scores in result.slices:
        assert scores.output == scores.input


def test_per_patient_grouping_and_overall_summary():
    records = _records()
    result = scoring.evaluate_slices(iter(records), lambda batch: 0.5 * batch, batch_size=4)
    per_patient = result.per_patient()
    assert list(per_patient) == ["patient-a", "patient-b"]  # sorted
    for patient, count in SLICES_PER_PATIENT.items():
        assert per_patient[patient]["num_slices"] == count
        ssims = [
            _direct_scores(0.5 * r["source"], r["target"])["ssim"] for r in records if r["patient_key"] == patient
        ]
        assert per_patient[patient]["output"]["ssim"]["mean"] == pytest.approx(np.mean(ssims), rel=1e-12)
        assert per_patient[patient]["output"]["ssim"]["sd"] == pytest.approx(np.std(ssims, ddof=1), rel=1e-9)
    all_mse = [_direct_scores(0.5 * r["source"], r["target"])["mse"] for r in records]
    overall = result.summary()["output"]["mse"]
    assert overall["mean"] == pytest.approx(np.mean(all_mse), rel=1e-12)
    assert overall["n"] == 5
    assert [(s.patient_key, s.slice_index) for s in result.slices] == [
        (r["patient_key"], r["slice_index"]) for r in records
    ]


def test_predict_fn_receives_batches_of_the_requested_size():
    records = _records()
    seen_shapes = []

    def predict(batch):
        seen_shapes.append(batch.shape)
        assert batch.dtype == np.float32
        return {"output": batch}  # a SavedModel signature returns a dict

    scoring.evaluate_slices(records, predict, batch_size=2)
    assert seen_shapes == [(2, SIZE, SIZE, 1), (2, SIZE, SIZE, 1), (1, SIZE, SIZE, 1)]


def test_mae_in_physical_units():
    records = _records()
    shift = 0.1
    result = scoring.evaluate_slices(
        records, lambda batch: _oracle(records)(batch) + shift, 5, _denormalize, unit="HU"
    )
    # output = target + 0.1 everywhere → |Δ| = 0.1 × scale 1000 = 100 HU on every pixel.
    assert result.summary()["output"]["mae"]["mean"] == pytest.approx(100.0, rel=1e-5)
    assert result.summary()["input"]["mae"]["mean"] is None  # source units unknown by default
    with_input = scoring.evaluate_slices(
        records, lambda batch: batch, 5, _denormalize, unit="HU", source_in_target_units=True
    )
    expected = np.mean([np.mean(np.abs(r["source"] - r["target"])) * 1000 for r in records])
    assert with_input.summary()["input"]["mae"]["mean"] == pytest.approx(expected, rel=1e-5)


def test_write_report_files_and_json_round_trip(tmp_path):
    records = _records()
    result = scoring.evaluate_slices(records, _oracle(records), 2, _denormalize, unit="HU", num_examples=3)
    paths = reports.write_report(result, tmp_path / "report", title="PET denoising", figure_slices=2)
    assert set(paths) == {"json", "markdown", "figure"}

    def reject_constant(name):
        raise AssertionError(f"metrics.json contains {name}")

    text = open(paths["json"], encoding="utf-8").read()
    data = json.loads(text, parse_constant=reject_constant)
    assert data["title"] == "PET denoising"
    assert data["unit"] == "HU"
    assert data["lpips"] == {"available": False, "reason": metrics.lpips_availability()[1]}
    assert data["slices"][0]["output"]["psnr"] is None  # +inf written as null
    assert data["summary"]["output"]["psnr"]["mean"] is None
    assert data["per_patient"]["patient-a"]["num_slices"] == 3
    rebuilt = scoring.EvaluationResult.from_dict(data)
    assert rebuilt.slices == result.slices
    assert rebuilt.summary() == result.summary()
    assert rebuilt.to_dict() == result.to_dict()

    markdown = open(paths["markdown"], encoding="utf-8").read()
    assert "| Method | SSIM | PSNR(dB) | MSE | VIF | UQI | LPIPS | MAE (HU) |" in markdown
    assert "| model | 1.0000 ± 0.0000 | ∞ | 0.00 ± 0.00 |" in markdown
    assert "| input (untouched) |" in markdown and "unavailable" in markdown

    with open(paths["figure"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    two_rows = matplotlib.image.imread(paths["figure"])
    reports.write_report(result, tmp_path / "three", title="t", figure_slices=3)
    three_rows = matplotlib.image.imread(tmp_path / "three" / "figure.png")
    assert three_rows.shape[0] > two_rows.shape[0] and three_rows.shape[1] == two_rows.shape[1]
    assert "figure" not in reports.write_report(result, tmp_path / "none", title="t", figure_slices=0)


def test_examples_are_a_deterministic_sorted_sample():
    records = _records()
    first = scoring.evaluate_slices(records, lambda batch: batch, 2, num_examples=3)
    second = scoring.evaluate_slices(records, lambda batch: batch, 5, num_examples=3)
    keys = [(e.patient_key, e.slice_index) for e in first.examples]
    assert len(keys) == 3 and keys == sorted(keys)
    assert keys == [(e.patient_key, e.slice_index) for e in second.examples]
    assert first.examples[0].source.shape == (SIZE, SIZE)


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1.0, 2.0, 3.0], {"mean": 2.0, "sd": 1.0, "median": 2.0, "n": 3, "n_infinite": 0}),
        ([math.inf, 2.0, 4.0], {"mean": 3.0, "sd": math.sqrt(2.0), "median": 4.0, "n": 2, "n_infinite": 1}),
        ([None, 5.0], {"mean": 5.0, "sd": None, "median": 5.0, "n": 1, "n_infinite": 0}),
        ([None, None], {"mean": None, "sd": None, "median": None, "n": 0, "n_infinite": 0}),
        ([math.inf], {"mean": math.inf, "sd": None, "median": math.inf, "n": 0, "n_infinite": 1}),
    ],
)
def test_summarize(values, expected):
    summary = scoring.summarize(values)
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        if value is None:
            assert summary[key] is None, key
        else:
            assert summary[key] == pytest.approx(value, rel=1e-12), key


def test_markdown_table_for_several_methods():
    rows = {
        "pix2pix": {"ssim": {"mean": 0.9017, "sd": 0.01, "n": 4, "n_infinite": 0}},
        "MedGAN": {"ssim": {"mean": 0.916, "sd": None, "n": 1, "n_infinite": 0},
                   "psnr": {"mean": 24.6234, "sd": 1.5, "n": 4, "n_infinite": 0}},
    }
    table = tables.markdown_table(rows, unit="SUV").splitlines()
    assert table[0] == "| Method | SSIM | PSNR(dB) | MSE | VIF | UQI | LPIPS | MAE (SUV) |"
    assert table[2] == "| pix2pix | 0.9017 ± 0.0100 | n/a | n/a | n/a | n/a | n/a | n/a |"
    assert table[3] == "| MedGAN | 0.9160 | 24.62 ± 1.50 | n/a | n/a | n/a | n/a | n/a |"
    assert tables.markdown_table(rows, columns=("ssim",), show_sd=False).splitlines()[2] == "| pix2pix | 0.9017 |"
    some_exact = {"model": {"psnr": {"mean": 30.0, "sd": 1.0, "n": 3, "n_infinite": 1}}}
    assert tables.markdown_table(some_exact, columns=("psnr",)).splitlines()[2] == "| model | 30.00 ± 1.00 (1×∞) |"


def test_comparison_figure(tmp_path):
    records = _records()[:3]
    inputs = [r["source"] for r in records]
    targets = [r["target"] for r in records]
    path = tmp_path / "comparison.png"
    figures.save_comparison_figure(
        path, inputs=inputs, targets=targets, outputs={"pix2pix": inputs, "MedGAN": targets},
        column_titles=["a", "b", "c"], title="Fig. 5",
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="'MedGAN' has 2 slices; expected 3"):
        figures.save_comparison_figure(path, inputs=inputs, targets=targets, outputs={"MedGAN": targets[:2]})


def test_clear_errors():
    records = _records()
    with pytest.raises(UserError, match=r"returned shape \(2, 24, 24, 1\) for an input batch of shape \(2, 48, 48, 1\)"):
        scoring.evaluate_slices(records, lambda batch: batch[:, ::2, ::2], 2)
    with pytest.raises(UserError, match=r"missing \['patient_key'\]"):
        scoring.evaluate_slices([{"source": 0, "target": 0, "slice_index": 0}], lambda b: b, 1)
    with pytest.raises(UserError, match="empty"):
        scoring.evaluate_slices([], lambda b: b, 1)
    with pytest.raises(UserError, match="batch_size"):
        scoring.evaluate_slices(records, lambda b: b, 0)


def test_a_metric_whose_window_exceeds_the_slice_is_left_out_not_a_traceback():
    """VIF needs 41×41 slices: on 32×32 records (`evaluate --data` of a small preset) it is n/a."""
    from medgan_tf.evaluation.scoring import score_slice

    rng = np.random.default_rng(0)
    target = rng.uniform(-1, 1, (32, 32)).astype(np.float32)
    scores = score_slice(target * 0.9, target, {}, None)
    assert scores["vif"] is None and scores["lpips"] is None
    assert 0 < scores["ssim"] < 1 and np.isfinite(scores["psnr"])
