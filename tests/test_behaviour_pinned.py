"""Behaviour pinned across refactorings: one small case through `convert`, `translate` (NIfTI and
DICOM) and `evaluate` (`--data` and `--pairs`) must give what the pinned version gave.

`tests/golden/behaviour.json` holds the SHA-256 of every record payload and of the manifest (its
timing removed), of the evaluation reports (JSON and Markdown) and of the translated outputs'
values. Regenerate it only for an intended change of behaviour:

    TF_CPP_MIN_LOG_LEVEL=3 python tests/test_behaviour_pinned.py tests/golden/behaviour.json

and say in the commit why the outputs changed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import make_run, write_dicom_series, write_two_source_patients  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "behaviour.json"
SIZE = 32


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


def _array_digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    return _digest(str(array.shape).encode() + array.tobytes())


def _dicom_digest(folder: Path) -> str:
    import pydicom

    slices = [pydicom.dcmread(str(p)) for p in sorted(folder.glob("*.dcm"))]
    parts = [(s.InstanceNumber, s.pixel_array.tobytes(), str(s.RescaleSlope if "RescaleSlope" in s else ""),
              str(s.RescaleIntercept if "RescaleIntercept" in s else ""), str(s.ImagePositionPatient)) for s in slices]
    return _digest(repr(sorted(parts)).encode())


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


def _report(folder: Path, root: Path) -> dict[str, str]:
    """Digests of a report's files, with the temporary folder's path replaced by ROOT."""
    names = [p for p in ("metrics.json", "metrics.md", "per_patient.csv") if (folder / p).is_file()]
    texts = {name: (folder / name).read_text().replace(str(root), "ROOT") for name in names}
    if "metrics.json" in texts:
        texts["metrics.json"] = json.dumps(_rounded(json.loads(texts["metrics.json"])), sort_keys=True)
    return {name: _digest(text.encode()) for name, text in texts.items()}


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
    assert main(["translate", "--model", str(run), "--input", str(source), "--output", str(root / "out.nii.gz")]) == 0
    pinned["translate_nifti"] = _array_digest(nib.load(str(root / "out.nii.gz")).get_fdata(dtype=np.float32))
    image = nib.load(str(source))
    values = image.get_fdata(dtype=np.float32)[:, :, :6]
    slope = float(values.max()) / 30000.0
    series = write_dicom_series(root / "series", np.round(values / slope) * slope, image.affine, modality="PT",
                                slope=slope, intercept=0.0)
    assert main(["translate", "--model", str(run), "--input", str(series), "--output", str(root / "out-dicom"),
                 "--output-format", "dicom"]) == 0
    pinned["translate_dicom"] = _dicom_digest(root / "out-dicom")

    # 3. evaluate: records (the paper's protocol) and whole volumes (the pet protocol).
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--split", "test", "--out", str(root / "ev-data"),
                 "--figure-slices", "0"]) == 0
    pinned["evaluate_data"] = _report(root / "ev-data", root)
    assert main(["evaluate", "--model", str(run), "--pairs", str(pairs), "--out", str(root / "ev-pairs")]) == 0
    pinned["evaluate_pairs"] = _report(root / "ev-pairs", root)
    return pinned


@pytest.mark.slow
def test_convert_translate_and_evaluate_give_the_pinned_outputs(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    produced = json.loads(json.dumps(produce(tmp_path)))
    differing = sorted(key for key in expected if produced.get(key) != expected[key])
    assert not differing, f"outputs changed: {differing}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        pinned = produce(Path(sys.argv[2]) if len(sys.argv) > 2 else Path(directory))
    Path(sys.argv[1]).write_text(json.dumps(pinned, indent=2, sort_keys=True) + "\n")
