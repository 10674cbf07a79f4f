"""Splits, masks and grids the user names: the pairs CSV's `split` and `mask` columns, the test split,
`convert --spacing/--val-fraction/--test-fraction`, and training, export and `evaluate --split test`
following the grid stored in the manifest."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medgan_tf.cli import main as cli_main
from medgan_tf.data import dataset as data
from medgan_tf.data import manifest as manifest_lib
from medgan_tf.data import pairs
from medgan_tf.data.io import Volume, read_volume, write_nifti
from medgan_tf.data.synthetic import write_synthetic_dataset
from medgan_tf.errors import UserError
from pipelines import convert

SIZE = 64  # the paper's VIF needs ≥ 41² slices (evaluate)
SPACING = (2.0, 2.0, 3.0)
MASK_BOX = ((16, 47), (21, 42))  # source voxels i, j inside the mask (every k)


def _rank(keys):
    return sorted(keys, key=lambda key: hashlib.sha256(key.encode()).hexdigest())


# --------------------------------------------------------------------------- the split rule


def test_hash_split_with_a_test_fraction_matches_the_rule_by_hand():
    keys = [f"k{i}" for i in range(10)]
    ranked = _rank(keys)
    assignment = pairs.assign_splits(keys, 0.2, 0.2)
    # round(0.2·10) = 2 test (first by hash), 2 val (next), 6 train.
    assert [assignment[k] for k in ranked] == ["test"] * 2 + ["val"] * 2 + ["train"] * 6
    assert pairs.assign_splits(list(reversed(keys)), 0.2, 0.2) == assignment


@pytest.mark.parametrize("count, val, test, expected", [
    (3, 0.2, 0.1, {"test": 1, "val": 1, "train": 1}),  # round gives 0 test, 1 val: at least one each
    (2, 0.2, 0.5, {"val": 1, "train": 1}),              # n < 3: no test patient
    (3, 0.5, 0.5, {"test": 2, "train": 1}),             # train keeps one, val gives way
    (4, 0.0, 0.0, {"train": 4}),                        # --val-fraction 0 means no val
    (1, 0.2, 0.2, {"train": 1}),
    (5, 0.2, 0.0, {"val": 1, "train": 4}),              # as before test splits existed
])
def test_split_sizes_keep_train_and_honour_at_least_one(count, val, test, expected):
    assignment = pairs.assign_splits([f"p{i}" for i in range(count)], val, test)
    sizes = {split: list(assignment.values()).count(split) for split in pairs.SPLITS}
    assert {k: v for k, v in sizes.items() if v} == expected


def test_named_patients_keep_their_split_and_the_rest_is_hashed_without_them():
    keys = [f"p{i}" for i in range(6)]
    named = {"p0": "test", "p1": "train", "p2": "val"}
    assignment = pairs.assign_splits(keys, 0.4, 0.0, named)
    assert {k: assignment[k] for k in named} == named
    free = _rank(["p3", "p4", "p5"])  # round(0.4·3) = 1 val among the three not named
    assert [assignment[k] for k in free] == ["val", "train", "train"]


def test_split_and_mask_columns_are_read_checked_and_resolved(tmp_path):
    (tmp_path / "pairs.csv").write_text(
        "patient_id,source,target,split,mask\n"
        "A,a/s.nii,a/t.nii,Test,a/mask.nii.gz\n"
        "B,b/s.nii,b/t.nii,,\n"
        "C,c/s.nii,c/t.nii,TRAIN,\n"
        "C,c/s2.nii,c/t2.nii,val,\n"
        "D,gs://bucket/d/s.nii,d/t.nii,holdout,\n"
    )
    rows = pairs.read_pairs_csv(tmp_path / "pairs.csv")
    assert [row["split"] for row in rows] == ["test", "", "train", "val", "holdout"]
    assert rows[0]["mask"] == str(tmp_path / "a" / "mask.nii.gz") and rows[1]["mask"] == ""
    assert rows[4]["source"] == "gs://bucket/d/s.nii"  # a path with a scheme is taken as written
    assert pairs.check_row(rows[0]) == "test" and pairs.check_row(rows[1]) == ""
    for row in rows[2:4]:
        with pytest.raises(pairs.PairRejected, match=r"different splits \(train on line 4; val on line 5\)"):
            pairs.check_row(row)
    with pytest.raises(pairs.PairRejected, match="line 6, column split, is not one of train, val, test") as rejected:
        pairs.check_row(rows[4])
    assert "holdout" not in rejected.value.reason and "'holdout'" in rejected.value.detail  # the cell: terminal only
    assert pairs.resolve_input("gs://bucket/csvs", "../vol/ct.nii.gz") == "gs://bucket/vol/ct.nii.gz"


@pytest.mark.parametrize("flags, message", [
    (["--spacing", "2,2"], "three positive sizes"),
    (["--spacing", "2,0,3"], "three positive sizes"),
    (["--test-fraction", "1.5"], "fraction in"),
])
def test_bad_grid_and_fraction_flags_are_refused_by_the_parser(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        convert.run(["--pairs", str(tmp_path / "x.csv"), "--task", "pet_ct", "--out", str(tmp_path / "o"), *flags])
    assert message in capsys.readouterr().err


def test_fractions_leaving_no_train_patient_are_refused(tmp_path):
    with pytest.raises(UserError, match="leaves no patient for train"):
        convert.run(["--pairs", str(tmp_path / "x.csv"), "--task", "pet_ct", "--out", str(tmp_path / "o"),
                     "--val-fraction", "0.5", "--test-fraction", "0.5"])


# --------------------------------------------------------------------------- a conversion with both columns


def _write_mask(source_path: Path, mask_path: Path) -> None:
    source = read_volume(source_path)
    mask = np.zeros(source.array.shape, dtype=np.float32)
    (i0, i1), (j0, j1) = MASK_BOX
    mask[i0:i1 + 1, j0:j1 + 1, :] = 1
    write_nifti(Volume(mask, source.affine), mask_path)


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """4 synthetic pet_ct patients; the CSV names p0 test (with a mask), p1 val, leaves p2 to the hash,
    names p3 twice with different splits and p4 with a split that does not exist."""
    root = tmp_path_factory.mktemp("named")
    write_synthetic_dataset("pet_ct", root, patients=4, seed=3, field_of_view_mm=48)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    _write_mask(folders[0] / "source.nii.gz", folders[0] / "mask.nii.gz")
    rows = [("p0", folders[0], "Test", "mask.nii.gz"), ("p1", folders[1], "VAL", ""), ("p2", folders[2], "", ""),
            ("p3", folders[3], "train", ""), ("p3", folders[3], "val", ""), ("p4", folders[3], "holdout", "")]
    with open(root / "named.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("patient_id", "source", "target", "split", "mask"))
        for patient, folder, split, mask in rows:
            writer.writerow((patient, f"{folder.name}/source.nii.gz", f"{folder.name}/target.nii.gz", split,
                             f"{folder.name}/{mask}" if mask else ""))
    out = root / "records"
    status = convert.run(["--pairs", str(root / "named.csv"), "--task", "pet_ct", "--out", str(out), "--image-size",
                          str(SIZE), "--spacing", ",".join(f"{v:g}" for v in SPACING), "--salt", "test-salt",
                          "--num-shards", "1"])
    assert status == 0
    return root, folders, out


def test_named_splits_win_bad_rows_are_rejected_and_the_test_split_is_written(named):
    from medgan_tf.data.pseudonyms import pseudonym

    _, _, out = named
    manifest = manifest_lib.read_manifest(out)
    key = {p: pseudonym(p, b"test-salt") for p in ("p0", "p1", "p2")}
    by_key = {v["patient_key"]: v for v in manifest["volumes"]}
    assert {p: by_key[k]["split"] for p, k in key.items()} == {"p0": "test", "p1": "val", "p2": "train"}
    assert {p: by_key[k]["split_from"] for p, k in key.items()} == {"p0": "pairs CSV", "p1": "pairs CSV", "p2": "hash"}
    reasons = {item["row"]: item["reason"] for item in manifest["rejected"]}
    assert set(reasons) == {5, 6, 7}
    assert "different splits (train on line 5; val on line 6)" in reasons[5] == reasons[6]
    assert "the cell on line 7, column split, is not one of train, val, test" in reasons[7]
    assert "holdout" not in (out / "manifest.json").read_text()  # a cell's value may be a name: never quoted
    for split in pairs.SPLITS:
        records = list(data.iterate_records(out, split))
        assert len(records) == manifest["counts"][split]["slices"] > 0
        assert {r["patient_key"] for r in records} == {key[{"test": "p0", "val": "p1", "train": "p2"}[split]]}
    assert manifest["counts"]["test"]["shards"] == ["data-00000-of-00001.tfrecord.gz"]
    assert (out / "test" / "data-00000-of-00001.tfrecord.gz").is_file()


def test_the_chosen_grid_is_in_the_manifest_and_every_record(named):
    root, folders, out = named
    manifest = manifest_lib.read_manifest(out)
    assert manifest["spacing_mm"] == list(SPACING) and manifest["config"]["spacing_mm"] == list(SPACING)
    assert manifest_lib.manifest_spacing(manifest) == SPACING
    source = read_volume(folders[2] / "source.nii.gz")  # 64×64×11 voxels of 0.75×0.75×3 mm
    volume = next(v for v in manifest["volumes"] if v["split"] == "train")
    extent = np.array(source.shape) * np.array(source.spacing)
    assert volume["grid_shape"] == [SIZE, SIZE, int(round(extent[2] / SPACING[2]))]
    assert np.allclose(np.linalg.norm(np.array(volume["grid_affine"])[:3, :3], axis=0), SPACING)
    assert all(np.allclose(r["spacing"], SPACING) for r in data.iterate_records(out, "train"))


def test_the_mask_is_carried_on_the_model_grid_by_nearest_neighbour(named):
    root, folders, out = named
    manifest = manifest_lib.read_manifest(out)
    test_volume = next(v for v in manifest["volumes"] if v["split"] == "test")
    assert manifest["masked_pairs"] == 1 and "mask" in test_volume
    assert all("mask" not in r for split in ("train", "val") for r in data.iterate_records(out, split))
    source = read_volume(folders[0] / "source.nii.gz")
    grid = np.array(test_volume["grid_affine"])
    to_source = np.linalg.inv(source.affine) @ grid
    compared = 0
    for record in data.iterate_records(out, "test"):
        ii, jj = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
        points = np.stack([ii, jj, np.full_like(ii, record["slice_index"]), np.ones_like(ii)], axis=-1) @ to_source.T
        nearest = np.floor(points[..., :3] + 0.5)
        (i0, i1), (j0, j1) = MASK_BOX
        expected = ((nearest[..., 0] >= i0) & (nearest[..., 0] <= i1) & (nearest[..., 1] >= j0) & (nearest[..., 1] <= j1)
                    & (nearest[..., 2] >= 0) & (nearest[..., 2] < source.shape[2]))
        clear = np.all(np.abs(np.abs(points[..., :3] - np.floor(points[..., :3])) - 0.5) > 1e-3, axis=-1)
        assert record["mask"].dtype == np.uint8 and set(np.unique(record["mask"])) <= {0, 1}
        assert np.array_equal(record["mask"][..., 0][clear], expected[clear].astype(np.uint8))
        compared += int(clear.sum())
    assert compared > 1000 and test_volume["mask"]["voxels"] > 0


def test_records_with_a_mask_are_the_records_without_one_plus_the_mask(named):
    from medgan_tf.data.schema import parse_example_with_mask
    from tensorflow.core.example import example_pb2

    root, folders, _ = named
    config = convert.converter_data_config(convert.ConvertOptions(pairs="x", task="pet_ct", out="o", image_size=SIZE, spacing=(2, 2, 3)))
    source, target = str(folders[0] / "source.nii.gz"), str(folders[0] / "target.nii.gz")
    plain, _ = pairs.convert_pair(source, target, "k", config)
    masked, _ = pairs.convert_pair(source, target, "k", config, mask_path=str(folders[0] / "mask.nii.gz"))
    assert [k for k, _ in plain] == [k for k, _ in masked]
    for (_, without), (_, with_mask) in zip(plain, masked):
        example = example_pb2.Example.FromString(with_mask)
        del example.features.feature["mask"]
        assert example == example_pb2.Example.FromString(without)
    parsed = parse_example_with_mask(masked[3][1])
    assert parsed["mask"].shape == (SIZE, SIZE, 1) and int(parsed["mask"].numpy().sum()) > 0
    assert int(parse_example_with_mask(plain[3][1])["mask"].numpy().min()) == 1  # no mask: every pixel counts


def test_a_mask_that_cannot_be_read_rejects_only_its_pair(named, tmp_path):
    root, folders, _ = named
    config = convert.converter_data_config(convert.ConvertOptions(pairs="x", task="pet_ct", out="o", image_size=SIZE))
    with pytest.raises(pairs.PairRejected, match="^mask: path does not exist"):
        pairs.convert_pair(str(folders[0] / "source.nii.gz"), str(folders[0] / "target.nii.gz"), "k", config,
                           mask_path=str(tmp_path / "missing.nii.gz"))


def test_shards_without_a_manifest_are_not_a_dataset(named, tmp_path):
    import shutil

    _, _, out = named
    shutil.copytree(out, tmp_path / "copy")
    (tmp_path / "copy" / "manifest.json").unlink()
    for read in (lambda: list(data.iterate_records(tmp_path / "copy", "test")),
                 lambda: data.make_dataset(tmp_path / "copy", "train", 2)):
        with pytest.raises(UserError, match="no manifest.json"):
            read()


# --------------------------------------------------------------------------- train, export and evaluate follow


@pytest.mark.slow  # ~30 s: a one-step training run, an export and an evaluation
def test_training_export_and_evaluate_follow_the_converted_grid_and_test_split(named, tmp_path, capsys):
    from medgan_tf.serving.loading import load_model

    _, _, out = named
    run = tmp_path / "run"
    assert cli_main(["train", "--task", "pet_ct", "--data", str(out), "--epochs", "1", "--steps-per-epoch", "1",
                     "--image-size", str(SIZE), "--ublocks", "1", "--base-filters", "8", "--vgg-weights", "none",
                     "--validation-steps", "1", "--quiet", "--logdir", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["spacing_mm"] == list(SPACING)
    assert cli_main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    exported = load_model(tmp_path / "export")
    assert tuple(exported.config.data.spacing_mm) == SPACING  # translate resamples to this grid
    capsys.readouterr()
    assert cli_main(["evaluate", "--model", str(run), "--data", str(out), "--split", "test",
                     "--out", str(tmp_path / "report"), "--figure-slices", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    manifest = manifest_lib.read_manifest(out)
    assert report["split"] == "test" and report["num_patients"] == 1
    assert report["num_slices"] == manifest["counts"]["test"]["slices"]
