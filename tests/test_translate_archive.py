"""`translate --inputs CSV --runner R`: the cohort as an Apache Beam pipeline (RunInference with
`SliceModelHandler`). Beam's PortableRunner (embedded job service, LOOPBACK workers) writes the
local loop's outputs byte for byte; a missing, a corrupt and a NaN volume are named in the report
with their reasons while the others are written (exit 1); the CSV, the volumes and the outputs may
sit on an object store (`testfs://`, tests/objectstore.py); a re-run with --skip-existing leaves
complete outputs alone."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgan_tf.cli import main
from medgan_tf.data.io import Volume, write_nifti
from medgan_tf.serving import export

from helpers import make_run, portable_runs  # noqa: E402  (tests/ is on sys.path)
from objectstore import ObjectStoreTestFileSystem  # noqa: E402

PORTABLE = ["--runner", "PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]
AFFINE = np.diag([2.8, 2.8, 2.0, 1.0])  # the pet_denoise grid: no interpolation


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive-model")
    make_run(root / "run", "pet_denoise")
    return export.export_run(root / "run", root / "savedmodels" / "pet_denoise")


def write_cohort(folder: Path, count: int = 3) -> Path:
    """`count` small PET volumes (the last one wider than the model's 64² field of view, so it is
    tiled) and an inputs CSV naming them by patient_id."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["patient_id,input"]
    for index in range(count):
        shape = (70, 30, 3) if index == count - 1 else (24, 20, 2 + index)
        array = np.random.default_rng(index).gamma(2.0, 1.0, shape).astype(np.float32)
        write_nifti(Volume(array, AFFINE, "PT", "SUV"), folder / f"pet{index}.nii.gz")
        rows.append(f"p{index},pet{index}.nii.gz")
    (folder / "cohort.csv").write_text("\n".join(rows) + "\n")
    return folder / "cohort.csv"


def translate(model, inputs, output_dir, *extra) -> int:
    return main(["translate", "--model", str(model), "--inputs", str(inputs), "--output-dir", str(output_dir),
                 "--quiet", *extra])


def read_report(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_portable_runner_writes_the_local_outputs_byte_for_byte(savedmodel, tmp_path, monkeypatch, capsys):
    cohort = write_cohort(tmp_path / "in")
    assert translate(savedmodel, cohort, tmp_path / "local") == 0
    used = portable_runs(monkeypatch)
    assert translate(savedmodel, cohort, tmp_path / "beam", *PORTABLE) == 0
    assert used == ["PortableRunner"]
    local, beam = files_under(tmp_path / "local"), files_under(tmp_path / "beam")
    assert sorted(local) == ["p0.nii.gz", "p1.nii.gz", "p2.nii.gz"]
    assert sorted(beam) == sorted(local) + ["translate-report.csv"]  # no work folder left behind
    assert all(beam[name] == local[name] for name in local)
    assert nib.load(tmp_path / "beam" / "p2.nii.gz").shape == (70, 30, 3)
    report = read_report(tmp_path / "beam" / "translate-report.csv")
    assert [(r["line"], r["outcome"], r["reason"]) for r in report] == [("2", "written", ""), ("3", "written", ""),
                                                                     ("4", "written", "")]
    assert "translated 3 of 3 volumes" in capsys.readouterr().out


def test_a_missing_a_corrupt_and_a_nan_volume_are_reported_and_the_others_written(savedmodel, tmp_path, capsys):
    cohort = write_cohort(tmp_path / "in", count=2)
    (tmp_path / "in" / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    nan = np.ones((24, 20, 2), np.float32)
    nan[3, 4, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, AFFINE), tmp_path / "in" / "nan.nii.gz")
    with open(cohort, "a") as handle:
        handle.write("missing,nowhere.nii.gz\ncorrupt,corrupt.nii.gz\nnan,nan.nii.gz\n")
    assert translate(savedmodel, cohort, tmp_path / "out", "--runner", "DirectRunner") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.nii.gz", "p1.nii.gz", "translate-report.csv"]
    report = {r["input"].rsplit("/", 1)[-1]: r for r in read_report(tmp_path / "out" / "translate-report.csv")}
    assert [report[name]["outcome"] for name in ("pet0.nii.gz", "pet1.nii.gz")] == ["written", "written"]
    assert {name: report[name]["outcome"] for name in ("nowhere.nii.gz", "corrupt.nii.gz", "nan.nii.gz")} == dict.fromkeys(
        ("nowhere.nii.gz", "corrupt.nii.gz", "nan.nii.gz"), "failed")
    assert "does not exist" in report["nowhere.nii.gz"]["reason"]
    assert "not a readable NIfTI file" in report["corrupt.nii.gz"]["reason"]
    assert "NaN" in report["nan.nii.gz"]["reason"]
    err = capsys.readouterr().err
    assert all(f"error: {tmp_path / 'in' / name}: " in err for name in ("nowhere.nii.gz", "corrupt.nii.gz", "nan.nii.gz"))


def test_skip_existing_leaves_complete_outputs_and_reports_them(savedmodel, tmp_path):
    cohort = write_cohort(tmp_path / "in", count=2)
    assert translate(savedmodel, cohort, tmp_path / "out", "--runner", "DirectRunner") == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.nii.gz")}
    (tmp_path / "out" / "p1.nii.gz").unlink()
    assert translate(savedmodel, cohort, tmp_path / "out", "--runner", "DirectRunner", "--skip-existing") == 0
    assert (tmp_path / "out" / "p0.nii.gz").stat().st_mtime_ns == before["p0.nii.gz"]  # not written again
    assert (tmp_path / "out" / "p1.nii.gz").is_file()
    outcomes = [r["outcome"] for r in read_report(tmp_path / "out" / "translate-report.csv")]
    assert outcomes == ["skipped", "written"]


@pytest.fixture
def store(tmp_path):
    previous = ObjectStoreTestFileSystem.root
    ObjectStoreTestFileSystem.root = tmp_path / "store"
    yield tmp_path / "store"
    ObjectStoreTestFileSystem.root = previous


def test_object_store_inputs_and_outputs_give_the_local_outputs(savedmodel, store, tmp_path):
    cohort = write_cohort(store / "cohort", count=2)
    assert translate(savedmodel, cohort, tmp_path / "local") == 0
    assert translate(savedmodel, "testfs://cohort/cohort.csv", "testfs://translated", "--runner", "DirectRunner") == 0
    remote, local = files_under(store / "translated"), files_under(tmp_path / "local")
    assert sorted(remote) == sorted(local) + ["translate-report.csv"]  # no temporaries, no work folder
    assert all(remote[name] == local[name] for name in local)
    report = read_report(store / "translated" / "translate-report.csv")
    assert [(r["input"], r["output"], r["outcome"]) for r in report] == [
        ("testfs://cohort/pet0.nii.gz", "testfs://translated/p0.nii.gz", "written"),
        ("testfs://cohort/pet1.nii.gz", "testfs://translated/p1.nii.gz", "written")]
    assert not list(Path(tempfile.gettempdir()).glob("medgan-stage-*"))  # staged copies removed


def test_a_dicom_output_on_an_object_store_and_an_unknown_beam_option_are_refused(savedmodel, store, capsys):
    cohort = write_cohort(store / "cohort", count=1)
    assert translate(savedmodel, cohort, "testfs://out", "--runner", "DirectRunner", "--output-format", "dicom") == 2
    assert "object store cannot publish at once" in capsys.readouterr().err
    assert translate(savedmodel, cohort, "testfs://out", "--runner", "DirectRunner", "--skip-existng") == 2
    assert "did you mean --skip-existing?" in capsys.readouterr().err
    assert not (store / "out").exists()
    assert main(["translate", "--model", str(savedmodel), "--input", str(cohort.parent / "pet0.nii.gz"),
                 "--output", str(store / "one.nii.gz"), "--runner", "DirectRunner"]) == 2
    assert "--runner, --skip-existing and --report go with --inputs" in capsys.readouterr().err
    assert translate(savedmodel, cohort, store / "local", "--job_endpoint=embed") == 2  # a Beam option, no runner
    assert "unrecognized arguments: --job_endpoint=embed (Beam options go with --runner)" in capsys.readouterr().err


def test_the_model_handler_in_a_pipeline_of_ones_own(savedmodel):
    """The README's example: RunInference with SliceModelHandler gives the model's own outputs."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.testing.util import assert_that

    from medgan_tf.serving.loading import load_model
    from medgan_tf.serving.model_handler import SliceModelHandler

    slices = {name: np.random.default_rng(seed).uniform(-1, 1, (n, 64, 64, 1)).astype(np.float32)
              for name, seed, n in (("a", 1, 3), ("b", 2, 1))}
    expected = {name: load_model(savedmodel)(array) for name, array in slices.items()}

    def check(results):
        assert sorted(key for key, _ in results) == ["a", "b"]
        for key, result in results:
            assert result.inference.shape == (len(slices[key]), 64, 64, 1)
            np.testing.assert_array_equal(result.inference, expected[key])

    with beam.Pipeline() as pipeline:
        outputs = (pipeline | beam.Create(sorted(slices.items()))
                   | RunInference(KeyedModelHandler(SliceModelHandler(savedmodel))))
        assert_that(outputs, check)


def test_the_model_handler_runs_an_element_in_passes_of_batch_size(savedmodel):
    """batch_size 2 on 5 slices: three forward passes of 2, 2 and 1 slices (as the local loop runs a
    volume), their outputs in order; an empty element gives an empty output."""
    from medgan_tf.serving.loading import load_model
    from medgan_tf.serving.model_handler import SliceModelHandler

    model = load_model(savedmodel)
    calls = []

    def counted(array):
        calls.append(len(array))
        return model(array)

    slices = np.random.default_rng(3).uniform(-1, 1, (5, 64, 64, 1)).astype(np.float32)
    (result,) = SliceModelHandler(savedmodel, batch_size=2).run_inference([slices], counted)
    assert calls == [2, 2, 1]
    np.testing.assert_array_equal(result.inference, np.concatenate([model(slices[i : i + 2]) for i in (0, 2, 4)]))
    (empty,) = SliceModelHandler(savedmodel, batch_size=2).run_inference([slices[:0]], model)
    assert empty.inference.shape == (0, 64, 64, 1)


def test_an_upload_that_fails_leaves_no_object(store, tmp_path, monkeypatch):
    """What a bundle that fails in the middle of writing leaves on an object store: nothing under the
    output's name or beside it (the runner's retry writes it whole)."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines import filesystems

    (tmp_path / "volume.nii.gz").write_bytes(b"complete")
    filesystems.upload(tmp_path / "volume.nii.gz", "testfs://out/a.nii.gz")
    assert (store / "out" / "a.nii.gz").read_bytes() == b"complete"

    def broken(sources, destinations):
        raise OSError("the store went away")

    monkeypatch.setattr(FileSystems, "rename", broken)
    with pytest.raises(OSError, match="went away"):
        filesystems.upload(tmp_path / "volume.nii.gz", "testfs://out/b.nii.gz")
    assert sorted(p.name for p in (store / "out").iterdir()) == ["a.nii.gz"]


def test_a_retried_bundle_writes_the_same_complete_output_once(savedmodel, tmp_path):
    """RestoreAndWrite run twice on one row (what a runner does when it retries a bundle) leaves one
    complete output with the same bytes; a row whose tiles did not all come back writes nothing."""
    from apache_beam import pvalue
    from apache_beam.ml.inference.base import PredictionResult

    from medgan_tf.serving import archive
    from medgan_tf.serving.loading import load_model
    from medgan_tf.serving.outputs import model_description

    write_cohort(tmp_path / "in", count=1)
    model = load_model(savedmodel)
    job = archive.Job(str(savedmodel), model.config, model_description(model), "nifti", 1, 0.25, True)
    row = {"line": 2, "input": tmp_path / "in" / "pet0.nii.gz", "output": tmp_path / "out" / "p0.nii.gz",
           "extra_inputs": (), "like": None}
    (plan, tiles), = [item for item in archive.PrepareFn(job).process(row) if not isinstance(item, pvalue.TaggedOutput)]
    assert len(tiles) == plan["tiles"] > 1  # a tile per slice of the model grid
    result = PredictionResult(tiles, model(tiles))
    write = archive.RestoreAndWriteFn(job)
    outcomes, written = [], []
    for _ in range(2):
        outcomes += list(write.process((plan, result)))
        written.append(files_under(tmp_path / "out"))
    assert [json.loads(outcome)["outcome"] for outcome in outcomes] == ["written", "written"]
    assert list(written[0]) == ["p0.nii.gz"] and written[0] == written[1]
    row["output"] = tmp_path / "lost" / "p0.nii.gz"
    plan = dict(plan, item=row)
    (lost,) = write.process((plan, PredictionResult(tiles, result.inference[1:])))
    assert f"{len(tiles)} tiles went to the model, {len(tiles) - 1} came back; nothing was written" in lost
    assert not (tmp_path / "lost").exists()


def test_the_local_loop_skips_complete_outputs_and_reports_too(savedmodel, tmp_path):
    cohort = write_cohort(tmp_path / "in", count=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "p0.nii.gz").write_bytes(b"an earlier run's output")
    assert translate(savedmodel, cohort, tmp_path / "out", "--skip-existing", "--report", str(tmp_path / "r.csv")) == 0
    assert (tmp_path / "out" / "p0.nii.gz").read_bytes() == b"an earlier run's output"
    assert [(r["line"], r["outcome"]) for r in read_report(tmp_path / "r.csv")] == [("2", "skipped"), ("3", "written")]


@pytest.mark.slow  # ≈ 100 s: the volume protocols and baselines run twice
def test_evaluate_pairs_with_a_runner_scores_as_the_local_path(tmp_path, capsys, monkeypatch):
    """`evaluate --pairs --model --runner`: the sources translated on Beam, then scored; the same
    summary as translating them here (NIfTI keeps the output's float32 values)."""
    from medgan_tf.data.synthetic import write_synthetic_dataset

    pairs = write_synthetic_dataset("pet_denoise", tmp_path / "data", patients=2, field_of_view_mm=64.0)
    make_run(tmp_path / "run", "pet_denoise", image_size=32)
    command = ["evaluate", "--model", str(tmp_path / "run"), "--pairs", str(pairs), "--json"]
    assert main(command + ["--out", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out)

    def not_here(*args, **kwargs):
        raise AssertionError("with --runner the volumes are translated in the pipeline, not here")

    monkeypatch.setattr("medgan_tf.serving.translation.translate_volume", not_here)
    assert main(command + ["--out", str(tmp_path / "beam"), "--runner", "DirectRunner"]) == 0
    beam = json.loads(capsys.readouterr().out)
    assert beam["rows"] == local["rows"] and beam["num_patients"] == local["num_patients"] == 2
    for row, metrics in local["summary"].items():
        for metric, summary in metrics.items():
            assert beam["summary"][row][metric]["mean"] == pytest.approx(summary["mean"], rel=1e-5, abs=1e-6), (row, metric)


def test_the_driver_reads_an_export_without_tensorflow(savedmodel):
    """`loading.model_info` (what the archive driver reads before handing the model to its workers)
    gives an export's version folder and config without importing TensorFlow: the driver does not
    pay TensorFlow's import (seconds) for a network only its workers load."""
    import subprocess
    import sys

    from medgan_tf.serving.loading import load_model

    code = ("import json, sys; from medgan_tf import config; from medgan_tf.serving.loading import model_info; "
            f"info = model_info({str(savedmodel.parent)!r}); "
            "print(json.dumps([str(info.path), config.to_dict(info.config), 'tensorflow' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    path, settings, imported = json.loads(done.stdout.strip().splitlines()[-1])
    from medgan_tf import config

    assert Path(path) == savedmodel and not imported
    assert settings == json.loads(json.dumps(config.to_dict(load_model(savedmodel).config)))
