"""init_from: a fresh run starting from a zoo entry's or a .keras file's
weights, a BatchNormalization model filling both domains of a MixBN one
(fine-tuning a robust model into MixBN)."""

import json
import re

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
    (lambda: _model(depth=14), r"the layers differ at stage2_block1_conv1 -> stage1_block2_conv1"),
    (lambda: _model(width=1.0), r"Cannot copy weights at stem_conv -> stem_conv: shapes "
                                r"\[\(3, 3, 1, 8\)\], the target has \[\(3, 3, 1, 16\)\]"),
    (lambda: _model("gn"), r"at stem_norm -> stem_norm: a BatchNormalization into a "
                           r"GroupNormalization"),
    # The logits come last: a refusal there shows that nothing before was written.
    (lambda: resnet(depth=8, num_classes=4, input_shape=SHAPE, width=0.5),
     r"at logits -> logits: shapes \[\(32, 3\), \(3,\)\], the target has \[\(32, 4\), \(4,\)\]"),
], ids=["depth", "width", "norm", "classes"])
def test_copy_weights_refuses_another_architecture_and_leaves_the_target_as_it_was(target, match):
    dst = target()
    before = [w.copy() for w in dst.get_weights()]
    with pytest.raises(ValueError, match=match):
        copy_weights(_trained_bn(), dst)
    for a, b in zip(before, dst.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_copy_weights_refuses_a_mixbn_into_a_bn_and_other_domains():
    with pytest.raises(ValueError, match="a MixBN into a BatchNormalization .which domain"):
        copy_weights(_model("mixbn"), _model())
    with pytest.raises(ValueError, match=r"domains \('clean', 'adversarial'\) into "
                                         r"\('adversarial', 'clean'\)"):
        copy_weights(_model("mixbn"),
                     _model("mixbn", norm_kwargs={"domains": ["adversarial", "clean"]}))


def test_copy_weights_from_mixbn_to_mixbn_copies_each_domain_and_keeps_the_targets_route():
    src = _model("mixbn")
    for layer in mixbn_layers(src):
        layer.moving_mean.assign(np.random.default_rng(3).normal(size=layer.moving_mean.shape))
    set_route(src, "clean")
    dst = _model("mixbn")
    set_route(dst, "adversarial")
    copy_weights(src, dst)
    for a, b in zip(mixbn_layers(src), mixbn_layers(dst)):
        np.testing.assert_array_equal(a.moving_mean.numpy(), b.moving_mean.numpy())
        assert int(b.route_index.numpy()) == b.domain_index("adversarial")


def _trained_mixbn():
    """A MixBN model whose two domains differ (weights and moving statistics)."""
    m = _model("mixbn")
    rng = np.random.default_rng(4)
    for layer in mixbn_layers(m):
        for v in (layer.gamma, layer.beta, layer.moving_mean):
            v.assign(v + rng.normal(0, 0.2, v.shape).astype("float32"))
    return m


@pytest.mark.parametrize("domain", ["clean", "adversarial"])
def test_copy_weights_takes_one_mixbn_domain_into_a_bn_model(domain):
    src, dst = _trained_mixbn(), _model()
    copy_weights(src, dst, domain=domain)
    set_route(src, domain)
    np.testing.assert_allclose(dst(X, training=False), src(X, training=False),
                               rtol=1e-5, atol=1e-5)
    other = "adversarial" if domain == "clean" else "clean"
    set_route(src, other)
    assert np.abs(dst(X, training=False) - src(X, training=False)).max() > 1e-3
    with pytest.raises(ValueError, match=r"Unknown domain for .*Received: 'natural'"):
        copy_weights(src, _model(), domain="natural")
    with pytest.raises(ValueError, match="a MixBN into a GroupNormalization"):
        copy_weights(src, _model("gn"), domain=domain)


def test_copy_weights_takes_a_domain_from_shared_rows_and_refuses_batch_stats():
    """A MixBN sharing its affine weights across domains (one row) gives that
    row to every domain; one normalising with batch statistics at inference
    is refused, since a BatchNormalization cannot."""
    src = _model("mixbn", norm_kwargs={"separate_affine": False})
    rng = np.random.default_rng(5)
    for layer in mixbn_layers(src):
        assert layer.gamma.shape[0] == 1
        for v in (layer.gamma, layer.beta, layer.moving_mean):
            v.assign(v + rng.normal(0, 0.2, v.shape).astype("float32"))
    for domain in ("clean", "adversarial"):
        dst = _model()
        copy_weights(src, dst, domain=domain)
        set_route(src, domain)
        np.testing.assert_allclose(dst(X, training=False), src(X, training=False),
                                   rtol=1e-5, atol=1e-5)
    mixbn_layers(src)[-1].set_batch_stats_at_inference(True)
    dst = _model()
    before = [w.copy() for w in dst.get_weights()]
    with pytest.raises(ValueError, match="batch statistics at inference"):
        copy_weights(src, dst, domain="clean")
    for a, b in zip(before, dst.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("route", ["clean", "adversarial"])
def test_warm_start_from_a_mixbn_model_takes_the_domain_of_its_route(tmp_path, route):
    """A MixBN .keras file into a BN config: its route as saved picks the
    domain, recorded in the returned record; its routes on load are kept."""
    src = _trained_mixbn()
    set_route(src, route)
    src.save(tmp_path / "src.keras")
    source, record = recipe.load_init_source(str(tmp_path / "src.keras"))
    target = _model()
    said = recipe.warm_start(target, source, record)
    assert said == dict(record, bn_into_mixbn=False, domain=route, skipped=[])
    assert all(l.route == route for l in mixbn_layers(source))
    np.testing.assert_allclose(target(X, training=False), source(X, training=False),
                               rtol=1e-5, atol=1e-5)
    mixed = _trained_mixbn()
    for layer, to in zip(mixbn_layers(mixed), ["clean", "adversarial"] * 99):
        layer.set_route(to)
    with pytest.raises(ConfigError, match=r"on different routes \['adversarial', 'clean'\]"):
        recipe.warm_start(_model(), mixed, record)


def test_copy_weights_refuses_variables_it_cannot_place():
    class Scaled(keras.layers.Layer):
        """Owns a weight besides a sublayer with weights."""

        def __init__(self, **kw):
            super().__init__(**kw)
            self.dense = keras.layers.Dense(2, name="inner")

        def build(self, shape):
            self.dense.build(shape)
            self.scale = self.add_weight(shape=(), name="scale")

        def call(self, x):
            return self.dense(x) * self.scale

    def make():
        inputs = keras.Input((3,))
        return keras.Model(inputs, Scaled(name="scaled")(inputs), name="m")

    with pytest.raises(ValueError, match=r"'m': variables \['scaled/scale'\] belong to a layer "
                                         "that also holds layers with weights"):
        copy_weights(make(), make())


def test_check_init_from_names_the_bad_value(tmp_path):
    import re
    recipe.check_init_from(None)
    recipe.check_init_from("zoo:resnet20.standard_fmnist")
    with pytest.raises(ConfigError, match="init_from must be None, 'zoo:NAME' or .* Received: 3"):
        recipe.check_init_from(3)
    with pytest.raises(ConfigError, match=r"init_from='zoo:resnet20.standrd_fmnist': Unknown zoo "
                                          r"model .* Did you mean 'resnet20.standard_fmnist'"):
        recipe.check_init_from("zoo:resnet20.standrd_fmnist")
    with pytest.raises(ConfigError, match=r"init_from='zoo:\.\./x': Invalid zoo name"):
        recipe.check_init_from("zoo:../x", exists=False)
    missing = str(tmp_path / "none.keras")
    with pytest.raises(ConfigError, match=re.escape(f"init_from={missing!r}: no such file")):
        recipe.check_init_from(missing)
    recipe.check_init_from(missing, exists=False)  # a resumed run does not read it
    recipe.check_init_from("zoo:resnet20.gone_fmnist", exists=False)
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ConfigError, match="only .keras files are read"):
        recipe.check_init_from(str(tmp_path / "w.h5"))


def test_warm_start_from_a_zoo_entry_gives_its_predictions_on_both_routes():
    name = "resnet20.standard_fmnist"
    source, record = recipe.load_init_source(f"zoo:{name}")
    meta = zoo.info(name)
    assert record == {"init_from": f"zoo:{name}", "zoo_entry": name,
                      "sha256": meta["source"]["sha256"]}
    model = dict(meta["recipe"]["config"]["model"], norm="mixbn")
    target = resnet(num_classes=10, input_shape=(28, 28, 1), **model)
    set_route(target, "clean")
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    said = recipe.warm_start(target, source, record)
    assert said == dict(record, bn_into_mixbn=True, domain=None, skipped=[])
    assert all(int(l.route_index.numpy()) == l.domain_index("clean")
               for l in mixbn_layers(target))  # its route as it was
    for domain in ("clean", "adversarial"):
        set_route(target, domain)
        np.testing.assert_allclose(target(x), source(x), rtol=1e-4, atol=1e-4)


def test_load_init_source_takes_a_trained_models_classifier(tmp_path):
    src = _trained_bn()
    trainer = AdversarialModel(src, attack=None)
    trainer.compile(optimizer="sgd")
    trainer.save(tmp_path / "final.keras")
    src.save(tmp_path / "classifier.keras")
    for path in (tmp_path / "final.keras", tmp_path / "classifier.keras"):
        source, record = recipe.load_init_source(str(path))
        assert record["zoo_entry"] is None and len(record["sha256"]) == 64
        target = _model("mixbn")
        recipe.warm_start(target, source, record)
        set_route(target, "adversarial")
        np.testing.assert_allclose(target(X, training=False), src(X, training=False),
                                   rtol=1e-5, atol=1e-5)


def test_warm_start_refuses_what_the_weights_do_not_show(tmp_path):
    """Another input standardisation, or another activation (a layer without
    weights), is caught by comparing the two models."""
    src = _trained_bn()
    with pytest.raises(ConfigError, match=r"standardises its inputs with mean/std \[\(0.5, 0.5\)\]"
                                          r", config\['model'\] with \[\(0.25, 0.5\)\]"):
        recipe.warm_start(_model("mixbn", mean=0.25), src)
    with pytest.raises(ConfigError, match=r"init_from='x.keras': with the copied weights, "
                                          r"config\['model'\]'s logits on the clean route "
                                          r"differ by up to .* another activation"):
        recipe.warm_start(_model("mixbn", activation="silu"), src, {"init_from": "x.keras"})
    with pytest.raises(ConfigError, match=r"does not fit config\['model'\]: .*the layers differ"):
        recipe.warm_start(_model(depth=14), src)


def test_load_init_source_refuses_a_file_holding_code(tmp_path):
    inputs = keras.Input(SHAPE)
    m = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    m.save(tmp_path / "code.keras")
    with pytest.raises(ConfigError, match=r"^init_from='[^']*code.keras': [^ ]*code.keras: the "
                                          "model file holds Python code"):
        recipe.load_init_source(str(tmp_path / "code.keras"))


def _tiny_config(**over):
    return config_lib.merge({
        "data": {"train_subset": 64, "batch_size": 32},
        "model": {"depth": 8, "width": 0.5},
        "attack": None, "eval_attack": None,
        "eval": {"val_subset": 32, "test_subset": 32},
        "checkpoint": {"every_steps": None, "keep": 1},
        **over})


def test_runner_warm_starts_a_fresh_run_only(tmp_path, monkeypatch):
    """A fresh run reads the source; a resumed run keeps the weights it
    restored, and runs on when the source is gone."""
    loads, starts = [], []

    class Stop(Exception):
        pass

    def fit(model, *a, **k):
        raise Stop

    def load(value):
        loads.append(value)
        return None, {"init_from": value, "zoo_entry": None, "sha256": "f" * 64}

    monkeypatch.setattr(recipe, "load_init_source", load)
    monkeypatch.setattr(recipe, "warm_start",
                        lambda classifier, source, record, skip: starts.append((classifier, skip))
                        or dict(record, bn_into_mixbn=False, domain=None, skipped=list(skip)))
    monkeypatch.setattr(ckpt_lib, "resumable_fit", fit)
    src = tmp_path / "src.keras"
    src.write_bytes(b"")  # check_init_from looks for the file; the reading is patched
    c = _tiny_config(init_from=str(src), init_skip=["logits"])
    work = tmp_path / "fresh"
    with pytest.raises(Stop):
        runner.run(c, str(work))
    assert loads == [str(src)] and len(starts) == 1 and starts[0][1] == ["logits"]
    log = (work / "run.log").read_text()
    assert f"Initial weights from {src} (sha256 {'f' * 64}); ['logits'] left at their " \
        "initializers" in log
    assert "The starting weights read val_clean_accuracy " in log
    assert json.loads((work / "init.json").read_text())["sha256"] == "f" * 64
    src.unlink()
    (work / "state").mkdir()
    monkeypatch.setattr(ckpt_lib.TrainingState, "load", lambda self, agree=None: (0, 1))
    with pytest.raises(Stop):
        runner.run(c, str(work))
    assert loads == [str(src)] and len(starts) == 1
    # Started, but no usable checkpoint: step 0 again, and the source is gone.
    monkeypatch.setattr(ckpt_lib.TrainingState, "load", lambda self, agree=None: (0, 0))
    with pytest.raises(ConfigError, match=f"init_from='{src}': {work} starts at step 0 again "
                                          r"\(no usable checkpoint\), and the weights it "
                                          "starts from are gone"):
        runner.run(c, str(work))
    src.write_bytes(b"")  # there again: read, outside the strategy's scope, and copied
    with pytest.raises(Stop):
        runner.run(c, str(work))
    assert loads == [str(src)] * 2 and len(starts) == 2


def test_a_bad_init_from_is_refused_before_the_work_directory_is_made(tmp_path):
    with pytest.raises(ConfigError, match="init_from='zoo:nope'"):
        runner.run(_tiny_config(init_from="zoo:nope"), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_run_with_a_negligible_learning_rate_ends_with_the_weights_it_started_from(tmp_path):
    """End to end: a MixBN run initialised from a BN model's file, trained
    with a learning rate of 1e-9, ends with that model's kernels (each moved
    0.05 from its initializer's draw, so a run that ignored init_from fails)."""
    c = _tiny_config(model={"depth": 8, "width": 0.5, "norm": "mixbn"},
                     trainer={"clean_portion": 1.0, "mixing": "mixbn",
                              "catastrophic_overfitting": True},
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
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    from tf_advscale import distribute
    assert metrics["cpu"] == distribute.describe_cpu()  # one segment, this machine
    init = metrics["init"]
    assert init == dict(json.loads((tmp_path / "run" / "init.json").read_text()))
    assert init["bn_into_mixbn"] is True and init["init_from"] == str(tmp_path / "src.keras")
    assert re.search(r"The starting weights read val_clean_accuracy [\d.]+; held-out robust "
                     r"accuracy [\d.]+ \(clean [\d.]+\)",
                     (tmp_path / "run" / "run.log").read_text())


def test_a_depth_search_refuses_init_from():
    """Its trials differ in depth: one set of weights fits none but one."""
    from tf_advscale.tuning import DepthSearch
    info = {"num_classes": 10, "shape": (28, 28, 1), "steps_per_epoch": 2}
    with pytest.raises(ValueError, match=r"init_from must be None \(and init_skip empty\) for "
                                         "a depth search"):
        DepthSearch({"init_from": "zoo:resnet20.standard_fmnist"}, info)
    with pytest.raises(ValueError, match=r"init_skip=\['logits'\]"):
        DepthSearch({"init_skip": ["logits"]}, info)


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
    source, record = recipe.load_init_source(c["init_from"])
    recipe.warm_start(target, source, record)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    for domain in ("clean", "adversarial"):
        set_route(target, domain)
        np.testing.assert_allclose(target(x), source(x), rtol=1e-4, atol=1e-4)


def test_a_fine_tuned_entrys_card_and_zoo_row_say_where_its_training_started():
    import pathlib

    from tf_advscale import cli, zoo_publish
    entry = pathlib.Path(__file__).resolve().parents[1] / "zoo" / "resnet20.mixbn_pgd3_fmnist"
    meta = json.loads((entry / "metadata.json").read_text())
    card = zoo_publish.render_card(str(entry), meta)
    assert "Fine-tuned" not in card and "fine-tuned" not in cli._zoo_rows(meta, True)[0]
    meta["recipe"]["init"] = {"init_from": "zoo:resnet20.pgd3_fmnist", "sha256": "a" * 64,
                              "zoo_entry": "resnet20.pgd3_fmnist", "bn_into_mixbn": True,
                              "skipped": []}
    card = zoo_publish.render_card(str(entry), meta)
    assert ("Fine-tuned: training started from the weights of zoo entry "
            f"`resnet20.pgd3_fmnist` (sha256 `{'a' * 64}`) (each BatchNormalization's weights "
            "filling every domain of its MixBN), not from the initializers; the epochs and "
            "seconds above are the fine-tuning's alone.") in card
    assert all(row.endswith(" min (fine-tuned from `resnet20.pgd3_fmnist`) |")
               for row in cli._zoo_rows(meta, True))
    meta["recipe"]["init"].update(bn_into_mixbn=False, domain="clean")
    assert "(each MixBN's clean domain into a BatchNormalization), not from" in \
        zoo_publish.render_card(str(entry), meta)
    meta["recipe"]["init"].update(bn_into_mixbn=True, domain=None)
    meta["recipe"]["init"]["skipped"] = ["logits"]
    assert "filling every domain of its MixBN; its layers ['logits'] from their " \
        "initializers), not from" in zoo_publish.render_card(str(entry), meta)


def test_a_run_started_from_a_local_file_is_not_published(tmp_path):
    from tf_advscale import zoo_publish
    (tmp_path / "config.json").write_text(json.dumps({"init_from": "zoo:x.y_z"}))
    (tmp_path / "metrics.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="has init_from='zoo:x.y_z' but its metrics.json has no "
                                         "record of the weights it started from"):
        zoo_publish.publish(str(tmp_path), "resnet8.ft_sample", "advscale train ...",
                            out_dir=str(tmp_path / "zoo"))
    (tmp_path / "config.json").write_text(json.dumps({"init_from": "mine.keras"}))
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"init": {"init_from": "mine.keras", "zoo_entry": None, "sha256": "a" * 64}}))
    with pytest.raises(ValueError, match="started from init_from='mine.keras', not from a zoo "
                                         "entry: a user could not redo its training command"):
        zoo_publish.publish(str(tmp_path), "resnet8.ft_sample", "advscale train ...",
                            out_dir=str(tmp_path / "zoo"))
    assert not (tmp_path / "zoo").exists()


def test_init_skip_leaves_the_head_for_another_number_of_classes(tmp_path):
    """Fine-tuning on another number of classes: every layer but the logits
    from the source, compared at the logits' input; the logits are the
    target's own."""
    src = _trained_bn()  # 3 classes
    target = resnet(depth=8, num_classes=5, input_shape=SHAPE, width=0.5, norm="mixbn")
    head = [w.copy() for w in target.get_layer("logits").get_weights()]
    with pytest.raises(ConfigError, match=r"at logits -> logits: shapes \[\(32, 3\)"):
        recipe.warm_start(target, src)
    record = recipe.warm_start(target, src, skip=["logits"])
    assert record["skipped"] == ["logits"] and record["bn_into_mixbn"] is True
    for a, b in zip(head, target.get_layer("logits").get_weights()):
        np.testing.assert_array_equal(a, b)
    features = keras.Model(src.inputs, src.get_layer("logits").input)
    mine = keras.Model(target.inputs, target.get_layer("logits").input)
    set_route(target, "clean")
    np.testing.assert_allclose(mine(X, training=False), features(X, training=False),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Cannot skip 'head': .* has no layer of that name"):
        copy_weights(src, target, skip=["head"])
    with pytest.raises(ConfigError, match=r"init_skip=\['stem_conv'\]: \['stem_conv'\] are not "
                                          "layers of .* top level"):
        recipe.warm_start(target, src, skip=["stem_conv"])


def test_init_skip_is_checked(tmp_path):
    recipe.check_init_skip(config_lib.merge({}))
    with pytest.raises(ConfigError, match="init_skip must be a list of layer names. "
                                          "Received: 'logits'"):
        recipe.check_init_skip(config_lib.merge({"init_skip": "logits"}))
    with pytest.raises(ConfigError, match=r"init_skip=\['logits'\] needs init_from"):
        recipe.check_init_skip(config_lib.merge({"init_skip": ["logits"]}))
    with pytest.raises(ConfigError, match=r"init_skip=\['logits'\] needs init_from"):
        runner.run(_tiny_config(init_skip=["logits"]), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
