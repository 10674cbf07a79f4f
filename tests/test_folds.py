"""`train --folds K`: K runs on patient folds of the training split, each validated on its held-out
patients, resumable; `export --ensemble RUN` makes one SavedModel of RUN/fold-*, equal to the folds
run one by one; `translate --uncertainty` writes its spread."""

import json

import numpy as np
import pytest

from medgan_tf import cli
from medgan_tf.data.folds import assign_folds, training_patients
from medgan_tf.data.io import Volume, write_nifti
from medgan_tf.data.manifest import read_manifest
from medgan_tf.errors import UserError
from medgan_tf.serving import loading

TINY = ["--image-size", "64", "--ublocks", "1", "--base-filters", "8", "--vgg-weights", "none", "--quiet",
        "--epochs", "1", "--steps-per-epoch", "1", "--validation-steps", "1"]


def test_patients_are_dealt_into_disjoint_folds_that_cover_them():
    patients = [f"p{n}" for n in range(7)]
    folds = assign_folds(reversed(patients), 3)
    assert [len(fold) for fold in folds] == [3, 2, 2]
    assert sorted(sum(folds, [])) == patients
    assert folds == assign_folds(patients, 3)  # the order given does not matter
    with pytest.raises(UserError, match="at least 2"):
        assign_folds(patients, 1)
    with pytest.raises(UserError, match="only 7 patient"):
        assign_folds(patients, 8)


@pytest.mark.slow
def test_train_folds_export_the_ensemble_and_translate_with_its_uncertainty(tmp_path):
    from medgan_tf.workflows.builtin import ensure_builtin_dataset

    data_dir = ensure_builtin_dataset("pet_denoise", 64)
    run = tmp_path / "run"
    command = ["train", "--task", "pet_denoise", "--data", str(data_dir), *TINY, "--folds", "3", "--logdir", str(run)]
    assert cli.main(command) == 0
    plan = json.loads((run / "folds.json").read_text())
    held = [set(fold) for fold in plan["held_out"]]
    assert set().union(*held) == set(training_patients(data_dir)) and sum(map(len, held)) == len(set().union(*held))
    for fold in range(1, 4):
        manifest = read_manifest(run / "data" / f"fold-{fold}")
        val = {v["patient_key"] for v in manifest["volumes"] if v["split"] == "val"}
        train = {v["patient_key"] for v in manifest["volumes"] if v["split"] == "train"}
        assert val == held[fold - 1] and not val & train
        assert json.loads((run / f"fold-{fold}" / "summary.json").read_text())["step"] == 1
        assert (run / f"fold-{fold}" / "config.json").is_file()
    seeds = {json.loads((run / f"fold-{k}" / "config.json").read_text())["train"]["seed"] for k in range(1, 4)}
    assert len(seeds) == 3

    # Again: finished folds are left as they are; a fold that lost its summary (interrupted) continues.
    (run / "fold-2" / "summary.json").unlink()
    before = (run / "fold-1" / "summary.json").stat().st_mtime_ns
    assert cli.main(command) == 0
    assert (run / "fold-1" / "summary.json").stat().st_mtime_ns == before
    assert (run / "fold-2" / "summary.json").is_file()

    assert cli.main(["export", "--ensemble", str(run), "--out", str(tmp_path / "export")]) == 0
    ensemble = loading.load_model(tmp_path / "export")
    source = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype(np.float32)
    # The export computes in float32 (its default); the members too, whatever their runs' mixed precision.
    members = np.stack([loading.load_model(run / f"fold-{k}", precision="float32")(source) for k in range(1, 4)])
    both = ensemble.with_uncertainty(source)
    np.testing.assert_allclose(both[..., :1], members.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(both[..., 1:], members.std(axis=0), atol=1e-5)

    array = np.random.default_rng(1).gamma(2.0, 1.0, (64, 64, 3)).astype(np.float32)
    write_nifti(Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV"), tmp_path / "in.nii.gz")
    assert cli.main(["translate", "--model", str(tmp_path / "export"), "--input", str(tmp_path / "in.nii.gz"),
                     "--output", str(tmp_path / "out.nii.gz"), "--uncertainty", str(tmp_path / "sd.nii.gz"), "-q"]) == 0
    assert (tmp_path / "sd.nii.gz").is_file()


def test_folds_refuse_a_run_directory_of_a_single_run(tmp_path):
    from helpers import make_run

    make_run(tmp_path / "run", "pet_denoise")
    from medgan_tf.training.folds import train_folds

    with pytest.raises(UserError, match="holds a single run"):
        train_folds(None, tmp_path, tmp_path / "run", 3, runtime=None)
