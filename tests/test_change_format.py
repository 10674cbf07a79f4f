"""Adding a volume format is one entry of the format table: a toy format (NumPy `.npz` holding the
array and its affine) registered here, and nowhere else, is read by `translate --input`, written by
`translate --output x.npz`, offered by `--output-format`, and names the outputs of `--inputs`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import make_run  # noqa: E402

from medgan_tf import files
from medgan_tf.cli import main
from medgan_tf.data import io
from medgan_tf.data.io import Provenance, Volume
from medgan_tf.errors import UserError


class NpzFormat:
    """A file of arrays `array` (float32) and `affine` (4×4), modality and unit as strings."""

    key = "npz"
    name = "NumPy archive"
    suffixes = (".npz",)
    folder = False
    name_rule = "a NumPy archive ending in .npz"

    def claims(self, path: Path) -> bool:
        return path.is_file() and path.name.endswith(".npz")

    def writes(self, path: Path) -> bool:
        return str(path).endswith(".npz")

    def read(self, path: Path, modality_hint: str | None) -> Volume:
        with np.load(path) as archive:
            return Volume(archive["array"].astype(np.float32), archive["affine"], str(archive["modality"]),
                          str(archive["unit"]))

    def check_destination(self, path: Path) -> None:
        if not self.writes(Path(path)):
            raise UserError(f"output {path} must be {self.name_rule}")

    def write(self, volume: Volume, path: Path, provenance: Provenance | None = None) -> Path:
        with files.atomic_file(path, suffix=".npz") as temporary:
            np.savez(temporary, array=volume.array, affine=volume.affine, modality=volume.modality, unit=volume.unit)
        return Path(path)


@pytest.fixture
def npz_format():
    io.formats()  # the built-in formats first, as in any run
    with io.FORMATS.temporarily("npz", NpzFormat()) as volume_format:
        yield volume_format
    assert [f.key for f in io.formats()] == ["nifti", "dicom"]


def test_a_format_registered_in_one_place_is_read_written_and_offered(npz_format, tmp_path, capsys):
    run = tmp_path / "run"
    make_run(run, "pet_denoise", image_size=32)
    rng = np.random.default_rng(0)
    source = Volume(rng.uniform(0, 5000, (32, 32, 4)).astype(np.float32), np.diag([2.8, 2.8, 2.0, 1.0]), "PT", "Bq/ml")
    npz_format.write(source, tmp_path / "in.npz")

    assert main(["translate", "--model", str(run), "--input", str(tmp_path / "in.npz"), "--output",
                 str(tmp_path / "out.npz"), "--quiet"]) == 0
    output = npz_format.read(tmp_path / "out.npz", None)
    assert output.shape == source.shape and output.modality == "PT"
    np.testing.assert_allclose(output.affine, source.affine)

    (tmp_path / "inputs.csv").write_text("patient_id,input\np1,in.npz\n")
    assert main(["translate", "--model", str(run), "--inputs", str(tmp_path / "inputs.csv"), "--output-dir",
                 str(tmp_path / "many"), "--output-format", "npz", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["p1.npz"]

    assert main(["translate", "--model", str(run), "--input", str(tmp_path / "in.npz"), "--output",
                 str(tmp_path / "out.png")]) == 2
    assert "a NumPy archive ending in .npz" in capsys.readouterr().err  # the rule every format states
