"""init_from: a fresh run starting from a zoo entry's or a .keras file's
weights, a BatchNormalization model filling both domains of a MixBN one
(fine-tuning a robust model into MixBN)."""

import json

import keras
import numpy as np
import pytest

from tf_advscale import checkpoint as ckpt_lib
from tf_advscale import config as config_lib
from tf_advscale import recipe, runner, zoo
from tf_advscale.config import ConfigError
from tf_advscale.layers.mixbn import MixBN, copy_weights, mixbn_layers, set_route
from tf_advscale.models import resnet
from tf_advscale.training import AdversarialModel

SHAPE = (16, 16, 1)
X = np.random.default_rng(0).uniform(size=(4,) + SHAPE).astype("float32")


def _model(norm="bn", depth=8, width=0.5, mean=0.5, **kw):
    return resnet(depth=depth, num_classes=3, input_shape=SHAPE, norm=norm, width=width,
                  mean=mean, **kw)


def _trained_bn():
    """A BN model whose weights and moving statistics differ from a fresh one's."""
    m = _model()
    for v in m.trainable_variables:
        v.assign(v + np.random.default_rng(1).normal(0, 0.05, v.shape).astype("float32"))
    m(X * 3.0, training=True)  # moving statistics away from 0 / 1
    return m


def test_copy_weights_fills_both_mixbn_domains_from_a_bn_model():
    src, dst = _trained_bn(), _model("mixbn")
    copy_weights(src, dst)
    assert mixbn_layers(dst)
    want = src(X, training=False)
    for domain in ("clean", "adversarial"):
        set_route(dst, domain)
        np.testing.assert_allclose(dst(X, training=False), want, rtol=1e-5, atol=1e-5)


def test_copy_weights_into_a_recomputing_model_looks_inside_its_blocks():
    """models.resnet.Recompute holds each block as a model: its weights are
    copied layer by layer, not as one block (a BN and a MixBN block differ)."""
    src, dst = _trained_bn(), _model("mixbn", recompute=True)
    copy_weights(src, dst)
    set_route(dst, "clean")
    np.testing.assert_allclose(dst(X, training=False), src(X, training=False),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target, match", [
    (lambda: _model(depth=14), r"\(\d+ layers with weights\) into .* \(\d+\): not the same"),
    (lambda: _model(width=1.0), r"Cannot copy weights at (\w+) -> \1: shapes \[\(32,\), "
                                r"\(32,\), \(32,\), \(32,\)\], the target has \[\(64,\)"),
    (lambda: _model("gn"), r"a BatchNormalization into a GroupNormalization"),
], ids=["depth", "width", "norm"])
def test_copy_weights_refuses_another_architecture_and_leaves_the_target_as_it_was(target, match):
    dst = target()
    before = [w.copy() for w in dst.get_weights()]
    with pytest.raises(ValueError, match=match):
        copy_weights(_trained_bn(), dst)
    for a, b in zip(before, dst.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_copy_weights_refuses_a_mixbn_into_a_bn():
    with pytest.raises(ValueError, match="a MixBN into a BatchNormalization .which domain"):
        copy_weights(_model("mixbn"), _model())


def test_check_init_from_names_the_bad_value(tmp_path):
    recipe.check_init_from(None)
    recipe.check_init_from("zoo:resnet20.standard_fmnist")
    with pytest.raises(ConfigError, match="init_from must be None, 'zoo:NAME' or .* Received: 3"):
        recipe.check_init_from(3)
    with pytest.raises(ConfigError, match=r"init_from='zoo:resnet20.standrd_fmnist': Unknown zoo "
                                          r"model .* Did you mean 'resnet20.standard_fmnist'"):
        recipe.check_init_from("zoo:resnet20.standrd_fmnist")
    missing = str(tmp_path / "none.keras")
    with pytest.raises(ConfigError, match=f"init_from='{missing}': not an existing .keras file"):
        recipe.check_init_from(missing)
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ConfigError, match="not an existing .keras file"):
        recipe.check_init_from(str(tmp_path / "w.h5"))


def test_warm_start_from_a_zoo_entry_gives_its_predictions_on_both_routes():
    name = "resnet20.standard_fmnist"
    source, meta = zoo.load(name)
    model = dict(meta["recipe"]["config"]["model"], norm="mixbn")
    target = resnet(num_classes=10, input_shape=(28, 28, 1), **model)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    said = recipe.warm_start(target, f"zoo:{name}")
    assert said == f"zoo entry {name} (sha256 {meta['source']['sha256']})"
    for domain in ("clean", "adversarial"):
        set_route(target, domain)
        np.testing.assert_allclose(target(x), source(x), rtol=1e-4, atol=1e-4)


def test_warm_start_from_a_file_takes_a_trained_models_classifier(tmp_path):
    src = _trained_bn()
    trainer = AdversarialModel(src, attack=None)
    trainer.compile(optimizer="sgd")
    trainer.save(tmp_path / "final.keras")
    src.save(tmp_path / "classifier.keras")
    for path in (tmp_path / "final.keras", tmp_path / "classifier.keras"):
        target = _model("mixbn")
        said = recipe.warm_start(target, str(path))
        assert said.startswith(f"{path} (sha256 ")
        set_route(target, "adversarial")
        np.testing.assert_allclose(target(X, training=False), src(X, training=False),
                                   rtol=1e-5, atol=1e-5)


def test_warm_start_refuses_another_standardisation_and_another_architecture(tmp_path):
    _trained_bn().save(tmp_path / "m.keras")
    with pytest.raises(ConfigError, match=r"standardises its inputs with mean/std \[\(0.5, 0.5\)\]"
                                          r", config\['model'\] with \[\(0.25, 0.5\)\]"):
        recipe.warm_start(_model("mixbn", mean=0.25), str(tmp_path / "m.keras"))
    with pytest.raises(ConfigError, match=r"does not fit config\['model'\]: .*not the same"):
        recipe.warm_start(_model(depth=14), str(tmp_path / "m.keras"))


def test_warm_start_refuses_a_file_holding_code(tmp_path):
    inputs = keras.Input(SHAPE)
    m = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    m.save(tmp_path / "code.keras")
    with pytest.raises(zoo.ZooError, match="holds Python code"):
        recipe.warm_start(_model(), str(tmp_path / "code.keras"))


def _tiny_config(**over):
    return config_lib.merge({
        "data": {"train_subset": 64, "batch_size": 32},
        "model": {"depth": 8, "width": 0.5},
        "attack": None, "eval_attack": None,
        "eval": {"val_subset": 32, "test_subset": 32},
        "checkpoint": {"every_steps": None, "keep": 1},
        **over})


def test_runner_warm_starts_a_fresh_run_only(tmp_path, monkeypatch):
    """The initial weights are set after the checkpoint is looked for: a
    resumed run keeps the weights it restored."""
    calls = []

    class Stop(Exception):
        pass

    def fit(model, *a, **k):
        raise Stop

    monkeypatch.setattr(recipe, "warm_start",
                        lambda classifier, value: calls.append((classifier, value)) or value)
    monkeypatch.setattr(ckpt_lib, "resumable_fit", fit)
    src = tmp_path / "src.keras"
    src.write_bytes(b"")  # check_init_from looks for the file; warm_start is patched
    c = _tiny_config(init_from=str(src))
    with pytest.raises(Stop):
        runner.run(c, str(tmp_path / "fresh"))
    assert len(calls) == 1 and calls[0][1] == str(src)
    assert f"Initial weights from {src}" in (tmp_path / "fresh" / "run.log").read_text()
    monkeypatch.setattr(ckpt_lib.TrainingState, "load", lambda self, agree=None: (0, 1))
    with pytest.raises(Stop):
        runner.run(c, str(tmp_path / "fresh"))
    assert len(calls) == 1


def test_a_bad_init_from_is_refused_before_the_work_directory_is_made(tmp_path):
    with pytest.raises(ConfigError, match="init_from='zoo:nope'"):
        runner.run(_tiny_config(init_from="zoo:nope"), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_run_with_a_negligible_learning_rate_ends_with_the_weights_it_started_from(tmp_path):
    """End to end: a MixBN run initialised from a BN model's file, trained
    with a learning rate of 1e-9, ends with that model's kernels (each moved
    0.05 from its initializer's draw, so a run that ignored init_from fails)."""
    c = _tiny_config(model={"depth": 8, "width": 0.5, "norm": "mixbn"},
                     trainer={"clean_portion": 1.0, "mixing": "mixbn"},
                     attack={"name": "fgsm", "epsilon": 0.1},
                     optimizer={"learning_rate": 1e-9, "epochs": 1, "warmup_epochs": 0})
    src = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), width=0.5)
    for v in src.trainable_variables:
        v.assign(v + np.random.default_rng(2).normal(0, 0.05, v.shape).astype("float32"))
    src.save(tmp_path / "src.keras")
    c["init_from"] = str(tmp_path / "src.keras")
    model, _ = runner.run(c, str(tmp_path / "run"), verbose=0)
    kernels = {w.path: w for w in model.model.weights if "kernel" in w.path}
    assert kernels
    for w in src.weights:
        if "kernel" in w.path:
            np.testing.assert_allclose(kernels[w.path].numpy(), w.numpy(), rtol=0, atol=1e-6)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["init_from"] == str(tmp_path / "src.keras")
    assert isinstance(mixbn_layers(model.model)[0], MixBN)


def test_a_depth_search_refuses_init_from():
    """Its trials differ in depth: one set of weights fits none but one."""
    from tf_advscale.tuning import DepthSearch
    with pytest.raises(ValueError, match="init_from must be None for a depth search"):
        DepthSearch({"init_from": "zoo:resnet20.standard_fmnist"},
                    {"num_classes": 10, "shape": (28, 28, 1), "steps_per_epoch": 2})


def test_the_fine_tuning_config_fits_the_zoo_entry_it_starts_from():
    """configs/fast.py's preactresnet18,mixbn_nfgsm_ft: its init_from is a
    zoo entry whose weights fit the model it builds, on both routes."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    c = config_lib.load(str(root / "configs" / "fast.py") + ":preactresnet18,mixbn_nfgsm_ft")
    assert c["init_from"] == "zoo:preactresnet18.nfgsm_cifar10jpeg"
    assert c["model"]["norm"] == "mixbn" and c["trainer"]["clean_portion"] == 1.0
    assert c["optimizer"]["epochs"] < config_lib.load(
        str(root / "configs" / "fast.py") + ":preactresnet18,nfgsm")["optimizer"]["epochs"]
    target = resnet(num_classes=10, input_shape=(32, 32, 3), **c["model"])
    recipe.warm_start(target, c["init_from"])
    source, _ = zoo.load("preactresnet18.nfgsm_cifar10jpeg")
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    for domain in ("clean", "adversarial"):
        set_route(target, domain)
        np.testing.assert_allclose(target(x), source(x), rtol=1e-4, atol=1e-4)


def test_a_fine_tuned_entrys_card_says_where_its_training_started():
    import pathlib

    from tf_advscale import zoo_publish
    entry = pathlib.Path(__file__).resolve().parents[1] / "zoo" / "resnet20.mixbn_pgd3_fmnist"
    meta = json.loads((entry / "metadata.json").read_text())
    card = zoo_publish.render_card(str(entry), meta)
    assert "Fine-tuned" not in card
    meta["recipe"]["config"]["init_from"] = "zoo:resnet20.pgd3_fmnist"
    card = zoo_publish.render_card(str(entry), meta)
    assert ("Fine-tuned: training started from the weights of `zoo:resnet20.pgd3_fmnist` "
            "(each BatchNormalization's weights filling both of its MixBN domains), not from "
            "the initializers; the epochs and seconds above are the fine-tuning's alone."
            ) in card
