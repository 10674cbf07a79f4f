"""The shared test base: tiny configs and run directories, a DICOM series writer, and reusable
checks (save/reload, mixed precision). Test modules import it as `helpers` (tests/ is on
sys.path)."""

from __future__ import annotations

import dataclasses
import gzip
import math
from pathlib import Path

import numpy as np

from medgan_tf import config as config_lib
from medgan_tf import presets

SIZE = 64


def tiny_config(task: str = "pet_denoise", model: str = "medgan_1g", size: int = 32, ublocks: int = 1,
                base_filters: int = 8, **losses) -> config_lib.ExperimentConfig:
    """The task preset trained as `model`, shrunk for tests: `size`² slices, `ublocks` U-blocks of
    width `base_filters`, random VGG weights; `losses` replace LossConfig fields."""
    config = config_lib.override(presets.task_preset(task, model), {
        "data.image_size": size,
        "generator.num_ublocks": ublocks,
        "generator.base_filters": base_filters,
        "train.vgg_weights": "none",
    })
    return dataclasses.replace(config, losses=dataclasses.replace(config.losses, **losses)) if losses else config


def make_run(run_dir: Path, task: str, image_size: int = SIZE, **data):
    """A run directory with config.json and one checkpoint of an untrained tiny generator; `data`
    replaces DataConfig fields (e.g. context_slices=1, extra_source_modalities=("CT",) for a 2.5D
    two-source model)."""
    import tensorflow as tf

    from medgan_tf.models.generator import build_casnet
    from medgan_tf.training import checkpoints

    experiment = tiny_config(task, "medgan", size=image_size)
    if data:
        experiment = config_lib.override(experiment, {f"data.{key}": value for key, value in data.items()})
    checkpoints.write_config(run_dir, experiment)
    generator = build_casnet(experiment.generator, image_size, input_channels=experiment.data.input_channels)
    tf.train.Checkpoint(generator=generator).save(str(run_dir / "checkpoints" / "ckpt"))
    return generator, experiment


PET_SPACING = (2.8, 2.8, 2.0)  # pet_denoise's grid: volumes written on it need no interpolation


def hounsfield_ramp(z_index: int, size: int = SIZE) -> np.ndarray:
    """The CT `source_2` slice z of `write_two_source_patients`: −1000 + 100·z + 3·i HU (air at the
    low end, as a CT has)."""
    x = np.arange(size, dtype=np.float64)[:, None] * np.ones((1, size))
    return -1000.0 + 100.0 * z_index + 3.0 * x


def write_two_source_patients(root: Path, count: int = 3, size: int = SIZE, slices: int = 6) -> Path:
    """pet_denoise patients with a CT second source, on the task's grid: `root`/p<n>_low (source),
    p<n>_full (target = 1.2·low + 0.3) and p<n>_ct (`hounsfield_ramp`) .nii.gz, and `root`/pairs.csv
    with columns patient_id,source,target,source_2 (patient0, patient1, …)."""
    import nibabel as nib

    affine = np.diag([*PET_SPACING, 1.0])
    lines = ["patient_id,source,target,source_2"]
    for number in range(count):
        rng = np.random.default_rng(number)
        pet = smooth_volume((size, size, slices), rng, 0.0, 10.0) * (1.0 + 0.1 * np.arange(slices))
        ct = np.stack([hounsfield_ramp(z, size) for z in range(slices)], axis=-1)
        for name, array in (("low", pet), ("full", pet * 1.2 + 0.3), ("ct", ct)):
            nib.Nifti1Image(array.astype(np.float32), affine).to_filename(root / f"p{number}_{name}.nii.gz")
        lines.append(f"patient{number},p{number}_low.nii.gz,p{number}_full.nii.gz,p{number}_ct.nii.gz")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def export_two_source_model(root: Path, size: int = SIZE) -> Path:
    """An export (no training: untrained weights) of a tiny pet_denoise model with K = 1 context
    slice and a CT `source_2`: serving_default takes (B, size, size, 6)."""
    from medgan_tf.serving import export

    make_run(root / "run", "pet_denoise", image_size=size, context_slices=1, extra_source_modalities=("CT",))
    return export.export_run(root / "run", root / "savedmodels" / "pet_denoise")


def assert_save_reload_identical(model, inputs, tmp_path: Path) -> None:
    """Saving `model` as .keras and loading it back gives bit-identical outputs on `inputs`."""
    import keras

    path = Path(tmp_path) / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(reloaded(inputs)), np.asarray(model(inputs)))


def precision_policy(name: str):
    """Run the block under Keras' global dtype policy `name` ("mixed_float16", ...), restoring
    the previous policy afterwards even when the block fails (the package's own helper)."""
    from medgan_tf.training.runtime import dtype_policy

    return dtype_policy(name)


LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_affine(spacing=(0.9, 1.3, 2.5), angles_degrees=(20.0, -12.0), origin=(-40.0, -35.0, -20.0)) -> np.ndarray:
    """RAS affine: rotation about z then about x, anisotropic voxels; right-handed in LPS too."""
    a, b = (math.radians(v) for v in angles_degrees)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ rz @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def smooth_volume(shape, rng, low=0.0, high=1000.0) -> np.ndarray:
    """Asymmetric smooth blobs (so a transposed or flipped read cannot match)."""
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij"), axis=-1)
    volume = np.zeros(shape)
    for _ in range(6):
        centre, width = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.3)
        volume += rng.uniform(0.3, 1.0) * np.exp(-np.sum((grid - centre) ** 2, axis=-1) / (2 * width**2))
    volume += 0.3 * grid[..., 0] + 0.1 * grid[..., 1]
    return low + (high - low) * volume / volume.max()


def write_dicom_series(
    folder: Path,
    array: np.ndarray,
    affine: np.ndarray,
    *,
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    extra: dict | None = None,
    shuffle_seed: int | None = 0,
    reverse_instance_numbers: bool = False,
) -> Path:
    """Write `array` (I, J, K) on RAS `affine` as one DICOM file per k-slice (int16 stored values
    with RescaleSlope/Intercept); files are named in shuffled order so the reader must sort.
    `reverse_instance_numbers` numbers the slices K…1 along k (against their positions)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, MRImageStorage,
                             PositronEmissionTomographyImageStorage, generate_uid)

    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine
    row_cosine = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    column_cosine = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    assert np.allclose(np.cross(row_cosine, column_cosine), lps[:3, 2] / np.linalg.norm(lps[:3, 2]), atol=1e-6)
    sop_class = {"CT": CTImageStorage, "MR": MRImageStorage}.get(modality, PositronEmissionTomographyImageStorage)
    series_uid, study_uid = generate_uid(), generate_uid()
    stored = np.round((np.asarray(array, dtype=np.float64) - intercept) / slope)
    assert stored.min() >= -32768 and stored.max() <= 32767
    order = np.random.default_rng(shuffle_seed).permutation(array.shape[2]) if shuffle_seed is not None else range(array.shape[2])
    for file_number, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality = modality
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.PixelSpacing = [f"{np.linalg.norm(lps[:3, 1]):.10g}", f"{np.linalg.norm(lps[:3, 0]):.10g}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.10g}"
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row_cosine, *column_cosine)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.InstanceNumber = array.shape[2] - int(k) if reverse_instance_numbers else int(k) + 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype("<i2")).tobytes()  # [row, column]
        ds.save_as(folder / f"IM{file_number:04d}.dcm", enforce_file_format=True)
    return folder




def jpeg_lossless_sv1(pixels: np.ndarray, precision: int = 16) -> bytes:
    """A JPEG Lossless bitstream (ITU-T T.81 process 14, Huffman, selection value 1: predict each
    sample from its left neighbour) of 2-D integer `pixels`, their low `precision` bits coded as
    unsigned (a DICOM decoder reinterprets them by PixelRepresentation).

    Built by hand because no installed encoder writes this transfer syntax; one Huffman table
    gives each difference category SSSS = 0…16 a 5-bit code (T.81 H.1.2.2, F.1.2.1).
    """
    import struct

    samples = np.asarray(pixels).astype(np.int64) & ((1 << precision) - 1)
    predicted = np.empty_like(samples)
    predicted[0, 0] = 1 << (precision - 1)
    predicted[0, 1:] = samples[0, :-1]  # first row: the left neighbour
    predicted[1:, 0] = samples[:-1, 0]  # first column: the sample above
    predicted[1:, 1:] = samples[1:, :-1]
    differences = (samples - predicted) % (1 << 16)
    differences = np.where(differences >= 1 << 15, differences - (1 << 16), differences)
    bits, count, out = 0, 0, bytearray()
    for difference in differences.ravel().tolist():
        category = int(abs(difference)).bit_length()
        extra = 0 if category in (0, 16) else (difference if difference > 0 else difference + (1 << category) - 1)
        length = 5 + (category if category < 16 else 0)
        bits, count = (bits << length) | (category << (length - 5)) | extra, count + length
        while count >= 8:
            count -= 8
            byte = (bits >> count) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        bits &= (1 << count) - 1
    if count:
        byte = ((bits << (8 - count)) | ((1 << (8 - count)) - 1)) & 0xFF  # pad with 1-bits
        out += bytes([byte, 0x00]) if byte == 0xFF else bytes([byte])
    rows, columns = samples.shape
    frame = struct.pack(">HHBHHBBBB", 0xFFC3, 11, precision, rows, columns, 1, 1, 0x11, 0)
    table = struct.pack(">HHB", 0xFFC4, 2 + 1 + 16 + 17, 0x00) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    scan = struct.pack(">HHBBBBBB", 0xFFDA, 8, 1, 1, 0x00, 1, 0, 0)
    return b"\xff\xd8" + frame + table + scan + bytes(out) + b"\xff\xd9"


def compress_series(folder: Path, syntax: str) -> Path:
    """Re-encode every file of the DICOM series in `folder` in place with transfer syntax `syntax`:
    JPEG Lossless process 14 (1.2.840.10008.1.2.4.57 / .70) through `jpeg_lossless_sv1`, any other
    through pydicom's own encoders (`Dataset.compress`)."""
    import pydicom
    from pydicom.encaps import encapsulate

    for file in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(file))
        if syntax in ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"):
            ds.PixelData = encapsulate([jpeg_lossless_sv1(ds.pixel_array, int(ds.BitsStored))])
            ds.file_meta.TransferSyntaxUID = syntax
            ds["PixelData"].VR = "OB"
        else:
            ds.compress(syntax)
        ds.save_as(str(file), enforce_file_format=True)
    return folder


def dcm2niix_nifti(series: Path, out_dir: Path):
    """The independent converter dcm2niix (requirements-test.txt's wheel, else one on PATH) run on
    the DICOM `series` folder → its one NIfTI image (nibabel), or a pytest skip when dcm2niix is
    not installed."""
    import shutil
    import subprocess

    import nibabel as nib
    import pytest

    # The pinned wheel first: a system dcm2niix (e.g. Debian's) may be older and lack decoders
    # (JPEG-LS) the tests need.
    try:
        import dcm2niix

        binary = str(dcm2niix.bin)
    except ImportError:
        binary = shutil.which("dcm2niix")
    if binary is None:
        pytest.skip("dcm2niix is not installed (pip install -r requirements-test.txt)")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([binary, "-z", "n", "-b", "n", "-f", "series", "-o", str(out_dir), str(series)],
                         capture_output=True, text=True, timeout=120)
    images = sorted(out_dir.glob("*.nii"))
    assert run.returncode == 0 and len(images) == 1, f"dcm2niix gave {images}: {run.stdout}\n{run.stderr}"
    return nib.load(str(images[0]))


def same_grid(image, array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """`image` (nibabel) against (`array`, `affine`) in world coordinates: both reoriented to the
    closest RAS+ axes (dcm2niix flips and orders axes its own way) → (its values, ours, largest
    affine difference in mm)."""
    import nibabel as nib

    theirs = nib.as_closest_canonical(image)
    ours = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array, np.float32), np.asarray(affine, np.float64)))
    assert theirs.shape == ours.shape, f"shape {theirs.shape} vs ours {ours.shape}"
    return theirs.get_fdata(), ours.get_fdata(), float(np.max(np.abs(theirs.affine - ours.affine)))


def assert_no_secret_bytes(files, secrets, ignore_case: bool = False) -> None:
    """No `secrets` string occurs in any of `files`, read raw and, for .gz files, decompressed too
    (compared lower-cased with `ignore_case`)."""
    for path in files:
        blobs = [path.read_bytes()]
        if path.suffix == ".gz":
            blobs.append(gzip.decompress(blobs[0]))
        for blob in blobs:
            for secret in secrets:
                if ignore_case:
                    assert secret.lower().encode() not in blob.lower(), (secret, path.name)
                else:
                    assert secret.encode() not in blob, (secret, path.name)


def portable_runs(monkeypatch) -> list[str]:
    """A list that records the name of every PortableRunner that runs a pipeline (which still runs)."""
    from apache_beam.runners.portability.portable_runner import PortableRunner

    used: list[str] = []
    original = PortableRunner.run_pipeline

    def run_pipeline(self, pipeline, options):
        used.append(type(self).__name__)
        return original(self, pipeline, options)

    monkeypatch.setattr(PortableRunner, "run_pipeline", run_pipeline)
    return used
