"""The conversion on Beam's PortableRunner with an embedded job server (`--job_endpoint=embed`: Beam's
Python job service in this process, no Java, no download) and LOOPBACK workers writes the same records
and manifest as the DirectRunner."""

from __future__ import annotations

import pytest
import tensorflow as tf

from medgan_tf.data import dataset as data
from medgan_tf.data import manifest as manifest_lib
from medgan_tf.data.synthetic import write_synthetic_dataset
from pipelines import convert
from helpers import portable_runs  # noqa: E402  (tests/ is on sys.path)

SIZE = 32
PORTABLE = ["--runner", "PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def _convert(pairs, out, *extra):
    return convert.run(["--pairs", str(pairs), "--task", "pet_ct", "--out", str(out), "--image-size", str(SIZE),
                        "--salt", "test-salt", "--num-shards", "2", "--test-fraction", "0.25", *extra])


def _raw_records(directory):
    return {split: sorted(bytes(r) for path in data.shard_files(directory, split)
                          for r in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
            for split in data.SPLITS}


def test_portable_runner_with_an_embedded_job_server_writes_the_direct_runners_records(tmp_path, monkeypatch):
    pairs = write_synthetic_dataset("pet_ct", tmp_path / "in", patients=4, seed=2, field_of_view_mm=SIZE)
    assert _convert(pairs, tmp_path / "direct") == 0
    used = portable_runs(monkeypatch)
    assert _convert(pairs, tmp_path / "portable", *PORTABLE) == 0
    assert used == ["PortableRunner"]

    direct, portable = manifest_lib.read_manifest(tmp_path / "direct"), manifest_lib.read_manifest(tmp_path / "portable")
    assert portable["counts"] == direct["counts"] and portable["volumes"] == direct["volumes"]
    assert all(direct["counts"][split]["slices"] > 0 for split in data.SPLITS)
    records = _raw_records(tmp_path / "portable")
    assert records == _raw_records(tmp_path / "direct")
    assert sum(len(r) for r in records.values()) == sum(v["slices"] for v in direct["volumes"])


def test_a_job_service_that_does_not_answer_is_one_clear_error_and_no_dataset(tmp_path):
    from medgan_tf.errors import UserError

    pairs = write_synthetic_dataset("pet_ct", tmp_path / "in", patients=2, seed=2, field_of_view_mm=SIZE)
    with pytest.raises(UserError, match=r"job service localhost:1 did not answer .*--job_endpoint=embed"):
        _convert(pairs, tmp_path / "out", "--runner", "PortableRunner", "--job_endpoint=localhost:1",
                 "--environment_type=LOOPBACK", "--job_server_timeout=2")
    assert not (tmp_path / "out").exists() and list(tmp_path.glob("out.*")) == []
