"""The converter's library call: `convert(ConvertOptions(...))` writes what `run(argv)` writes for
the same options, its fields are the command line's flags with the same defaults, and bad values
are refused before any input is read."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from medgan_tf.data import dataset as data
from medgan_tf.data.synthetic import write_synthetic_dataset
from medgan_tf.errors import UserError
from pipelines import convert
from pipelines.options import ConvertOptions, add_arguments, options_from_namespace

SIZE = 32


def _payloads(directory):
    """Split → sorted raw (decompressed) record bytes; which shard holds a record is Beam's choice."""
    import tensorflow as tf

    return {
        split: sorted(bytes(r) for path in data.shard_files(directory, split)
                      for r in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
        for split in ("train", "val", "test")
    }


def _manifest(directory):
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.pop("seconds")  # the conversion's duration
    return manifest


def test_convert_with_options_writes_what_run_with_the_same_flags_writes(tmp_path):
    pairs = write_synthetic_dataset("pet_denoise", tmp_path / "volumes", patients=3, seed=0)
    options = ConvertOptions(pairs=pairs, task="pet_denoise", out=tmp_path / "library", image_size=SIZE, spacing=(3, 3, 2),
                             val_fraction=0.3, test_fraction=0.3, salt="test-salt-0123456789", num_shards=2, context_slices=1)
    argv = ["--pairs", str(pairs), "--task", "pet_denoise", "--out", str(tmp_path / "argv"), "--image-size", str(SIZE),
            "--spacing", "3,3,2", "--val-fraction", "0.3", "--test-fraction", "0.3", "--salt", "test-salt-0123456789",
            "--num-shards", "2", "--context-slices", "1"]

    assert convert.convert(options) == 0
    assert convert.run(argv) == 0

    library, command_line = _payloads(tmp_path / "library"), _payloads(tmp_path / "argv")
    assert all(library[split] for split in ("train", "val", "test"))
    assert library == command_line
    assert _manifest(tmp_path / "library") == _manifest(tmp_path / "argv")
    for split in ("train", "val", "test"):
        assert len(data.shard_files(tmp_path / "library", split)) == (2 if split == "train" else 1)


def test_options_are_the_flags_with_the_same_defaults():
    parser = add_arguments(argparse.ArgumentParser())
    flags = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    fields = {field.name: field.default for field in dataclasses.fields(ConvertOptions)}
    assert set(flags) == set(fields)
    assert {name: default for name, default in flags.items() if name not in ("pairs", "task", "out")} == {
        name: default for name, default in fields.items() if name not in ("pairs", "task", "out")}
    args = parser.parse_args(["--pairs", "p.csv", "--task", "pet_ct", "--out", "o", "--spacing", "1,1,2.5", "--strict"])
    assert options_from_namespace(args) == ConvertOptions(pairs="p.csv", task="pet_ct", out="o", spacing=(1.0, 1.0, 2.5), strict=True)


@pytest.mark.parametrize("bad, message", [
    ({"task": "ct_mr"}, "unknown task .ct_mr.; expected one of pet_ct"),
    ({"val_fraction": 1.0}, "--val-fraction: expected a fraction"),
    ({"test_fraction": -0.1}, "--test-fraction: expected a fraction"),
    ({"spacing": (1, 1)}, "--spacing: expected three positive sizes"),
    ({"spacing": (1, 0, 1)}, "--spacing: expected three positive sizes"),
])
def test_bad_options_are_refused_when_made(bad, message):
    with pytest.raises(UserError, match=message):
        ConvertOptions(**{"pairs": "p.csv", "task": "pet_ct", "out": "o", **bad})


def test_bad_combinations_are_refused_before_the_pairs_csv_is_read(tmp_path):
    options = ConvertOptions(pairs=tmp_path / "missing.csv", task="pet_ct", out=tmp_path / "o", val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(UserError, match="leaves no patient for train"):
        convert.convert(options)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("typo, suggested", [(["--spacng", "2,2,2"], "--spacing"), (["--image_sise=32"], "--image-size"),
                                             (["--direct_running_mod=in_memory"], "--direct_running_mode")])
def test_an_option_neither_the_converter_nor_beam_knows_is_an_error_naming_the_nearest(tmp_path, capsys, typo, suggested):
    from medgan_tf import cli

    pairs = write_synthetic_dataset("pet_denoise", tmp_path / "volumes", patients=2, seed=0)
    argv = ["convert", "--pairs", str(pairs), "--task", "pet_denoise", "--out", str(tmp_path / "out"), "--image-size", "16"]

    assert cli.main(argv + typo) == 2

    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: unknown option") and typo[0].split("=")[0] in message and suggested in message
    assert not (tmp_path / "out").exists()


def test_beam_options_beam_knows_still_pass_through():
    from pipelines.runners import check_beam_args

    check_beam_args(["--direct_running_mode=in_memory", "--direct_num_workers", "2", "--project", "p"])
    with pytest.raises(UserError, match="did you mean --overwrite"):
        check_beam_args(["--overwrit"])
