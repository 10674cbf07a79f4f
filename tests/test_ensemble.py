"""`export --ensemble`: one SavedModel whose signatures return the members' mean (`output`) and
standard deviation (`uncertainty`), equal to the members run one by one; `translate` uses it."""

import json

import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import Volume
from medgan_tf.errors import UserError
from medgan_tf.serving import ensemble as ensemble_lib
from medgan_tf.serving import export, loading
from medgan_tf.serving import translation as translation_lib

from helpers import SIZE, make_run


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two run directories (fold-1, fold-2 of one `train --folds` folder) and one export, all
    pet_denoise with different (untrained) weights."""
    root = tmp_path_factory.mktemp("ensemble")
    for name in ("folds/fold-1", "folds/fold-2", "third"):
        make_run(root / name, "pet_denoise")
    third = export.export_run(root / "third", root / "savedmodels" / "third")
    return root, [root / "folds" / "fold-1", root / "folds" / "fold-2", third]


@pytest.fixture(scope="module")
def exported(members):
    root, _ = members
    code = main(["export", "--ensemble", str(root / "folds"), str(root / "savedmodels" / "third"),
                 "--out", str(root / "savedmodels" / "ensemble")])
    assert code == 0
    return loading.load_model(root / "savedmodels" / "ensemble")


def test_a_folds_folder_stands_for_its_fold_runs_and_one_member_is_refused(members, tmp_path):
    root, paths = members
    assert ensemble_lib.member_paths([root / "folds", paths[2]]) == paths
    with pytest.raises(UserError, match="at least two members"):
        ensemble_lib.member_paths([paths[0]])
    with pytest.raises(UserError, match="more than once"):
        ensemble_lib.member_paths([root / "folds", paths[0]])
    with pytest.raises(UserError, match="not a run directory"):
        ensemble_lib.member_paths([tmp_path, paths[0]])


def test_the_ensemble_equals_its_members_run_one_by_one(members, exported):
    _, paths = members
    assert exported.has_uncertainty
    assert json.loads((exported.path / "assets" / "ensemble.json").read_text())["count"] == 3
    source = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 1)).astype(np.float32)
    one_by_one = np.stack([loading.load_model(path)(source) for path in paths])
    assert np.std(one_by_one, axis=0).max() > 1e-3  # the members differ: the spread is not trivially 0
    both = exported.with_uncertainty(source)
    np.testing.assert_allclose(both[..., :1], one_by_one.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(both[..., 1:], one_by_one.std(axis=0), atol=1e-5)
    np.testing.assert_allclose(exported(source), one_by_one.mean(axis=0), atol=1e-5)


def test_the_physical_signature_gives_both_in_the_target_unit(members, exported):
    _, paths = members
    rng = np.random.default_rng(1)
    source = rng.gamma(2.0, 1.0, (2, SIZE, SIZE, 1)).astype(np.float32)  # SUV
    low, high = np.zeros(2, np.float32), np.full(2, 4.0, np.float32)
    normalized = (2.0 * (np.clip(source, 0.0, 4.0) / 4.0) - 1.0).astype(np.float32)
    physical = [(loading.load_model(path)(normalized) + 1.0) * 2.0 for path in paths[:2]]
    physical.append(loading.load_export(paths[2]).physical(source, source_low=low, source_high=high))
    stacked = np.stack(physical)
    outputs = exported.signatures["physical"](source=source, source_low=low, source_high=high)
    np.testing.assert_allclose(outputs["output"].numpy(), stacked.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(outputs["uncertainty"].numpy(), stacked.std(axis=0), atol=1e-4)


def test_translate_writes_the_ensembles_uncertainty(members, exported, tmp_path):
    array = np.random.default_rng(2).gamma(2.0, 1.0, (SIZE, SIZE, 3)).astype(np.float32)
    volume = Volume(array, np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "SUV")
    translation = translation_lib.translate_volume(exported, volume)
    spread = translation.uncertainty
    assert spread is not None and spread.unit == "SUV" and spread.array.max() > 0
    with_tta = translation_lib.translate_volume(exported, volume, tta="flips").uncertainty
    assert np.all(with_tta.array >= 0) and with_tta.array.mean() > 0


def test_members_of_other_tasks_are_refused(members, tmp_path):
    _, paths = members
    make_run(tmp_path / "ct", "mr_ct")
    with pytest.raises(UserError, match="does not take and give what"):
        ensemble_lib.export_ensemble([paths[0], tmp_path / "ct"], tmp_path / "out")
    assert not (tmp_path / "out" / "1").exists()
