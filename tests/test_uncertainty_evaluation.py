"""`evaluate --pairs --tta`: how well the uncertainty predicts the error, worked out on hand-built
volumes (Spearman ρ, the error of the 5 % most uncertain voxels vs the rest), and on the command."""

import csv
import json
import math

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.evaluation.uncertainty import uncertainty_scores

from helpers import make_run


def test_an_uncertainty_that_ranks_the_errors_has_rho_1_and_the_errors_in_its_top_5_percent():
    target = np.zeros((10, 10, 2))
    error = np.arange(200, dtype=np.float64).reshape(target.shape)  # every voxel a different error
    scores = uncertainty_scores(target + error, target, 0.1 * error)
    assert scores["uncertainty_rho"] == pytest.approx(1.0)
    assert scores["error_uncertain"] == pytest.approx(np.mean(np.arange(190, 200)))  # top 10 of 200 voxels
    assert scores["error_certain"] == pytest.approx(np.mean(np.arange(190)))
    assert scores["uncertainty_mean"] == pytest.approx(0.1 * 99.5)
    backwards = uncertainty_scores(target + error, target, -error)
    assert backwards["uncertainty_rho"] == pytest.approx(-1.0)
    assert backwards["error_uncertain"] < backwards["error_certain"]


def test_only_the_mask_counts_and_a_constant_map_has_no_rho():
    target = np.zeros((4, 4, 4))
    output = target.copy()
    output[0] = 5.0  # errors only outside the mask
    mask = np.zeros(target.shape, bool)
    mask[1:] = True
    scores = uncertainty_scores(output, target, np.random.default_rng(0).random(target.shape), mask)
    assert scores["error_uncertain"] == 0.0 and scores["error_certain"] == 0.0
    assert math.isnan(scores["uncertainty_rho"])  # |error| is constant (0) in the mask


def test_evaluate_pairs_with_tta_reports_the_uncertainty_and_draws_it(tmp_path, capsys):
    from test_evaluate_volumes import _synthetic_csv

    csv_path = _synthetic_csv(tmp_path / "data", "pet_denoise", ["train", "test"])
    make_run(tmp_path / "run", "pet_denoise", image_size=32)
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--pairs", str(csv_path), "--protocol", "pet",
                 "--tta", "flips", "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    model = payload["summary"]["model"]
    for key in ("uncertainty_rho", "error_uncertain", "error_certain", "uncertainty_mean"):
        assert model[key]["mean"] is not None, key
    assert -1.0 <= model["uncertainty_rho"]["mean"] <= 1.0 and model["uncertainty_mean"]["mean"] > 0
    assert "uncertainty_rho" not in payload["summary"]["input"] or payload["summary"]["input"]["uncertainty_rho"]["mean"] is None
    assert "Spearman" in (out / "metrics.md").read_text()
    with open(out / "per_patient.csv") as handle:
        rows = {line["row"]: line for line in csv.DictReader(handle)}
    assert rows["model"]["uncertainty_rho"] != ""
    assert (out / "slices.png").stat().st_size > 0
