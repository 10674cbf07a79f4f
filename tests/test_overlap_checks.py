"""Two volumes are put side by side only where they overlap in world space: `translate
--extra-input` stops with the converter's one-line reason, and `evaluate --pairs` lists a patient
whose prediction, target or mask lies elsewhere as failed (by CSV line and column) and scores the
others."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import Volume, read_volume, write_nifti

from helpers import export_two_source_model, write_two_source_patients  # noqa: E402

SLICES = 8
FAR_MM = 5000.0  # 5 m away


@pytest.fixture(scope="module")
def two_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    write_two_source_patients(root, count=2, slices=SLICES)
    return root, export_two_source_model(root / "model")


def _moved(path, out, offset_mm=FAR_MM):
    volume = read_volume(path)
    affine = np.array(volume.affine, dtype=np.float64)
    affine[:3, 3] += offset_mm
    write_nifti(dataclasses.replace(volume, affine=affine), out)
    return out


def test_translate_refuses_an_extra_input_that_does_not_overlap_the_source(two_source, tmp_path, capsys):
    root, version = two_source
    far_ct = _moved(root / "p0_ct.nii.gz", tmp_path / "far_ct.nii.gz")
    output = tmp_path / "out.nii.gz"

    code = main(["translate", "--model", str(version), "--input", str(root / "p0_low.nii.gz"), "--extra-input",
                 str(far_ct), "--output", str(output), "--quiet"])

    err = capsys.readouterr().err.strip()
    assert code == 2 and not output.exists()
    assert err.count("\n") == 0 and "volumes do not overlap in world space (source_2 covers 0.0%" in err
    assert "Traceback" not in err


SHAPE = (24, 22, 20)
AFFINE = np.diag([1.5, 1.2, 2.0, 1.0])


def _write(path, array, affine=AFFINE, modality="CT", unit="HU"):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(Volume(np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=np.float64), modality, unit), path)


def _ct_and_mask():
    ct = np.full(SHAPE, -1000.0)
    ct[3:21, 3:19, 2:18] = 40.0
    ct[8:14, 6:12, 6:12] = 900.0
    mask = np.zeros(SHAPE)
    mask[3:21, 3:19, 2:18] = 1
    return ct, mask


def test_evaluate_lists_a_far_prediction_or_mask_as_failed_and_scores_the_others(tmp_path, capsys, caplog):
    """Line 3's prediction lies 5 m from its target, line 4's mask too, and line 5's prediction
    (in a folder named after the patient) is unreadable: three failures named by CSV line and
    column, no path or folder name in metrics.json / metrics.md, and line 2 is scored."""
    ct, body = _ct_and_mask()
    far = AFFINE.copy()
    far[:3, 3] += FAR_MM
    _write(tmp_path / "t.nii.gz", ct)
    _write(tmp_path / "p.nii.gz", ct + 10.0 * body)
    _write(tmp_path / "far_p.nii.gz", ct + 10.0 * body, far)
    _write(tmp_path / "m.nii.gz", body, modality="OT", unit="a.u.")
    _write(tmp_path / "far_m.nii.gz", body, far, modality="OT", unit="a.u.")
    (tmp_path / "Doe_Jane").mkdir()
    (tmp_path / "Doe_Jane" / "pred_7731.nii.gz").write_bytes(b"not a nifti")
    (tmp_path / "eval.csv").write_text("patient_id,target,prediction,mask\n"
                                       "good,t.nii.gz,p.nii.gz,m.nii.gz\n"
                                       "farpred,t.nii.gz,far_p.nii.gz,m.nii.gz\n"
                                       "farmask,t.nii.gz,p.nii.gz,far_m.nii.gz\n"
                                       "broken,t.nii.gz,Doe_Jane/pred_7731.nii.gz,m.nii.gz\n")

    code = main(["evaluate", "--pairs", str(tmp_path / "eval.csv"), "--task", "pet_ct", "--out", str(tmp_path / "r")])

    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [p["patient_id"] for p in report["per_patient"]] == ["good"]
    reasons = {f["patient_id"]: f["reason"] for f in report["failures"]}
    assert "line 3, column prediction: volumes do not overlap in world space (prediction covers 0.0% of the target" \
        in reasons["farpred"]
    assert reasons["farmask"].startswith("line 4, column mask: volumes do not overlap in world space")
    assert reasons["broken"].startswith("line 5, column prediction: cannot read")
    for name in ("metrics.json", "metrics.md"):
        text = (tmp_path / "r" / name).read_text()
        assert str(tmp_path) not in text and "Doe_Jane" not in text and "pred_7731" not in text, name
    assert "Doe_Jane" in caplog.text, "the terminal still names the file"


def test_a_report_reason_names_the_column_not_the_file(tmp_path):
    from pathlib import Path

    from medgan_tf.errors import UserError
    from medgan_tf.evaluation.cases import Row, report_reason

    folder = Path("/data/Doe_Jane")
    row = Row(7, "p7", {"target": folder / "ct_7731", "source": folder / "pet.nii.gz", "prediction": None, "mask": None,
                        "labels": None}, "", {}, [folder / "mr_0042.nii.gz"], tmp_path / "eval.csv")
    cases = {
        f"patient p7: the source {folder / 'pet.nii.gz'} is in Bq/ml but the target in SUV":
            "line 7: patient p7: the source <source column> is in Bq/ml but the target in SUV",
        f"patient p7: mask of {folder / 'ct_7731'} and {folder / 'mr_0042.nii.gz'}":
            "line 7: patient p7: mask of <target column> and <source_2 column>",
        f"patient p7: cannot read {folder / 'ct_7731' / 'IM0001.dcm'}":
            "line 7: patient p7: cannot read <target column>/IM0001.dcm",
        "patient p7: cannot read /elsewhere/Doe_Jane.nii": "line 7: see the terminal's message for this patient",
    }
    for message, expected in cases.items():
        assert report_reason(row, UserError(message)) == expected
