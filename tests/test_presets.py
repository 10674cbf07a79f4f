"""Presets: the paper's task settings and recipes, and the seam a new baseline plugs into."""

import keras
import numpy as np
import pytest

from medgan_tf import presets
from medgan_tf.config import LOSS_TERMS
from medgan_tf.errors import UserError


def test_recipes_state_display_name_table_and_networks():
    expected_tables = {"cgan": ("I",), "perceptual": ("I",), "style_content": ("I",), "medgan_1g": ("I",),
                       "pix2pix": ("II",), "pan": ("II",), "id_cgan": ("II",), "fila_sgan": ("II",),
                       "medgan": ("I", "II")}
    for name, tables in expected_tables.items():
        recipe = presets.MODELS.get(name)
        assert recipe.paper_tables == tables
        assert recipe.generator is presets.casnet_generator
        assert recipe.discriminator is presets.patchgan_discriminator
    assert [presets.MODELS.get(n).display_name for n in ("medgan_1g", "id_cgan", "fila_sgan")] == [
        "MedGAN-1G", "ID-CGAN", "Fila-sGAN"]
    assert presets.tables() == {
        "I": ["cgan", "perceptual", "style_content", "medgan_1g", "medgan"],
        "II": ["pix2pix", "pan", "id_cgan", "fila_sgan", "medgan"],
    }


def test_pan_states_its_margin():
    assert presets.MODELS.get("pan").losses.pan_margin == presets.PAN_MARGIN == 1.0
    assert "m = 1" in presets.MODELS.get("pan").description


def _tiny_discriminator(config):
    """A one-conv conditional patch discriminator: the toy baseline's own network, with the
    interface MedGAN expects ({"probability", "logits", "features"})."""
    size = config.data.image_size
    candidate = keras.Input((size, size, 1), name="candidate_image")
    source = keras.Input((size, size, 1), name="source_image")
    pair = keras.layers.Concatenate(name="input_pair")([candidate, source])
    hidden = keras.layers.Conv2D(4, 4, strides=2, padding="same", name="toy_hidden")(pair)
    logits = keras.layers.Conv2D(1, 4, padding="same", name="toy_logits")(hidden)
    probability = keras.layers.Activation("sigmoid", name="toy_probability")(logits)
    return keras.Model([candidate, source], {"probability": probability, "logits": logits,
                                             "features": [pair, hidden]}, name="toy_discriminator")


def test_a_recipe_with_its_own_discriminator_trains_one_step():
    """Adding a baseline with its own network is one recipe: nothing else changes."""
    from medgan_tf.config import override
    from medgan_tf.training import build_model

    recipe = presets.ModelRecipe("toy_baseline", "Toy", 1, presets.only(l1=10.0), (),
                                 "A test recipe.", discriminator=_tiny_discriminator)
    with presets.MODELS.temporarily("toy_baseline", recipe):
        config = override(presets.task_preset("pet_denoise", "toy_baseline"), {
            "data.image_size": 16, "generator.base_filters": 4, "train.vgg_weights": "none"})
        model = build_model(config)
        assert model.discriminator.name == "toy_discriminator"
        rng = np.random.default_rng(0)
        source = rng.uniform(-1, 1, (2, 16, 16, 1)).astype("float32")
        before = [w.numpy().copy() for w in model.discriminator.trainable_weights]
        logs = model.train_step((source, np.tanh(source)))
        assert set(LOSS_TERMS) <= set(logs)
        assert float(logs["l1"]) > 0 and np.isfinite(float(logs["generator_total"]))
        assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.discriminator.trainable_weights))
    assert "toy_baseline" not in presets.MODELS


def test_unknown_recipe_in_a_config_is_a_clear_error():
    from medgan_tf.config import ExperimentConfig
    from medgan_tf.training import build_model

    with pytest.raises(UserError, match="unknown model 'nope'; registered: cgan"):
        build_model(ExperimentConfig(model="nope"))


def test_validate_names_the_field_and_the_choices():
    import dataclasses

    from medgan_tf.config import validate

    config = presets.task_preset("pet_ct", "pix2pix")
    with pytest.raises(UserError, match=r"--image-size must be a power of two ≥ 8 .*received 48"):
        validate(dataclasses.replace(config, data=dataclasses.replace(config.data, image_size=48)))
    with pytest.raises(UserError, match="train.strategy must be one of auto, default, mirrored, multiworker; "
                                        "received 'tpu'"):
        validate(dataclasses.replace(config, train=dataclasses.replace(config.train, strategy="tpu")))
    with pytest.raises(UserError, match="generator.num_ublocks must be a positive integer; received 0"):
        validate(dataclasses.replace(config, generator=dataclasses.replace(config.generator, num_ublocks=0)))
