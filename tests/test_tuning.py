"""keras-tuner depth search with a robustness objective, end to end."""

import keras
import keras_tuner
import numpy as np
import pytest

from tf_advscale import config as config_lib
from tf_advscale import data, recipe
from tf_advscale.tuning import DepthSearch, make_tuner, summarize

ATTACK = {"name": "pgd", "epsilon": 0.1, "step_size": 0.05, "steps": 1}
EVAL = {"name": "pgd", "epsilon": 0.1, "step_size": 0.025, "steps": 3}
CONFIG = {"attack": ATTACK, "eval_attack": EVAL,
          "optimizer": {"learning_rate": 0.05, "schedule": "constant", "warmup_epochs": 0}}
INFO = {"num_classes": 10, "shape": (28, 28, 1), "steps_per_epoch": 10}
# A recipe with every trainer and optimizer key away from its default.
RECIPE = {
    "seed": 3, "attack": ATTACK, "eval_attack": EVAL,
    "model": {"norm": "mixbn", "zero_init_residual": True, "mean": 0.3, "std": 0.4},
    "trainer": {"clean_portion": 0.5, "mixing": "separate", "alp_weight": 0.5,
                "label_smoothing": 0.1, "weight_decay": 1e-4, "attack_bn": "train",
                "attack_route": "clean", "steps_per_execution": 2},
    "optimizer": {"learning_rate": 0.2, "momentum": 0.8, "nesterov": False,
                  "schedule": "piecewise", "warmup_epochs": 1, "decay_epochs": [2, 3],
                  "epochs": 4},
}
# Trainable parameters of CIFAR ResNet-8/14 at width 0.5 on 28x28x1 images (filters
# 8, 16, 32), counted by hand: e.g. ResNet-8 = stem 72 + 16, stage 1 1,152 + 32,
# stage 2 3,456 + 64 + 128 + 32, stage 3 13,824 + 128 + 512 + 64, dense 330.
PARAMS = {8: 19_810, 14: 44_226}


@pytest.fixture(scope="module")
def tiny_data():
    train, info = data.load("fashion_mnist_sample", "train", batch_size=64, subset=256, seed=0)
    val, _ = data.load("fashion_mnist_sample", "test", batch_size=100, subset=100, seed=0)
    return train, val, info


def _build(hypermodel, **values):
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    keras.utils.set_random_seed(0)
    return hypermodel.build(hp)


def _learning_rates(model, steps):
    out = []
    for step in steps:
        model.optimizer.iterations.assign(step)
        out.append(float(model.optimizer.learning_rate))
    return out


def test_depth_search_trains_with_the_configs_recipe():
    """Schedule, label smoothing, attack_bn and the other trainer keys reach
    every trial (the older DepthSearch built a constant-rate SGD and default
    trainer keys whatever the training config said)."""
    hypermodel = DepthSearch(RECIPE, INFO, depths=(14,), widths=(0.5,))
    model = _build(hypermodel, blocks_per_stage=2, width=0.5)
    assert model.model.name == "cifar_resnet14"
    assert model.label_smoothing == 0.1 and model.attack_bn == "train"
    assert (model.clean_portion, model.mixing, model.alp_weight, model.weight_decay,
            model.attack_route, model.seed) == (0.5, "separate", 0.5, 1e-4, "clean", 3)
    assert model.has_mixbn and model.steps_per_execution == 2
    steps = [0, 4, 9, 10, 15, 19, 20, 29, 30, 39]
    # Warm-up 0.02 -> 0.2 over 10 steps (Keras CosineDecay's), then / 10 at epochs 2 and 3.
    want = [0.02, 0.092, 0.182, 0.2, 0.2, 0.2, 0.02, 0.02, 0.002, 0.002]
    assert np.allclose(_learning_rates(model, steps), want)
    assert len(set(np.round(_learning_rates(model, steps), 6))) > 3  # not a constant rate
    c = model.optimizer.get_config()
    assert (c["momentum"], c["nesterov"]) == (0.8, False)


@pytest.mark.parametrize("family,depth,width", [("cifar", 14, 0.5), ("preact", 18, 0.25)])
def test_runner_and_depth_search_build_the_same_model(family, depth, width):
    config = config_lib.merge({**RECIPE, "model": {**RECIPE["model"], "family": family,
                                                   "depth": depth, "width": width}})
    keras.utils.set_random_seed(0)
    ours = recipe.build(config, INFO)  # what runner.run trains
    hypermodel = DepthSearch(config, INFO, depths=(depth,), widths=(width,))
    hp = {"blocks_per_stage": (depth - 2) // 6} if family == "cifar" else {"depth": depth}
    theirs = _build(hypermodel, width=width, **hp)
    unnamed = lambda o: {k: v for k, v in o.get_config().items() if k != "name"}  # noqa: E731
    assert unnamed(theirs) == unnamed(ours)  # the classifier, attacks and trainer keys
    assert unnamed(theirs.optimizer) == unnamed(ours.optimizer)  # the schedule's config too
    assert (theirs.jit_compile, theirs.steps_per_execution) == (
        ours.jit_compile, ours.steps_per_execution)
    assert [w.path for w in theirs.model.weights] == [w.path for w in ours.model.weights]
    for a, b in zip(theirs.model.weights, ours.model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    steps = [0, 5, 25, 39]
    assert _learning_rates(theirs, steps) == _learning_rates(ours, steps)


def test_reproduce_depth_search_recipe_is_the_published_constant_rate_one():
    """reproduce writes out the recipe its published search ran (a constant
    rate, Nesterov SGD, defaults elsewhere), not the training config's."""
    from tf_advscale.reproduce.experiments import _depth_search_recipe
    train = {"model": {"family": "cifar", "norm": "mixbn"}, "attack": ATTACK, "eval_attack": EVAL,
             "optimizer": {"learning_rate": 0.07, "schedule": "cosine"},
             "trainer": {"label_smoothing": 0.1, "weight_decay": 1e-4}}
    hypermodel = DepthSearch(_depth_search_recipe(train, INFO), INFO, depths=(8,),
                             widths=(0.5,))
    model = _build(hypermodel, blocks_per_stage=1, width=0.5)
    assert _learning_rates(model, [0, 1, 1000]) == pytest.approx([0.07] * 3)
    assert model.optimizer.get_config()["nesterov"] is True
    assert (model.weight_decay, model.label_smoothing, model.seed) == (5e-4, 0.0, 0)
    assert not model.has_mixbn
    with pytest.raises(ValueError, match="takes a training config"):
        DepthSearch((28, 28, 1), 10)


def test_catastrophic_overfitting_monitor_reaches_the_trials(tiny_data):
    from tf_advscale.callbacks import CatastrophicOverfittingMonitor
    _, val, _ = tiny_data
    hypermodel = DepthSearch({**CONFIG, "trainer": {"catastrophic_overfitting": True}}, INFO,
                             depths=(8,))
    seen = {}

    class Stop(Exception):
        pass

    class Model:
        def fit(self, *args, **kwargs):
            seen.update(kwargs)
            raise Stop

    with pytest.raises(Stop):
        hypermodel.fit(None, Model(), val, validation_data=val, callbacks=[])
    monitors = [c for c in seen["callbacks"] if isinstance(c, CatastrophicOverfittingMonitor)]
    assert len(monitors) == 1 and monitors[0].images.shape[0] == 100


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_two_trial_search_runs_end_to_end(kind, tiny_data, tmp_path):
    train, val, info = tiny_data
    hypermodel = DepthSearch(CONFIG, info, depths=(8, 14), widths=(0.5,))
    tuner = make_tuner(kind, hypermodel, max_trials=2, max_epochs=2, directory=str(tmp_path),
                       project_name=kind)
    kwargs = {} if kind == "hyperband" else {"epochs": 1}
    tuner.search(train, validation_data=val, verbose=0, **kwargs)
    rows = summarize(tuner)
    # Two trials (hyperband: one bracket of two at max_epochs=2), the two depths.
    assert sorted(row["depth"] for row in rows) == [8, 14]
    for row in rows:
        assert row["width"] == 0.5
        assert row["val_adv_accuracy"] <= row["val_clean_accuracy"]
        for key in ("val_adv_accuracy", "val_clean_accuracy"):  # over the 100 images
            assert abs(row[key] * 100 - round(row[key] * 100)) < 1e-4, (key, row[key])
        assert row["score"] == row["val_adv_accuracy"]  # the objective is robustness
        assert row["train_seconds"] > 0 and row["images_per_second"] > 0
        assert row["params"] == PARAMS[row["depth"]]
    assert rows[0]["score"] == max(r["score"] for r in rows)


def test_bad_search_spaces_are_refused():
    with pytest.raises(ValueError, match=r"6n\+2.*\[9\]|6n\+2.*\(9,\)"):
        DepthSearch(CONFIG, INFO, depths=(9,))
    with pytest.raises(ValueError, match="eval_attack is needed"):
        DepthSearch({**CONFIG, "eval_attack": None}, INFO)
    with pytest.raises(ValueError, match=r"Missing: \['steps_per_epoch'\]"):
        DepthSearch(CONFIG, {"num_classes": 10, "shape": (28, 28, 1)})
    with pytest.raises(ValueError, match="Unknown tuner.*'grid'"):
        make_tuner("grid", DepthSearch(CONFIG, INFO))
