"""Multi-source models in the CSV commands: `translate --inputs CSV` and `evaluate --pairs CSV
--model M` read the extra sources from the columns source_2, source_3, … (as the converter's pairs
CSV names them), report a row with an empty one by its line while the others go on, and refuse
extra columns that are not the model's sources.

One tiny untrained export (K = 1 context slice, PET source + CT `source_2`: 6 input channels) and
two patients written by the shared helpers serve every test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import read_volume
from medgan_tf.errors import UserError
from medgan_tf.serving.batch import read_inputs_csv

from helpers import export_two_source_model, make_run, write_two_source_patients  # noqa: E402

SLICES = 8  # the pet protocol's 3-D SSIM needs 7 slices


@pytest.fixture(scope="module")
def two_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("multisource")
    write_two_source_patients(root, count=2, slices=SLICES)
    return root, export_two_source_model(root / "model")


@pytest.fixture(scope="module")
def one_source_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("onesource")
    make_run(root / "run", "pet_denoise")
    return root / "run"


def test_extra_source_columns_are_read_in_number_order_relative_to_the_csv(tmp_path):
    (tmp_path / "list.csv").write_text("source_3,input,source_2\nmr.nii.gz,pet.nii.gz,sub/ct.nii.gz\n,b.nii,\n")
    first, second = read_inputs_csv(tmp_path / "list.csv", tmp_path / "out", "nifti")
    assert first.extra_inputs == ((tmp_path / "sub" / "ct.nii.gz").resolve(), (tmp_path / "mr.nii.gz").resolve())
    assert (first.line, second.line, second.extra_inputs) == (2, 3, (None, None))
    (tmp_path / "gap.csv").write_text("input,source_3\na.nii,c.nii\n")
    with pytest.raises(UserError, match="source_2, source_3, … without gaps"):
        read_inputs_csv(tmp_path / "gap.csv", tmp_path / "out", "nifti")


def test_translate_inputs_assembles_every_source_and_reports_the_broken_row(two_source, tmp_path, capsys):
    """Line 3 has no source_2: it fails with its line, lines 2 and 4 are written, exit 1. Each
    written volume equals a one-volume translation given the same CT with --extra-input."""
    from medgan_tf.serving.loading import load_model
    from medgan_tf.serving.translation import translate_file

    root, version = two_source
    (root / "rows.csv").write_text("patient_id,source,source_2\n"
                                   "patient0,p0_low.nii.gz,p0_ct.nii.gz\n"
                                   "patient1,p1_low.nii.gz,\n"
                                   "patient1b,p1_low.nii.gz,p1_ct.nii.gz\n")
    out = tmp_path / "out"
    code = main(["translate", "--model", str(version), "--inputs", str(root / "rows.csv"), "--output-dir", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["patient0.nii.gz", "patient1b.nii.gz"]
    assert (f"error: {root / 'p1_low.nii.gz'}: line 3: empty source_2 cell; this model takes 2 source volumes "
            "(source, source_2 (CT))") in captured.err
    assert "translated 2 of 3 volumes" in captured.out
    model = load_model(version)
    for name, patient in (("patient0", 0), ("patient1b", 1)):
        direct = translate_file(model, root / f"p{patient}_low.nii.gz", tmp_path / f"direct{patient}.nii.gz",
                                extra_inputs=[root / f"p{patient}_ct.nii.gz"], quiet=True).volume
        written = read_volume(out / f"{name}.nii.gz")
        assert written.shape == (64, 64, SLICES)
        np.testing.assert_allclose(written.array, direct.array, rtol=1e-5, atol=1e-5)


def test_translate_inputs_refuses_columns_that_are_not_the_models_sources(two_source, one_source_run, tmp_path,
                                                                         capsys):
    root, version = two_source
    csv_path = root / "pairs.csv"  # patient_id,source,target,source_2
    assert main(["translate", "--model", str(one_source_run), "--inputs", str(csv_path),
                 "--output-dir", str(tmp_path / "a"), "--quiet"]) == 2
    assert (f"--inputs {csv_path} has extra source columns (source_2) but this model takes one source volume"
            in capsys.readouterr().err)
    (tmp_path / "plain.csv").write_text(f"input\n{root / 'p0_low.nii.gz'}\n")
    assert main(["translate", "--model", str(version), "--inputs", str(tmp_path / "plain.csv"),
                 "--output-dir", str(tmp_path / "b"), "--quiet"]) == 2
    assert ("has 0 extra source column(s) (none) but this model takes 2 source volumes (source, source_2 (CT))"
            in capsys.readouterr().err)
    assert main(["translate", "--model", str(version), "--inputs", str(tmp_path / "plain.csv"), "--extra-input",
                 str(root / "p0_ct.nii.gz"), "--output-dir", str(tmp_path / "c"), "--quiet"]) == 2
    assert "with --inputs give the extra sources as the CSV's source_2, source_3, … columns" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")


def test_evaluate_pairs_with_a_two_source_model(two_source, one_source_run, tmp_path, capsys):
    """patient1 (line 3) has no source_2: reported with its line, patient0 scored. Its scores equal
    those of the prediction column holding translate --extra-input's output for the same CT."""
    from medgan_tf.serving.translation import translate_file

    root, version = two_source
    (root / "eval.csv").write_text("patient_id,target,source,source_2\n"
                                   "patient0,p0_full.nii.gz,p0_low.nii.gz,p0_ct.nii.gz\n"
                                   "patient1,p1_full.nii.gz,p1_low.nii.gz,\n")
    assert main(["evaluate", "--model", str(version), "--pairs", str(root / "eval.csv"), "--protocol", "pet",
                 "--out", str(tmp_path / "report"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["num_patients"] == 1 and [f["patient_id"] for f in payload["failures"]] == ["patient1"]
    assert ("patient patient1 (line 3): empty source_2 cell; the model takes 2 source volumes "
            "(source, source_2 (CT))") in payload["failures"][0]["reason"]
    assert any("the baselines use the first source only" in note for note in payload["notes"])

    translate_file(version, root / "p0_low.nii.gz", tmp_path / "pred.nii.gz", extra_inputs=[root / "p0_ct.nii.gz"],
                   quiet=True)
    (tmp_path / "pred.csv").write_text(f"patient_id,target,prediction\npatient0,{root / 'p0_full.nii.gz'},pred.nii.gz\n")
    assert main(["evaluate", "--pairs", str(tmp_path / "pred.csv"), "--task", "pet_denoise", "--protocol", "pet",
                 "--out", str(tmp_path / "report2"), "--json"]) == 0
    reference = json.loads(capsys.readouterr().out)["summary"]["model"]
    for metric in ("nrmse", "psnr", "ssim"):
        assert payload["summary"]["model"][metric]["mean"] == pytest.approx(reference[metric]["mean"], rel=1e-4)

    assert main(["evaluate", "--model", str(one_source_run), "--pairs", str(root / "eval.csv"),
                 "--out", str(tmp_path / "report3")]) == 2
    assert (f"--pairs {root / 'eval.csv'} has extra source columns (source_2) but this model takes one source volume"
            in capsys.readouterr().err)
