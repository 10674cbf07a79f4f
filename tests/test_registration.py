"""Registration of a target to its source (`medgan_tf.data.registration`, `convert --register`):
known rigid moves recovered within 1 mm and 0.5° (within one modality and across, MR against CT
of one head phantom), a 5 % scaling within 1 % by `affine`, two different phantoms rejected by the
similarity check, implausible moves rejected, and the converter end to end on `synth --misalign`
data with the ground truth of the pairs CSV."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from medgan_tf.data import geometry, pair_previews, registration
from medgan_tf.data.io import Volume
from medgan_tf.data.pairs import PairRejected
from medgan_tf.data.phantoms import simulations
from medgan_tf.data.synthetic import write_synthetic_dataset

pytest.importorskip("SimpleITK")

SHAPE, FIELD_MM, SLICE_MM = (64, 64, 32), 192.0, 3.0  # 3 mm voxels: fast


@pytest.fixture(scope="module")
def head():
    """One head phantom as MR and CT, and a second MR scan of it (its own noise and coil bias)."""
    mr, ct, affine, _ = simulations.simulate_mr_ct(np.random.default_rng(3), FIELD_MM, shape=SHAPE, slice_mm=SLICE_MM)
    rng = np.random.default_rng(4)
    bias = np.linspace(0.9, 1.1, SHAPE[0])[:, None, None] * np.ones(SHAPE)
    second = np.abs(mr * bias + rng.normal(0, 0.02 * float(mr.max()), SHAPE)).astype(np.float32)
    return (Volume(mr, affine, "MR", "a.u.", {}), Volume(ct, affine, "CT", "HU", {}),
            Volume(second, affine, "MR", "a.u.", {}))


def trunk_ct() -> Volume:
    """A trunk phantom's CT (HU) straight from its tissue map: another anatomy than the head."""
    from medgan_tf.data.phantoms.body import body_maps, random_body
    from medgan_tf.data.phantoms.geometry import axial_affine, grid_world
    from medgan_tf.data.phantoms.tissues import ct_from_labels

    rng = np.random.default_rng(0)
    shape, affine = (64, 64, 16), axial_affine((64, 64, 16), (6.0, 6.0, 4.0))
    labels, density, _ = body_maps(random_body(rng, 384.0), grid_world(shape, affine), (0.5, 80.0))
    return Volume(ct_from_labels(labels, density, rng), affine, "CT", "HU", {})


def moved(volume: Volume, matrix: np.ndarray) -> Volume:
    """`volume` with its anatomy at world x moved to matrix·x (the grid moves; no interpolation)."""
    return dataclasses.replace(volume, affine=matrix @ volume.affine)


def errors(found: list, truth: np.ndarray, centre: np.ndarray) -> tuple[float, float]:
    """(rotation error in degrees, translation error in mm at `centre`) of a found 4×4 against the truth."""
    report = registration.linear_report(np.linalg.inv(truth) @ np.asarray(found), centre)
    return report["rotation_deg"], report["translation_mm"]


MOVES = [  # (metric, rotation about x, y, z in degrees, translation mm)
    ("mutual information", (3.0, -2.0, 3.0), (6.0, -5.0, 4.0)),
    ("mutual information", (0.0, 0.0, 5.0), (-10.0, 0.0, 0.0)),
    ("correlation", (-2.0, 3.0, -3.5), (2.0, 7.0, -6.0)),
]


@pytest.mark.parametrize("metric,rotation,translation", MOVES)
def test_rigid_recovers_a_known_move_within_1_mm_and_half_a_degree(head, metric, rotation, translation):
    source, ct, second = head
    target = ct if metric == "mutual information" else second
    centre = registration._centre(source)
    truth = registration.rigid_matrix(rotation, translation, centre)
    assert registration.linear_report(truth, centre)["rotation_deg"] <= 5.0 + 1e-6
    settings = registration.RegistrationSettings(method="rigid")
    registered, report = registration.register_target(source, moved(target, truth), settings, metric)
    rotation_error, translation_error = errors(report["matrix"], truth, centre)
    assert rotation_error < 0.5 and translation_error < 1.0, (rotation_error, translation_error)
    assert report["similarity_after"] > report["similarity_before"] + 0.05  # it was misaligned, and no longer is
    registration.check(report, settings)  # accepted
    # The registered target lies where the anatomy of the source is: its affine is the original's.
    assert np.allclose(registered.affine, target.affine, atol=1.0)
    json.dumps(report)  # goes into manifest.json as it is


def test_affine_recovers_a_five_percent_scaling_within_one_percent(head):
    source, ct, _ = head
    centre = registration._centre(source)
    scaling = np.diag([1.05, 1.05, 1.05, 1.0])
    scaling[:3, 3] = centre - 1.05 * centre  # about the centre
    truth = registration.rigid_matrix((0.0, 0.0, 2.0), (3.0, -2.0, 0.0), centre) @ scaling
    _, report = registration.register_target(source, moved(ct, truth), registration.RegistrationSettings(method="affine"),
                                             "mutual information")
    assert np.allclose(report["scales"], 1.05, atol=0.01), report["scales"]
    assert report["similarity_after"] > 0.5 and report["rotation_deg"] == pytest.approx(2.0, abs=0.5)


def test_two_different_phantoms_are_rejected_by_the_similarity_check(head):
    source = head[0]
    body_ct = trunk_ct()
    # Few iterations: the similarity is checked first, and a stranger never converges anyway.
    settings = registration.RegistrationSettings(method="rigid", max_rotation_deg=180, max_translation_mm=1000, iterations=40)
    _, report = registration.register_target(source, body_ct, settings, "mutual information")
    with pytest.raises(PairRejected, match="similarity"):
        registration.check(report, settings)


def test_an_implausible_or_unconverged_registration_is_rejected_with_its_reason(head):
    source, ct, _ = head
    centre = registration._centre(source)
    truth = registration.rigid_matrix((0.0, 0.0, 4.0), (8.0, 0.0, 0.0), centre)
    _, report = registration.register_target(source, moved(ct, truth), registration.RegistrationSettings(method="rigid"),
                                             "mutual information")
    with pytest.raises(PairRejected, match="--max-rotation 2°"):
        registration.check(report, registration.RegistrationSettings(method="rigid", max_rotation_deg=2))
    with pytest.raises(PairRejected, match="--max-translation 5 mm"):
        registration.check(report, registration.RegistrationSettings(method="rigid", max_translation_mm=5))
    with pytest.raises(PairRejected, match="did not converge"):
        registration.check({**report, "converged": False}, registration.RegistrationSettings(method="rigid"))
    with pytest.raises(PairRejected, match="got worse"):
        registration.check({**report, "similarity_after": report["similarity_before"] - 0.1},
                           registration.RegistrationSettings(method="rigid"))


def test_deformable_runs_after_the_affine_stage_and_reports_its_displacement(head):
    source, ct, _ = head
    truth = registration.rigid_matrix((0.0, 2.0, 0.0), (4.0, 0.0, 0.0), registration._centre(source))
    registered, report = registration.register_target(source, moved(ct, truth),
                                                      registration.RegistrationSettings(method="deformable", iterations=8),
                                                      "mutual information")
    assert set(report["displacement_mm"]) == {"mean", "p95", "max"}
    assert registered.array.shape == source.array.shape and np.allclose(registered.affine, source.affine)
    assert report["similarity_after"] > report["similarity_before"]


def test_bad_settings_are_one_line_errors():
    from medgan_tf.errors import UserError

    with pytest.raises(UserError, match="expected one of none, rigid, affine, deformable"):
        registration.RegistrationSettings(method="elastic")
    with pytest.raises(UserError, match="positive"):
        registration.RegistrationSettings(method="rigid", max_rotation_deg=-1)


def test_convert_register_rigid_recovers_the_misalignment_synth_wrote_and_rejects_a_stranger(tmp_path):
    from medgan_tf.cli import main as cli_main
    from medgan_tf.data.manifest import read_manifest

    pairs = write_synthetic_dataset("mr_ct", tmp_path / "synth", patients=1, seed=1, field_of_view_mm=FIELD_MM,
                                    misalign=(6.0, 4.0))
    with open(pairs) as handle:
        truth = {row["patient_id"]: row for row in csv.DictReader(handle)}
    assert all(0 < float(r["misalign_rotation_deg"]) <= 4 and 0 < float(r["misalign_translation_mm"]) <= 6 for r in truth.values())
    # A third row: the head's MR against a trunk's CT, which no registration can make one anatomy.
    from medgan_tf.data.io import write_nifti

    trunk = str(write_nifti(trunk_ct(), tmp_path / "trunk_ct.nii.gz"))
    with open(pairs, "a", newline="") as handle:
        first = truth["synthetic-mr_ct-000"]
        csv.writer(handle).writerow(["stranger", first["source"], trunk] + [""] * 8)
    out = tmp_path / "out"
    status = cli_main(["convert", "--pairs", str(pairs), "--task", "mr_ct", "--out", str(out), "--image-size", "32",
                       "--spacing", "6,6,6", "--salt", "test-salt-0123456789", "--register", "rigid", "--preview"])
    assert status == 0
    manifest = read_manifest(out)
    assert manifest["registration"]["method"] == "rigid" and manifest["converted_pairs"] == 1
    (rejected,) = manifest["rejected"]
    assert "similarity" in rejected["reason"] and str(tmp_path) not in json.dumps(manifest)
    # --preview: one picture per pair, the rejected one too (named by pseudonym and CSV line), saying so in red.
    (converted,) = manifest["volumes"]
    names = {f"{converted['patient_key']}-line2.png", f"{rejected['patient_key']}-line{rejected['row']}.png"}
    assert {p.name for p in (out / "previews").iterdir()} == names
    for name in names:
        image = png(out / "previews" / name)
        assert image.shape[1::-1] == pair_previews.figure_pixels(2)
        assert red_pixels(image) == (name.endswith(f"line{rejected['row']}.png"))
    from medgan_tf.data.pseudonyms import pseudonym

    for patient_id, row in truth.items():
        summary = next(v for v in manifest["volumes"] if v["patient_key"] == pseudonym(patient_id, b"test-salt-0123456789"))
        report = summary["registration"]
        assert report["rotation_deg"] == pytest.approx(float(row["misalign_rotation_deg"]), abs=0.5)
        assert report["translation_mm"] == pytest.approx(float(row["misalign_translation_mm"]), abs=1.0)


def test_evaluate_pairs_register_scores_against_the_registered_target_and_says_so(tmp_path, head):
    from medgan_tf.cli import main as cli_main
    from medgan_tf.data.io import write_nifti

    source, ct, _ = head
    truth = registration.rigid_matrix((0.0, 2.0, 3.0), (5.0, -4.0, 0.0), registration._centre(source))
    write_nifti(source, tmp_path / "mr.nii.gz")
    write_nifti(moved(ct, truth), tmp_path / "ct_moved.nii.gz")
    write_nifti(ct, tmp_path / "prediction.nii.gz")  # a perfect synthetic CT, in the source's frame
    (tmp_path / "pairs.csv").write_text("patient_id,source,target,prediction\np1,mr.nii.gz,ct_moved.nii.gz,prediction.nii.gz\n")
    mae = {}
    for method in ("none", "rigid"):
        out = tmp_path / method
        assert cli_main(["evaluate", "--pairs", str(tmp_path / "pairs.csv"), "--task", "mr_ct", "--protocol", "synthrad2023",
                         "--out", str(out), "--register", method]) == 0
        report = json.loads((out / "metrics.json").read_text())
        mae[method] = report["per_patient"][0]["scores"]["model"]["mae"]
        registered = [note for note in report["notes"] if "registered to their sources" in note]
        assert bool(registered) == (method != "none")
    assert report["per_patient"][0]["registration"]["rotation_deg"] == pytest.approx(3.6, abs=0.5)
    assert mae["rigid"] < 0.25 * mae["none"], mae


def test_a_body_mask_on_the_source_frame_restricts_the_metric_and_the_move_is_still_found(head):
    source, ct, _ = head
    from scipy import ndimage

    inside = ndimage.binary_fill_holes(ndimage.binary_closing(source.array > 0.1 * source.array.max(), iterations=3))
    body = Volume(ndimage.binary_dilation(inside, iterations=3).astype(np.float32), source.affine, "OT", "a.u.", {})
    assert 0.1 < body.array.mean() < 0.9  # a body, not the whole field of view
    centre = registration._centre(source)
    truth = registration.rigid_matrix((2.0, 0.0, -3.0), (-4.0, 5.0, 2.0), centre)
    _, report = registration.register_target(source, moved(ct, truth), registration.RegistrationSettings(method="rigid"),
                                             "mutual information", mask=body)
    rotation_error, translation_error = errors(report["matrix"], truth, centre)
    assert rotation_error < 0.5 and translation_error < 1.0, (rotation_error, translation_error)


# --------------------------------------------------------------------------- convert --preview


def png(path) -> np.ndarray:
    """A PNG's pixels (height, width, RGBA in [0, 1])."""
    from matplotlib import image

    return image.imread(str(path))


def red_pixels(image: np.ndarray) -> bool:
    """Whether the picture holds red (the rejection's text): the checkerboards are grey."""
    return bool(((image[..., 0] > 0.7) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)).sum() > 20)


def axial_halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inner part of the axial checkerboard of the left (before) and right (after) column."""
    height, width = image.shape[:2]
    rows = slice(int(0.25 * height), int(0.45 * height))
    half = width // 2
    inner = slice(int(0.3 * half), int(0.7 * half))
    return image[rows, inner, :3], image[rows, half:][:, inner, :3]


def test_preview_shows_the_misalignment_before_and_not_after(head):
    source, ct, _ = head
    truth = registration.rigid_matrix((0.0, 2.0, 3.0), (6.0, -4.0, 0.0), registration._centre(source))
    grid = geometry.model_grid(source, (3.0, 3.0, 3.0), 64)
    misaligned = moved(ct, truth)
    report = {"method": "rigid", "metric": "mutual information", "rotation_deg": 3.6, "translation_mm": 7.2,
              "similarity_before": 0.3, "similarity_after": 0.6}
    fixed = png_bytes(pair_previews.render(source, misaligned, grid, (3.0, 3.0, 3.0), "p", registered=ct, report=report))
    before, after = axial_halves(fixed)
    assert fixed.shape[1::-1] == pair_previews.figure_pixels(2)
    assert np.abs(before - after).mean() > 0.02  # the anatomy moved between the columns
    same = png_bytes(pair_previews.render(source, misaligned, grid, (3.0, 3.0, 3.0), "p", registered=misaligned))
    assert np.abs(np.subtract(*axial_halves(same))).max() == 0  # control: the region holds only the image
    one = png_bytes(pair_previews.render(source, ct, grid, (3.0, 3.0, 3.0), "p"))
    assert one.shape[1::-1] == pair_previews.figure_pixels(1) and not red_pixels(one)


def png_bytes(data: bytes) -> np.ndarray:
    import io

    from matplotlib import image

    return image.imread(io.BytesIO(data), format="png")


def test_preview_without_register_and_on_an_object_store(tmp_path):
    """Without --register one column "as converted"; on an object store the pictures are written in
    place beside the shards, whole (no temporary object left)."""
    from objectstore import ObjectStoreTestFileSystem  # noqa: E402  (tests/ is on sys.path)
    from pipelines import convert

    previous, ObjectStoreTestFileSystem.root = ObjectStoreTestFileSystem.root, tmp_path
    try:
        write_synthetic_dataset("mr_ct", tmp_path / "in", patients=2, seed=2, field_of_view_mm=FIELD_MM, misalign=(6.0, 4.0))
        assert convert.run(["--pairs", "testfs://in/pairs.csv", "--task", "mr_ct", "--out", "testfs://remote",
                            "--image-size", "32", "--spacing", "6,6,6", "--salt", "test-salt-0123456789", "--preview"]) == 0
    finally:
        ObjectStoreTestFileSystem.root = previous
    written = sorted((tmp_path / "remote" / "previews").iterdir())
    assert len(written) == 2 and all(p.name.endswith("-line2.png") or p.name.endswith("-line3.png") for p in written)
    assert all(png(p).shape[1::-1] == pair_previews.figure_pixels(1) for p in written)


def test_a_preview_that_cannot_be_drawn_costs_a_warning_not_the_pair(tmp_path, caplog):
    from types import SimpleNamespace

    from pipelines.previews import PreviewWriter

    writer = PreviewWriter(str(tmp_path / "previews"), SimpleNamespace(spacing_mm=(3.0, 3.0, 3.0), image_size=32), 5, "abc")
    writer(SimpleNamespace(source=None, target=None, registered=None, report=None, rejected=None))  # nothing to draw
    assert "could not be written" in caplog.text and not (tmp_path / "previews").exists()
    assert writer.path.endswith("/previews/abc-line5.png")
