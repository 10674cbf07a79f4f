"""`translate --inputs CSV --output-dir DIR`: one model load, every row translated, a failing row
reported by path and reason while the rest goes on, exit status 1 when any failed."""

import numpy as np
import pydicom
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import Volume, read_volume, write_nifti
from medgan_tf.errors import UserError
from medgan_tf.serving import export
from medgan_tf.serving.batch import read_inputs_csv

from helpers import make_run, write_dicom_series


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    make_run(root / "run", "pet_denoise")
    return export.export_run(root / "run", root / "savedmodels" / "pet_denoise")


def pet_volume(path, seed=0):
    array = np.random.default_rng(seed).gamma(2.0, 1.0, (24, 20, 3)).astype(np.float32)
    return write_nifti(Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV"), path)


def test_one_good_and_one_broken_row(savedmodel, tmp_path, capsys):
    """The pairs CSV of `medgan-tf synth` (patient_id, source, target) as it is: the good row's
    output is written as <patient_id>.nii.gz, the broken row is named with its reason, exit 1."""
    (tmp_path / "data").mkdir()
    pet_volume(tmp_path / "data" / "good.nii.gz")
    (tmp_path / "data" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (tmp_path / "pairs.csv").write_text(
        "patient_id,source,target\n"
        "pat001,data/broken.nii.gz,data/unused.nii.gz\n"
        "pat002,data/good.nii.gz,data/unused.nii.gz\n"
    )
    code = main(["translate", "--model", str(savedmodel), "--inputs", str(tmp_path / "pairs.csv"),
                 "--output-dir", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pat002.nii.gz"]
    assert read_volume(tmp_path / "out" / "pat002.nii.gz").shape == (24, 20, 3)
    broken = str(tmp_path / "data" / "broken.nii.gz")
    assert f"error: {broken}: cannot read input {broken}: not a readable NIfTI file" in captured.err
    assert "[1/2]" in captured.out and "[2/2]" in captured.out and "translated 1 of 2 volumes" in captured.out


def test_dicom_outputs_named_by_the_output_column(savedmodel, tmp_path, capsys):
    pet_volume(tmp_path / "a.nii.gz", 1)
    write_dicom_series(tmp_path / "b", np.full((20, 20, 3), 500.0), np.diag([2.8, 2.8, 2.0, 1.0]), modality="PT",
                       slope=1.0, intercept=0.0, extra={"Units": "BQML"})
    (tmp_path / "list.csv").write_text("input,output\na.nii.gz,first\nb,second/series\n")
    assert main(["translate", "--model", str(savedmodel), "--inputs", str(tmp_path / "list.csv"),
                 "--output-dir", str(tmp_path / "out"), "--output-format", "dicom", "--quiet"]) == 0
    assert "translated 2 of 2 volumes" in capsys.readouterr().out
    for folder, slices in ((tmp_path / "out" / "first", 3), (tmp_path / "out" / "second" / "series", 3)):
        files = sorted(folder.iterdir())
        assert len(files) == slices and pydicom.dcmread(str(files[0])).Modality == "PT"


@pytest.mark.parametrize("text, message", [
    ("patient_id,target\np1,x.nii\n", r"expected an 'input' \(or 'source'\) column"),
    ("input\n\n,\n", "line 3: empty 'input' cell"),
    ("input,patient_id\na.nii,p1\nb.nii,p1\n", "lines 2 and 3 both write"),
])
def test_bad_csv_is_refused_before_anything_runs(text, message, tmp_path):
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        read_inputs_csv(tmp_path / "list.csv", tmp_path / "out", "nifti")


def test_input_and_inputs_do_not_mix(savedmodel, tmp_path, capsys):
    pet_volume(tmp_path / "a.nii.gz")
    (tmp_path / "list.csv").write_text("input\na.nii.gz\n")
    assert main(["translate", "--model", str(savedmodel), "--inputs", str(tmp_path / "list.csv"),
                 "--output", str(tmp_path / "o.nii")]) == 2
    assert "--inputs CSV goes with --output-dir" in capsys.readouterr().err
    assert main(["translate", "--model", str(savedmodel), "--input", str(tmp_path / "a.nii.gz")]) == 2
    assert "give --input VOL --output VOL" in capsys.readouterr().err
