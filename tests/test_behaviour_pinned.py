"""Behaviour pinned across refactorings: one small case through `convert`, `translate` (NIfTI and
DICOM) and `evaluate` (`--data` and `--pairs`) must give what the pinned version gave.

`tests/golden/behaviour.json` holds the SHA-256 of every record payload and of the manifest (its
timing removed): conversion is exact on every processor. What a network computes is not: its float32
convolutions round differently on another instruction set (oneDNN on AVX2 and on AVX-512 differ in
the last bits), so the translated outputs are pinned by their statistics (quantiles, moments, a
strided sample) and the evaluation reports by their metric values, each to a relative 1e-4 — a
change of behaviour moves them far more — and by the digest of the report texts with their decimal
numbers masked. Regenerate it only for an intended change of behaviour:

    TF_CPP_MIN_LOG_LEVEL=3 python tests/test_behaviour_pinned.py tests/golden/behaviour.json

and say in the commit why the outputs changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import make_run, write_dicom_series, write_two_source_patients  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "behaviour.json"
SIZE = 32
FLOAT32 = ("--precision", "float32")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _records(data_dir: Path) -> dict[str, list[str]]:
    import tensorflow as tf

    out = {}
    for split_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        shards = sorted(str(p) for p in split_dir.glob("*.tfrecord.gz"))
        payloads = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(shards, compression_type="GZIP")] if shards else []
        out[split_dir.name] = sorted(_digest(p) for p in payloads)
    return out


def _manifest(data_dir: Path) -> str:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    manifest.pop("seconds", None)
    return _digest(json.dumps(manifest, sort_keys=True).encode())


def _array_summary(array: np.ndarray) -> dict[str, object]:
    """Shape, quantiles, moments and a strided sample of `array`: what a change of behaviour moves,
    compared to a relative 1e-4 (`_same`)."""
    values = np.asarray(array, dtype=np.float64).ravel()
    step = max(1, values.size // 32)
    return {"shape": list(np.shape(array)),
            "quantiles": [float(q) for q in np.quantile(values, np.linspace(0.0, 1.0, 17))],
            "moments": [float(values.mean()), float(values.std()), float(np.abs(values).mean())],
            "sample": [float(v) for v in values[::step][:32]]}


def _dicom_summary(folder: Path) -> dict[str, object]:
    """Each slice's number and position (exact) and the values the series stores (`_array_summary`)."""
    import pydicom

    slices = sorted((pydicom.dcmread(str(p)) for p in folder.glob("*.dcm")), key=lambda s: int(s.InstanceNumber))
    values = np.stack([s.pixel_array * float(s.get("RescaleSlope", 1.0)) + float(s.get("RescaleIntercept", 0.0))
                       for s in slices])
    return {"slices": [[int(s.InstanceNumber), str(s.ImagePositionPatient)] for s in slices],
            "values": _array_summary(values)}


def _masked(text: str) -> str:
    """The digest of `text` with its decimal numbers replaced by #: its layout, names and counts."""
    return _digest(re.sub(r"-?\d+\.\d+(?:e[-+]?\d+)?", "#", text).encode())


def _same(expected: object, produced: object, scale: float = 0.0) -> bool:
    """Equal, floats to a relative 1e-4 (and an absolute 1e-5 of the largest value of their group)."""
    if isinstance(expected, float) or isinstance(produced, float):
        if not isinstance(produced, (int, float)) or not isinstance(expected, (int, float)):
            return False
        return (math.isnan(expected) and math.isnan(produced)) or math.isclose(
            expected, produced, rel_tol=1e-4, abs_tol=1e-5 * scale)
    if isinstance(expected, dict):
        return isinstance(produced, dict) and expected.keys() == produced.keys() and all(
            _same(expected[key], produced[key], scale) for key in expected)
    if isinstance(expected, list):
        largest = max([abs(v) for v in expected if isinstance(v, (int, float))] + [scale])
        return isinstance(produced, list) and len(expected) == len(produced) and all(
            _same(a, b, largest) for a, b in zip(expected, produced))
    return expected == produced


def _rounded(value: object) -> object:
    """JSON values with floats to 9 significant digits (summation order moves the last bits) and
    lists of rows sorted (records come back in shard order, which Beam does not fix)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_rounded(item) for item in value]
        if items and all(isinstance(item, dict) for item in items):
            items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        return items
    return value


def _report(folder: Path, root: Path) -> dict[str, object]:
    """A report's metric values (metrics.json, rounded) and its texts' masked digests, with the
    temporary folder's path replaced by ROOT."""
    names = [p for p in ("metrics.json", "metrics.md", "per_patient.csv") if (folder / p).is_file()]
    texts = {name: (folder / name).read_text().replace(str(root), "ROOT") for name in names}
    report: dict[str, object] = {name: _masked(text) for name, text in texts.items()}
    if "metrics.json" in texts:
        report["metrics.json"] = _rounded(json.loads(texts["metrics.json"]))
    return report


def produce(root: Path) -> dict[str, object]:
    """Run the small case under `root` and return what is pinned."""
    import keras
    import nibabel as nib

    from medgan_tf.cli import main
    from medgan_tf.data.synthetic import write_synthetic_dataset
    from pipelines import convert

    pinned: dict[str, object] = {}
    # 1. convert: the built-in pet_denoise phantoms (paper's 2-D records) and a 2.5D two-source case.
    pairs = write_synthetic_dataset("pet_denoise", root / "synth", patients=3, seed=3)
    data = root / "data"
    assert convert.run(["--pairs", str(pairs), "--task", "pet_denoise", "--out", str(data), "--image-size", "64",
                        "--salt", "pinned", "--test-fraction", "0.34"]) == 0
    pinned["records"], pinned["manifest"] = _records(data), _manifest(data)
    (root / "two").mkdir()
    two = write_two_source_patients(root / "two", count=2, size=SIZE, slices=5)
    data_two = root / "data-two"
    assert convert.run(["--pairs", str(two), "--task", "pet_denoise", "--out", str(data_two), "--image-size", str(SIZE),
                        "--salt", "pinned", "--context-slices", "1", "--extra-source-modalities", "CT"]) == 0
    pinned["records_two_source"], pinned["manifest_two_source"] = _records(data_two), _manifest(data_two)

    # 2. translate with an untrained tiny model of fixed seed: NIfTI from NIfTI, DICOM from DICOM.
    keras.utils.set_random_seed(11)
    run = root / "run"
    make_run(run, "pet_denoise", image_size=64)
    source = root / "synth" / "synthetic-pet_denoise-000" / "source.nii.gz"
    # float32 throughout: `auto` (the run's mixed precision) is bfloat16 on a processor that computes it natively.
    assert main(["translate", "--model", str(run), "--input", str(source), "--output", str(root / "out.nii.gz"),
                 *FLOAT32]) == 0
    pinned["translate_nifti"] = _array_summary(nib.load(str(root / "out.nii.gz")).get_fdata(dtype=np.float32))
    image = nib.load(str(source))
    values = image.get_fdata(dtype=np.float32)[:, :, :6]
    slope = float(values.max()) / 30000.0
    series = write_dicom_series(root / "series", np.round(values / slope) * slope, image.affine, modality="PT",
                                slope=slope, intercept=0.0)
    assert main(["translate", "--model", str(run), "--input", str(series), "--output", str(root / "out-dicom"),
                 "--output-format", "dicom", *FLOAT32]) == 0
    pinned["translate_dicom"] = _dicom_summary(root / "out-dicom")

    # 3. evaluate: records (the paper's protocol) and whole volumes (the pet protocol).
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--split", "test", "--out", str(root / "ev-data"),
                 "--figure-slices", "0", *FLOAT32]) == 0
    pinned["evaluate_data"] = _report(root / "ev-data", root)
    assert main(["evaluate", "--model", str(run), "--pairs", str(pairs), "--out", str(root / "ev-pairs"), *FLOAT32]) == 0
    pinned["evaluate_pairs"] = _report(root / "ev-pairs", root)
    return pinned


def test_the_pin_tolerates_rounding_and_catches_a_change():
    """What another processor's rounding moves (1e-6) passes; a change of 1e-3 in the values, a
    changed slice position or a changed report text does not."""
    volume = np.linspace(0.0, 24000.0, 4096).reshape(16, 16, 16)
    pinned = _array_summary(volume)
    assert _same(pinned, _array_summary(volume * (1 + 1e-6)))
    assert not _same(pinned, _array_summary(volume * (1 + 1e-3)))
    assert not _same({"slices": [[1, "[0, 0, 0]"]]}, {"slices": [[1, "[0, 0, 3]"]]})
    assert _masked("SSIM 0.8123 over 3 patients") == _masked("SSIM 0.8124 over 3 patients")
    assert _masked("SSIM 0.8123 over 3 patients") != _masked("SSIM 0.8123 over 4 patients")


@pytest.mark.slow
def test_convert_translate_and_evaluate_give_the_pinned_outputs(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    produced = json.loads(json.dumps(produce(tmp_path)))
    differing = sorted(key for key in expected if not _same(expected[key], produced.get(key)))
    assert not differing, f"outputs changed: {differing}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        pinned = produce(Path(sys.argv[2]) if len(sys.argv) > 2 else Path(directory))
    Path(sys.argv[1]).write_text(json.dumps(pinned, indent=2, sort_keys=True) + "\n")
