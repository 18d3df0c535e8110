"""recipe.build: the one place a config becomes a compiled AdversarialModel."""

import inspect

import keras
import pytest

from tf_advscale import config as config_lib
from tf_advscale import recipe, runner
from tf_advscale.config import ConfigError
from tf_advscale.training import AdversarialModel

INFO = {"num_classes": 10, "shape": (28, 28, 1), "steps_per_epoch": 10}


def test_every_trainer_key_is_an_argument_or_handled_by_name():
    """A trainer key that is neither reaches no one: the tuner once dropped
    label_smoothing and attack_bn this way."""
    args = set(inspect.signature(AdversarialModel.__init__).parameters)
    keys = set(config_lib.DEFAULTS["trainer"])
    assert keys - set(recipe.NOT_TRAINER_ARGS) <= args
    assert set(recipe.NOT_TRAINER_ARGS) <= keys
    assert not set(recipe.NOT_TRAINER_ARGS) & args


def test_model_keys_are_resnet_arguments():
    c = config_lib.merge({"model": {"depth": 8, "width": 0.5, "activation": "silu",
                                    "mean": 0.25, "std": 0.75}})
    model = recipe.build(c, INFO)
    backbone = model.model.backbone.get_config()
    assert (backbone["width"], backbone["activation"]) == (0.5, "silu")
    std = model.model.backbone.get_layer("standardize").get_config()
    assert (std["mean"], std["std"]) == (0.25, 0.75)


def test_a_trainer_key_no_one_consumes_is_refused():
    c = config_lib.merge({})
    c["trainer"]["label_smothing"] = 0.1  # as if DEFAULTS had gained a key no one routes
    with pytest.raises(ConfigError, match=r"\['label_smothing'\]"):
        recipe.build(c, INFO)
    with pytest.raises(ValueError, match=r"\['dpeth'\]"):
        recipe.build(config_lib.merge({}), INFO, dpeth=14)


def test_mixed_float16_builds_float16_layers_and_a_loss_scale_and_restores_the_policy():
    c = config_lib.merge({"model": {"depth": 8}, "trainer": {"precision": "mixed_float16"}})
    model = recipe.build(c, INFO)
    assert model.model.backbone.get_layer("stem_conv").compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ConfigError, match="'float16'"):
        recipe.build(config_lib.merge({"trainer": {"precision": "float16"}}), INFO)


def test_runner_trains_the_model_recipe_builds(tmp_path, monkeypatch):
    seen = {}

    class Built(Exception):
        pass

    def build(config, info, **model):
        seen.update(config=config, info=info, model=model)
        raise Built

    monkeypatch.setattr(recipe, "build", build)
    c = config_lib.merge({"data": {"train_subset": 64, "batch_size": 32},
                          "eval": {"val_subset": 32, "test_subset": 32}})
    with pytest.raises(Built):
        runner.run(c, str(tmp_path))
    assert seen["config"] == c and seen["model"] == {}
    assert (seen["info"]["num_classes"], seen["info"]["steps_per_epoch"]) == (10, 2)


def test_the_overfitting_monitor_watches_the_first_validation_batch():
    import tensorflow as tf

    from tf_advscale.callbacks import CatastrophicOverfittingMonitor
    x = tf.random.uniform((12, 28, 28, 1))
    y = tf.range(12) % 10
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    off = config_lib.merge({})
    on = config_lib.merge({"trainer": {"catastrophic_overfitting": True}})
    assert recipe.overfitting_monitor(off, val) is None
    monitor = recipe.overfitting_monitor(on, val)
    assert isinstance(monitor, CatastrophicOverfittingMonitor)
    assert (monitor.images.numpy() == x[:5].numpy()).all()
    with pytest.raises(ValueError, match="Received: tuple"):
        recipe.overfitting_monitor(on, (x, y))
