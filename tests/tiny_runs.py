"""A tiny run directory (64², one U-block, width 8, untrained) for export/translate/evaluate tests."""

from pathlib import Path

from medgan_tf import config as config_lib

from medgan_tf import presets

SIZE = 64


def make_run(run_dir: Path, task: str, image_size: int = SIZE):
    """A run directory with config.json and one checkpoint of an untrained tiny generator."""
    import tensorflow as tf

    from medgan_tf.models.generator import build_casnet
    from medgan_tf.training import checkpoints

    experiment = config_lib.override(
        presets.task_preset(task),
        {"data.image_size": image_size, "generator.num_ublocks": 1, "generator.base_filters": 8, "train.vgg_weights": "none"},
    )
    checkpoints.write_config(run_dir, experiment)
    generator = build_casnet(experiment.generator, image_size)
    tf.train.Checkpoint(generator=generator).save(str(run_dir / "checkpoints" / "ckpt"))
    return generator, experiment
