"""Adding an evaluation protocol is one registry entry, adding a metric one table entry: a toy
metric and a toy protocol registered here, and nowhere else, are scored by `evaluate_volumes`,
written in every report file, and offered by `evaluate --protocol`."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import Volume, write_nifti
from medgan_tf.evaluation.cases import read_evaluation_csv
from medgan_tf.evaluation.protocols import PROTOCOLS, Protocol
from medgan_tf.evaluation.volume_reports import write_volume_report
from medgan_tf.evaluation.volumes import evaluate_volumes
from medgan_tf.metrics import METRICS, Metric

SHAPE = (12, 10, 8)
AFFINE = np.diag([1.5, 1.2, 2.0, 1.0])  # one voxel: 3.6 mm³ = 0.0036 ml
THRESHOLD_HU = 100.0


def error_volume(prediction, target, mask=None, *, voxel_volume_ml: float, **_) -> dict[str, float]:
    """The toy protocol: volume in ml of the voxels inside the mask whose error exceeds 100 HU."""
    wrong = (np.abs(np.asarray(prediction) - np.asarray(target)) > THRESHOLD_HU) & (np.asarray(mask) > 0)
    return {"error_ml": float(wrong.sum() * voxel_volume_ml)}


@pytest.fixture
def toy_protocol():
    """The toy metric and protocol, registered for one test and removed afterwards."""
    metric = Metric("error_ml", "Error volume", ".4f", False, scale="volume", unit="ml")
    with METRICS.temporarily("error_ml", metric):
        protocol = Protocol("toy", error_volume, "voxels off by more than 100 HU", "this test",
                            columns=("error_ml",), masked=True, inputs=("voxel_volume_ml",))
        with PROTOCOLS.temporarily("toy", protocol):
            yield protocol
    assert "toy" not in PROTOCOLS and "error_ml" not in METRICS


def _write(path: Path, array, modality="CT", unit="HU") -> str:
    write_nifti(Volume(np.asarray(array, dtype=np.float32), AFFINE, modality, unit), path)
    return path.name


def _pairs(root: Path) -> tuple[Path, list[float]]:
    """Two patients' CT, prediction and body mask; returns the CSV and each patient's error
    volume in ml, by hand."""
    ct = np.full(SHAPE, -1000.0)
    ct[2:10, 2:8, 1:7] = 40.0
    mask = np.zeros(SHAPE)
    mask[2:10, 2:8, 1:7] = 1
    rows, expected = [], []
    for index, wrong_slices in enumerate((2, 5)):
        prediction = ct.copy()
        prediction[2:2 + wrong_slices, 2:8, 1:7] += 150.0  # inside the mask: counted
        prediction[0, 0, 0] += 500.0  # outside the mask: not counted
        rows.append([f"p{index}", _write(root / f"t{index}.nii.gz", ct), _write(root / f"p{index}.nii.gz", prediction),
                     _write(root / f"m{index}.nii.gz", mask, "OT", "a.u.")])
        expected.append(wrong_slices * 6 * 6 * 0.0036)
    path = root / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "target", "prediction", "mask"])
        writer.writerows(rows)
    return path, expected


def test_a_registered_protocol_and_metric_are_scored_and_reported(toy_protocol, tmp_path):
    csv_path, expected = _pairs(tmp_path)
    result = evaluate_volumes(read_evaluation_csv(csv_path), "pet_ct", "toy")
    assert result.metric_keys() == ["error_ml"]
    assert [entry["scores"]["model"]["error_ml"] for entry in result.per_patient] == pytest.approx(expected)
    assert {entry["mask"] for entry in result.per_patient} == {"given"}
    assert result.summary()["model"]["error_ml"]["mean"] == pytest.approx(np.mean(expected))

    paths = write_volume_report(result, tmp_path / "report", title="toy")
    markdown = Path(paths["markdown"]).read_text()
    assert "Protocol **toy**: voxels off by more than 100 HU (this test)" in markdown
    assert "| Row | Error volume (ml) |" in markdown
    assert f"| model | {np.mean(expected):.4f} ± {np.std(expected, ddof=1):.4f} (median " in markdown
    assert json.loads(Path(paths["json"]).read_text())["metric_names"] == ["error_ml"]
    assert Path(paths["csv"]).read_text().splitlines()[0] == "patient_id,row,error_ml,mask"
    assert "error_ml" not in PROTOCOLS.get("paper").metrics  # a volume metric is no per-slice column


def test_the_command_offers_a_registered_protocol(toy_protocol, tmp_path, capsys):
    csv_path, expected = _pairs(tmp_path)
    code = main(["evaluate", "--pairs", str(csv_path), "--task", "pet_ct", "--protocol", "toy",
                 "--out", str(tmp_path / "report"), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["protocol"] == "toy"
    assert payload["summary"]["model"]["error_ml"]["median"] == pytest.approx(np.median(expected))
