"""Whole-volume evaluation (`medgan-tf evaluate --pairs`): golden values worked out here on
hand-built NIfTI volumes scored through the CSV path (reading, target grid, masks, labels, SUV),
the classical baselines, and the command end to end on the built-in synthetic data."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import Volume, write_nifti
from medgan_tf.errors import UserError
from medgan_tf.evaluation import baselines as B
from medgan_tf.evaluation.cases import read_evaluation_csv
from medgan_tf import tasks
from medgan_tf.evaluation.volumes import evaluate_volumes

from helpers import make_run, oblique_affine  # noqa: E402  (tests/ is on sys.path)

SHAPE = (24, 22, 20)
AFFINE = np.diag([1.5, 1.2, 2.0, 1.0])


def _write(path: Path, array, affine=AFFINE, modality="CT", unit="HU") -> str:
    write_nifti(Volume(np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=np.float64), modality, unit), path)
    return path.name


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _ct_and_mask():
    """An integer-HU CT: air −1000 around a box 'body' of soft tissue with a bone block; the mask
    is the body box."""
    ct = np.full(SHAPE, -1000.0)
    ct[3:21, 3:19, 2:18] = 40.0
    ct[8:14, 6:12, 6:12] = 900.0
    mask = np.zeros(SHAPE)
    mask[3:21, 3:19, 2:18] = 1
    return ct, mask


def _score(tmp_path: Path, prediction, *, protocol="synthrad2023", mask=True, target=None, extra=None, task="pet_ct",
           prediction_affine=AFFINE):
    ct, body = _ct_and_mask()
    target = ct if target is None else target
    modality = tasks.get(task).target
    kind = {"modality": modality.dicom, "unit": "Bq/ml" if modality.key == "PT" else modality.unit}
    header, row = ["patient_id", "target", "prediction"], ["p1", _write(tmp_path / "t.nii.gz", target, **kind),
                                                          _write(tmp_path / "p.nii.gz", prediction, prediction_affine, **kind)]
    if mask:
        header.append("mask")
        row.append(_write(tmp_path / "m.nii.gz", body, modality="OT", unit="a.u."))
    for column, value in (extra or {}).items():
        header.append(column)
        row.append(value)
    rows = read_evaluation_csv(_csv(tmp_path / "eval.csv", header, [row]))
    result = evaluate_volumes(rows, task, protocol)
    return result.per_patient[0]["scores"]["model"], result


def test_constant_offset_inside_the_mask_gives_mae_50_and_its_psnr(tmp_path):
    ct, body = _ct_and_mask()
    scores, result = _score(tmp_path, ct + 50.0 * body)
    assert scores["mae"] == pytest.approx(50.0, abs=1e-9)
    # PSNR over the masked voxels, every one off by 50 HU, data range 3000 − (−1024) = 4024.
    assert scores["psnr"] == pytest.approx(10 * math.log10(4024.0**2 / 50.0**2), abs=1e-9)
    assert scores["ssim"] < 1.0
    assert result.per_patient[0]["mask"] == "given"


def test_changes_outside_the_mask_change_nothing(tmp_path):
    ct, body = _ct_and_mask()
    inside_only = ct + 50.0 * body
    outside_too = inside_only + 700.0 * (1 - body)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _ = _score(tmp_path / "a", inside_only)
    second, _ = _score(tmp_path / "b", outside_too)
    assert first == second and first["mae"] == pytest.approx(50.0)


def test_perfect_output_scores_ssim_1_and_ms_ssim_1(tmp_path):
    ct, _ = _ct_and_mask()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    scores_2023, _ = _score(tmp_path / "a", ct)
    scores_2025, _ = _score(tmp_path / "b", ct, protocol="synthrad2025")
    assert scores_2023["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores_2025["ms_ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores_2023["mae"] == 0.0 and math.isinf(scores_2023["psnr"])


def test_without_a_mask_the_body_mask_is_computed_and_reported(tmp_path):
    ct, body = _ct_and_mask()
    scores, result = _score(tmp_path, ct + 50.0 * body, mask=False)
    # The computed mask (HU > −300, largest component, holes filled) is exactly the body box.
    assert scores["mae"] == pytest.approx(50.0, abs=1e-9)
    assert result.per_patient[0]["mask"].startswith("computed: HU > -300")


def test_lesion_scaled_by_1_1_gives_suvmax_error_10_percent(tmp_path):
    pet = np.full(SHAPE, 2000.0)  # Bq/ml
    pet[8:12, 8:12, 8:12] = 9000.0
    labels = np.zeros(SHAPE)
    labels[4:20, 4:18, 4:16] = 1  # an organ around the lesion
    labels[8:12, 8:12, 8:12] = 2  # the lesion
    prediction = pet.copy()
    prediction[labels == 2] *= 1.1
    factor_columns = {"labels": _write(tmp_path / "l.nii.gz", labels, modality="OT", unit="a.u."),
                      "weight_kg": "70", "injected_dose_bq": "3.7e8", "half_life_s": "6586.2", "delay_s": "3600"}
    scores, result = _score(tmp_path, prediction, protocol="pet", mask=False, target=pet, extra=factor_columns,
                            task="pet_denoise")
    assert scores["suvmax_2"] == pytest.approx(10.0, abs=1e-9)
    assert scores["suvmean_2"] == pytest.approx(10.0, abs=1e-9)
    assert scores["activity_2"] == pytest.approx(10.0, abs=1e-9)
    assert scores["suvmax_1"] == pytest.approx(0.0, abs=1e-9)  # organ untouched
    n_organ, n_lesion = (labels == 1).sum(), (labels == 2).sum()
    assert scores["suvmean_1"] == 0.0
    assert scores["activity_1"] == 0.0 and n_organ > 0
    # SUV = Bq/ml × weight [g] / decayed dose, worked out by hand for the Bland–Altman values.
    factor = 70_000.0 / (3.7e8 * 2.0 ** (-3600 / 6586.2))
    region = next(r for r in result.regions if r["label"] == 2)
    assert region["target_suvmean"] == pytest.approx(9000.0 * factor, rel=1e-6)
    assert region["model_suvmean"] == pytest.approx(9900.0 * factor, rel=1e-6)
    assert n_lesion == 64


def test_prediction_on_another_grid_is_resampled_by_world_coordinates(tmp_path):
    """A linear function of world position is reproduced exactly by trilinear resampling, so a
    prediction written on an oblique grid covering the target scores MAE 0 inside the mask."""
    ct, body = _ct_and_mask()
    centre = AFFINE[:3, :3] @ (np.array(SHAPE) - 1) / 2

    def field(shape, affine):
        ijk = np.stack(np.indices(shape), axis=-1).reshape(-1, 3)
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        return (3.0 * world[:, 0] - 2.0 * world[:, 1] + 1.5 * world[:, 2]).reshape(shape)

    oblique = oblique_affine(spacing=(0.8, 0.9, 1.1), origin=(0.0, 0.0, 0.0))
    oblique[:3, 3] = centre - oblique[:3, :3] @ np.full(3, 79 / 2)  # 80³ voxels centred on the target
    target = field(SHAPE, AFFINE) - 1000.0  # −1050 … −840 HU: air and lung, as a CT holds
    scores, _ = _score(tmp_path, field((80, 80, 80), oblique) - 1000.0, target=target, prediction_affine=oblique)
    assert scores["mae"] == pytest.approx(0.0, abs=2e-3)
    assert ct.shape == target.shape


def test_paper_protocol_on_volumes_perfect_output(tmp_path):
    ct, _ = _ct_and_mask()
    scores, _ = _score(tmp_path, ct, protocol="paper", mask=False)
    assert scores["ssim"] == pytest.approx(1.0) and scores["mse"] == 0.0 and math.isinf(scores["psnr"])
    assert "vif" not in scores  # 22×20 slices: VIF needs 41×41


def test_csv_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_evaluation_csv(tmp_path / "missing.csv")
    with pytest.raises(UserError, match="source or prediction"):
        read_evaluation_csv(_csv(tmp_path / "a.csv", ["patient_id", "target"], [["p", "t.nii"]]))
    with pytest.raises(UserError, match="split 'holdout'"):
        read_evaluation_csv(_csv(tmp_path / "b.csv", ["patient_id", "target", "source", "split"],
                                 [["p", "t.nii", "s.nii", "holdout"]]))
    rows = read_evaluation_csv(_csv(tmp_path / "c.csv", ["patient_id", "target", "prediction"],
                                    [["p", "sub/t.nii", "p.nii"]]))
    assert rows[0].paths["target"] == (tmp_path / "sub" / "t.nii").resolve()


def test_an_unreadable_patient_is_reported_and_the_others_scored(tmp_path):
    ct, body = _ct_and_mask()
    _write(tmp_path / "t.nii.gz", ct)
    _write(tmp_path / "p.nii.gz", ct + 10.0 * body)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    rows = read_evaluation_csv(_csv(tmp_path / "e.csv", ["patient_id", "target", "prediction"],
                                    [["good", "t.nii.gz", "p.nii.gz"], ["bad", "t.nii.gz", "broken.nii.gz"]]))
    result = evaluate_volumes(rows, "pet_ct", "synthrad2023")
    assert [e["patient_id"] for e in result.per_patient] == ["good"]
    assert result.failures[0]["patient_id"] == "bad" and "cannot read prediction" in result.failures[0]["reason"]


def test_default_protocol_per_task():
    assert tasks.get("pet_ct").protocol == "synthrad2023"
    assert tasks.get("pet_denoise").protocol == "pet"
    assert tasks.get("mr_motion").protocol == "paper"
    assert [tasks.get(name).protocol for name in ("mr_ct", "cbct_ct", "ct_denoise")] == ["synthrad2023"] * 3


# --------------------------------------------------------------------------- baselines


def test_gaussian_and_nlm_beat_the_noisy_input_and_describe_their_choice():
    rng = np.random.default_rng(0)
    z, y, x = np.indices((12, 32, 32))
    clean = 1000.0 + 800.0 * np.sin(x / 5.0) * np.cos(y / 6.0) + 20.0 * z

    def noisy():
        return clean + rng.normal(0, 150.0, clean.shape)

    fitted = B.fit_baselines("pet_denoise", validation=[(noisy(), clean)])
    assert [b.name for b in fitted] == ["gaussian", "nlm"]
    test = noisy()
    for baseline in fitted:
        assert B.nrmse(baseline.apply(test), clean) < 0.7 * B.nrmse(test, clean), baseline.name
        assert "1 validation volume" in baseline.describe()
    gaussian = fitted[0]
    scores = gaussian.parameters["nrmse_by_sigma"]
    assert gaussian.parameters["sigma_voxels"] == min(scores, key=scores.get)


def test_baselines_without_validation_say_what_they_were_chosen_on():
    clean = np.ones((8, 16, 16))
    fitted = B.fit_baselines("pet_denoise", train=[(clean + 0.1 * np.random.default_rng(1).normal(size=clean.shape), clean)])
    assert "no validation volumes" in fitted[0].describe()


def test_intensity_map_recovers_a_monotone_relation_fitted_on_training_pairs():
    rng = np.random.default_rng(2)
    source = rng.uniform(0, 10_000, (10, 20, 20))
    target = np.where(source < 5000, -1000 + 0.2 * source, 0.5 * source - 2500)  # piecewise linear
    (mapping,) = B.fit_baselines("pet_ct", train=[(source, target)])
    test = rng.uniform(500, 9500, (4, 10, 10))
    expected = np.where(test < 5000, -1000 + 0.2 * test, 0.5 * test - 2500)
    assert np.max(np.abs(mapping.apply(test) - expected)) < 60.0  # knots every ~310 Bq/ml, curvature at 5000
    assert np.median(np.abs(mapping.apply(test) - expected)) < 5.0
    # The baselines follow the modality pair: two modalities → the intensity map; one → the filters.
    for name in ("mr_ct", "cbct_ct"):
        assert [b.name for b in B.fit_baselines(name, train=[(source, target)])] == ["intensity_map"]
    small = source[:4, :10, :10]
    for name in ("mr_motion", "ct_denoise"):
        assert [b.name for b in B.fit_baselines(name, validation=[(small, small)])] == ["gaussian", "nlm"]
    with pytest.raises(UserError, match="no training or validation"):
        B.fit_baselines("pet_denoise")


# --------------------------------------------------------------------------- the command


def _synthetic_csv(root: Path, task: str, splits: list[str], labels: bool = False) -> Path:
    """The built-in synthetic pairs with a split column (and, with `labels`, a two-region label
    map on each target's grid: the brightest 1 % of voxels and the rest above the median)."""
    from medgan_tf.data.io import read_volume
    from medgan_tf.data.synthetic import write_synthetic_dataset

    path = write_synthetic_dataset(task, root, patients=len(splits), field_of_view_mm=64.0)
    rows = list(csv.reader(open(path)))
    header, body = rows[0] + ["split"], [row + [split] for row, split in zip(rows[1:], splits)]
    if labels:
        header.append("labels")
        for row in body:
            target = read_volume(root / row[2])
            values = target.array
            label_map = np.where(values > np.percentile(values, 99), 2, np.where(values > np.median(values), 1, 0))
            row.append(_write(root / f"{row[0]}-labels.nii.gz", label_map, target.affine, "OT", "a.u."))
    _csv(path, header, body)
    return path


@pytest.mark.parametrize("task, protocol, rows", [
    ("pet_ct", "synthrad2023", ["model", "intensity_map"]),
    ("pet_denoise", "pet", ["model", "input", "gaussian", "nlm"]),
])
def test_evaluate_model_on_pairs_writes_the_report_with_baselines(tmp_path, capsys, task, protocol, rows):
    csv_path = _synthetic_csv(tmp_path / "data", task, ["train", "val", "test"], labels=protocol == "pet")
    make_run(tmp_path / "run", task, image_size=32)
    out = tmp_path / "report"
    code = main(["evaluate", "--model", str(tmp_path / "run"), "--pairs", str(csv_path), "--protocol", protocol,
                 "--out", str(out), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["protocol"] == protocol and payload["rows"] == rows and payload["num_patients"] == 1
    assert list(payload["summary"]) == rows
    for name in ("metrics.json", "per_patient.csv", "metrics.md", "slices.png", "histogram.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    markdown = (out / "metrics.md").read_text()
    for row in rows:
        assert f"| {row} |" in markdown
    with open(out / "per_patient.csv") as handle:
        lines = list(csv.DictReader(handle))
    assert [line["row"] for line in lines] == rows and lines[0]["patient_id"].endswith("002")
    if protocol == "pet":  # per-region % errors and the Bland–Altman plot of the regions' SUVmean
        assert {"suvmean_1", "suvmax_2", "activity_2"} <= set(payload["summary"]["model"])
        assert (out / "bland_altman.png").stat().st_size > 0 and "## Regions" in markdown


def test_evaluate_prediction_column_without_model(tmp_path, capsys):
    ct, body = _ct_and_mask()
    rows = []
    for index, offset in enumerate((50.0, 30.0)):
        _write(tmp_path / f"t{index}.nii.gz", ct)
        _write(tmp_path / f"p{index}.nii.gz", ct + offset * body)
        rows.append([f"p{index}", f"t{index}.nii.gz", f"p{index}.nii.gz"])
    _write(tmp_path / "p0.nii.gz", ct + 50.0 * body)
    masks = tmp_path / "masks"
    masks.mkdir()
    for index in range(2):
        _write(masks / f"p{index}.nii.gz", body, modality="OT", unit="a.u.")
    csv_path = _csv(tmp_path / "eval.csv", ["patient_id", "target", "prediction"], rows)
    code = main(["evaluate", "--pairs", str(csv_path), "--task", "pet_ct", "--mask-dir", str(masks),
                 "--out", str(tmp_path / "r"), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    mae = payload["summary"]["model"]["mae"]
    assert payload["protocol"] == "synthrad2023" and payload["model"] is None
    assert mae["mean"] == pytest.approx(40.0) and mae["median"] == pytest.approx(40.0)
    assert mae["sd"] == pytest.approx(np.std([50.0, 30.0], ddof=1))
    assert "input" not in payload["summary"]  # no source column: no input or baseline rows
    assert (tmp_path / "r" / "metrics.md").read_text().count("Mask: given") == 1


def test_evaluate_refuses_volume_protocols_on_records_and_pairs_without_task(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path), "--protocol", "pet"]) == 2
    assert "--pairs" in capsys.readouterr().err
    csv_path = _csv(tmp_path / "e.csv", ["patient_id", "target", "prediction"], [["p", "t.nii", "p.nii"]])
    assert main(["evaluate", "--pairs", str(csv_path)]) == 2
    assert "--task" in capsys.readouterr().err


def test_pet_target_from_dicom_is_scored_in_suv_from_its_header(tmp_path):
    """A DICOM PET in Bq/ml whose header carries weight, dose, half-life and times is read in
    SUV; the regions' SUVmean is the activity times the body-weight factor worked out here."""
    from pydicom.dataset import Dataset

    from helpers import write_dicom_series

    activity = np.full((20, 20, 12), 2000.0)
    activity[8:12, 8:12, 4:8] = 9000.0
    labels = np.zeros(activity.shape)
    labels[8:12, 8:12, 4:8] = 2
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    drug = Dataset()
    drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = "3.7e8", "6586.2"
    drug.RadiopharmaceuticalStartTime = "100000"
    write_dicom_series(tmp_path / "pet", activity, affine, modality="PT", intercept=0.0, extra={
        "Units": "BQML", "PatientWeight": "70", "SeriesTime": "110000", "DecayCorrection": "START",
        "RadiopharmaceuticalInformationSequence": [drug]})
    factor = 70_000.0 / (3.7e8 * 2.0 ** (-3600 / 6586.2))
    prediction = activity * factor
    prediction[labels == 2] *= 1.1
    _write(tmp_path / "p.nii.gz", prediction, affine, "PT", "SUV")
    _write(tmp_path / "l.nii.gz", labels, affine, "OT", "a.u.")
    rows = read_evaluation_csv(_csv(tmp_path / "e.csv", ["patient_id", "target", "prediction", "labels"],
                                    [["p", "pet", "p.nii.gz", "l.nii.gz"]]))
    result = evaluate_volumes(rows, "pet_denoise", "pet")
    entry = result.per_patient[0]
    assert result.unit == "SUV" and entry["suv"].startswith("the target is in SUV")
    assert entry["scores"]["model"]["suvmax_2"] == pytest.approx(10.0, abs=1e-3)
    region = result.regions[0]
    assert region["target_suvmean"] == pytest.approx(9000.0 * factor, rel=1e-5)


def test_an_unreadable_training_row_is_left_out_of_the_baselines(tmp_path):
    rng = np.random.default_rng(3)
    clean = 1000.0 + 500.0 * np.sin(np.indices(SHAPE)[0] / 4.0)
    for name in ("a", "b"):
        _write(tmp_path / f"{name}-t.nii.gz", clean, modality="PT", unit="Bq/ml")
        _write(tmp_path / f"{name}-s.nii.gz", clean + rng.normal(0, 100.0, SHAPE), modality="PT", unit="Bq/ml")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    header = ["patient_id", "target", "source", "prediction", "split"]
    rows = read_evaluation_csv(_csv(tmp_path / "e.csv", header, [
        ["t", "a-t.nii.gz", "broken.nii.gz", "", "train"],
        ["v", "a-t.nii.gz", "a-s.nii.gz", "", "val"],
        ["x", "b-t.nii.gz", "b-s.nii.gz", "b-t.nii.gz", "test"]]))
    result = evaluate_volumes(rows, "pet_denoise", "pet")
    assert result.rows == ["model", "input", "gaussian", "nlm"]
    assert any(note.startswith("not used for the baselines (train row)") for note in result.notes)
    assert "1 validation volume" in result.baselines["gaussian"]
    scores = result.per_patient[0]["scores"]
    assert scores["model"]["nrmse"] == 0.0 and scores["gaussian"]["nrmse"] < scores["input"]["nrmse"]
