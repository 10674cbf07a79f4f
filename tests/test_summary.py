"""`medgan-tf summary` and `medgan_tf.training.summary.describe`: the paper's parameter counts
(§2.4), the 16×16 PatchGAN (§2.4.3) and the JSON shape."""

import dataclasses
import json

import pytest

from medgan_tf import cli, presets
from medgan_tf.config import DiscriminatorConfig, GeneratorConfig
from medgan_tf.models import ublock_trainable_params
from medgan_tf.training.summary import describe

# SN conv 2→64 (k4, with bias: no norm follows), SN conv 64→128 (k4, bias-free) + its instance-norm
# γ/β, and the 128→1 conv with bias.
DISCRIMINATOR_PARAMS = 2 * 64 * 16 + 64 + 64 * 128 * 16 + 2 * 128 + 128 * 16 + 1  # 135,489


def summary_json(capsys, *flags):
    assert cli.main(["summary", *flags, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_medgan_1g_reports_one_ublock(capsys):
    summary = summary_json(capsys, "--model", "medgan_1g")
    assert summary["generator_trainable_params"] == 54_407_809
    assert summary["discriminator_trainable_params"] == DISCRIMINATOR_PARAMS == 135_489
    assert summary["generator_output_shape"] == [None, 256, 256, 1]
    assert summary["discriminator_output_shape"] == [None, 128, 128, 1]
    assert summary["discriminator_patch_shape"] == [128, 128]
    assert summary["discriminator_receptive_field"] == 16
    assert summary["loss_terms"] == {"cgan": 1.0, "perceptual": 20.0, "style": 1e-4, "content": 1e-4}


def test_medgan_reports_casnet_6(capsys):
    summary = summary_json(capsys, "--model", "medgan")
    assert summary["num_ublocks"] == 6
    assert summary["generator_trainable_params"] == 326_446_854


def test_overrides_change_the_built_networks(capsys):
    summary = summary_json(capsys, "--model", "medgan", "--image-size", "32", "--ublocks", "2", "--base-filters", "8")
    assert summary["generator_trainable_params"] == 2 * ublock_trainable_params(GeneratorConfig(base_filters=8), 32)
    assert summary["discriminator_feature_shapes"] == [[None, 32, 32, 2], [None, 16, 16, 64], [None, 16, 16, 128]]
    assert summary["discriminator_patch_shape"] == [16, 16] and summary["discriminator_receptive_field"] == 16


def test_describe_measures_the_built_discriminator():
    # The receptive field comes from the built layers: one more stride-2 conv (pix2pix n_layers = 2)
    # gives 34, and the map halves again.
    config = presets.task_preset("pet_ct", "medgan_1g")
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, image_size=32),
        generator=dataclasses.replace(config.generator, base_filters=8),
        discriminator=DiscriminatorConfig(filters=(8, 16, 32)),
    )
    summary = describe(config)
    assert summary["discriminator_receptive_field"] == 34
    assert summary["discriminator_patch_shape"] == [8, 8]
    assert json.loads(json.dumps(summary)) == summary


def test_table_output(capsys):
    assert cli.main(["summary", "--model", "medgan_1g", "--image-size", "32", "--base-filters", "8"]) == 0
    out = capsys.readouterr().out
    assert "CasNet-1" in out and "perceptual × 20" in out and "16×16 patches" in out


@pytest.mark.parametrize("flags, message", [(["--model", "nope"], "unknown model 'nope'"),
                                            (["--task", "nope"], "unknown task 'nope'"),
                                            (["--image-size", "48"], "power of two")])
def test_bad_input_is_one_line_error(capsys, flags, message):
    assert cli.main(["summary", *flags]) == 2
    assert message in capsys.readouterr().err
