"""Model selection: the `best` checkpoint is the one with the best validation metric, and
`--patience` stops a run whose metric no longer improves."""

import json

import numpy as np
import pytest

from medgan_tf import cli
from medgan_tf.errors import UserError
from medgan_tf.training.selection import BestModel


def test_best_follows_the_metrics_direction_and_patience_counts_validations():
    ssim = BestModel("ssim", patience=2)
    assert ssim.update(1, 10, {"ssim": 0.5}) == (True, None)
    assert ssim.update(2, 20, {"ssim": 0.9}) == (True, None)
    assert ssim.update(3, 30, {"ssim": 0.6}) == (False, None)
    improved, stop = ssim.update(4, 40, {"ssim": 0.9})  # equal is not better
    assert not improved and "has not improved for 2 validation(s) (--patience 2)" in stop
    assert ssim.best == {"epoch": 2, "step": 20, "metric": "ssim", "value": 0.9}
    mse = BestModel("mse")
    mse.update(1, 1, {"mse": 10.0})
    assert mse.update(2, 2, {"mse": 5.0})[0] and not mse.update(3, 3, {"mse": 7.0})[0]
    assert mse.update(4, 4, {"mse": float("nan")}) == (False, None)  # a NaN is never the best
    with pytest.raises(UserError, match="--select-by must be one of ssim, psnr, mse"):
        BestModel("vif")
    with pytest.raises(UserError, match="--patience must be a positive"):
        BestModel("ssim", patience=0)


def test_resumed_bookkeeping_continues_and_a_new_metric_starts_fresh(tmp_path):
    first = BestModel("psnr", patience=3)
    first.update(1, 5, {"psnr": 20.0})
    first.update(2, 10, {"psnr": 19.0})
    (tmp_path / "selection.json").write_text(json.dumps(first.to_dict()))
    again = BestModel.load(tmp_path, "psnr", 3)
    assert again.best["step"] == 5 and again.since_best == 1 and len(again.curve) == 2
    assert BestModel.load(tmp_path, "ssim", 3).best is None


@pytest.fixture(scope="module")
def builtin_dir():
    from medgan_tf.workflows.builtin import ensure_builtin_dataset

    return ensure_builtin_dataset("pet_denoise", 64)


def test_the_best_checkpoint_is_the_best_validation_and_patience_stops_the_run(builtin_dir, tmp_path, monkeypatch,
                                                                                capsys):
    """A run whose validation SSIM is made to peak at epoch 2 of 6 keeps ckpt-4 (2 steps an epoch)
    as `best`, stops after two validations without improvement, and exports `best` by default."""
    from medgan_tf import metrics

    scripted = iter([0.50, 0.90, 0.60, 0.40, 0.95, 0.97])

    def peaking(outputs, targets):  # one validation batch per epoch (--validation-steps 1)
        return np.array([next(scripted), 20.0, 100.0], dtype=np.float32)

    monkeypatch.setattr(metrics, "validation_means", peaking)
    run = tmp_path / "run"
    code = cli.main(["train", "--task", "pet_denoise", "--image-size", "64", "--ublocks", "1", "--base-filters", "8",
                     "--vgg-weights", "none", "--quiet", "--data", str(builtin_dir), "--epochs", "6",
                     "--steps-per-epoch", "2", "--validation-steps", "1", "--patience", "2", "--logdir", str(run)])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 8, "stopped after epoch 4: epochs 3 and 4 did not improve on epoch 2"
    assert summary["best"] == {"epoch": 2, "step": 4, "metric": "ssim", "value": pytest.approx(0.9)}
    assert [round(point["ssim"], 2) for point in summary["validation_curve"]] == [0.5, 0.9, 0.6, 0.4]
    assert "--patience 2" in summary["stopped_early"]
    assert summary["best_checkpoint"].endswith("best/ckpt-4")

    capsys.readouterr()
    assert cli.main(["export", str(run), "--out", str(tmp_path / "sm")]) == 0
    printed = capsys.readouterr().out
    assert "from the best checkpoint" in printed and "best/ckpt-4" in printed


def test_export_names_a_missing_step(builtin_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--task", "pet_denoise", "--image-size", "64", "--ublocks", "1", "--base-filters", "8",
                     "--vgg-weights", "none", "--quiet", "--data", str(builtin_dir), "--epochs", "1",
                     "--steps-per-epoch", "1", "--validation-steps", "1", "--logdir", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["export", str(run), "--checkpoint", "7", "--out", str(tmp_path / "sm")]) == 2
    assert "has no checkpoint at step 7; kept: ckpt-1" in capsys.readouterr().err
    assert cli.main(["export", str(run), "--checkpoint", "latest", "--out", str(tmp_path / "sm")]) == 0
    assert "from the latest checkpoint" in capsys.readouterr().out


def test_validate_every_scores_the_val_split_every_n_steps_and_at_the_last(builtin_dir, tmp_path, monkeypatch):
    """5 steps with --validate-every 2: validations after steps 2, 4 and 5 (the last); the best of
    the scripted SSIMs (step 4) is the `best` checkpoint."""
    from medgan_tf import metrics

    scripted = iter([0.30, 0.80, 0.70])
    monkeypatch.setattr(metrics, "validation_means",
                        lambda outputs, targets: np.array([next(scripted), 20.0, 100.0], dtype=np.float32))
    run = tmp_path / "run"
    assert cli.main(["train", "--task", "pet_denoise", "--image-size", "64", "--ublocks", "1", "--base-filters", "8",
                     "--vgg-weights", "none", "--quiet", "--data", str(builtin_dir), "--epochs", "1",
                     "--steps-per-epoch", "5", "--validation-steps", "1", "--validate-every", "2",
                     "--logdir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert [point["step"] for point in summary["validation_curve"]] == [2, 4, 5]
    assert [point["epoch"] for point in summary["validation_curve"]] == [0, 0, 1]
    assert summary["best"] == {"epoch": 0, "step": 4, "metric": "ssim", "value": pytest.approx(0.8)}
    assert summary["best_checkpoint"].endswith("best/ckpt-4")


def test_validate_every_must_be_positive(tmp_path, capsys):
    assert cli.main(["train", "--task", "pet_denoise", "--validate-every", "0", "--logdir", str(tmp_path / "run")]) == 2
    assert "train.validate_every_steps must be a positive integer or unset; received 0" in capsys.readouterr().err
