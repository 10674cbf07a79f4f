import pytest

from medgan_tf import config, presets, registry, tasks


def test_paper_defaults():
    c = config.ExperimentConfig()
    assert (c.losses.perceptual, c.losses.style, c.losses.content) == (20.0, 1e-4, 1e-4)
    assert c.train.generator_steps == 3
    assert (c.train.generator_learning_rate, c.train.beta_1) == (2e-4, 0.5)
    assert (c.train.batch_size, c.train.epochs) == (1, 200)
    assert (c.generator.num_ublocks, c.data.image_size, c.generator.normalization) == (6, 256, "instance")


@pytest.mark.parametrize("task", tasks.TASKS.names())
def test_json_round_trip(task):
    c = presets.task_preset(task, "medgan_1g")
    assert config.experiment_from_json(config.to_json(c)) == c


def test_diff_and_override():
    a = presets.task_preset("pet_ct")
    b = config.override(a, {"train.epochs": 3, "generator.num_ublocks": 1})
    assert config.diff(a, b) == {"generator.num_ublocks": (6, 1), "train.epochs": (200, 3)}
    with pytest.raises(ValueError, match="no field 'nope'"):
        config.override(a, {"train.nope": 1})


def test_unknown_task_and_model_fail_loudly():
    from medgan_tf.errors import UserError

    with pytest.raises(UserError, match="pet_denoise.*TOML"):
        presets.task_preset("ct_mr")
    with pytest.raises(KeyError, match="registered: .*medgan"):
        presets.MODELS.get("nope")


def test_duplicate_registration_is_an_error():
    reg = registry.Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
