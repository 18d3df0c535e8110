import numpy as np
import keras
import pytest
import tensorflow as tf

from tf_advscale import attacks
from tf_advscale.layers import make_norm, set_route
from tf_advscale.models import resnet
from tf_advscale.callbacks import CatastrophicOverfittingMonitor
from tf_advscale.training import AdversarialModel

PGD = {"name": "pgd", "epsilon": 0.1, "step_size": 0.04, "steps": 2}


def _model(norm="bn"):
    keras.utils.set_random_seed(0)
    return resnet(8, 10, input_shape=(28, 28, 1), norm=norm, width=0.5)


def _fit(am, sample, steps=3, batch=16):
    x, y = sample
    am.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return am.fit(x[:steps * batch], y[:steps * batch], batch_size=batch, epochs=1,
                  verbose=0, shuffle=False).history


@pytest.mark.parametrize("norm,mixing,portion", [
    ("bn", "joint", 1.0), ("bn", "joint", 0.0), ("bn", "separate", 0.5),
    ("mixbn", "mixbn", 1.0), ("mixbn", "mixbn", 0.25), ("mixbn", "separate", 1.0),
    ("gn", "joint", 1.0)])
def test_fit_reports_finite_metrics(sample, norm, mixing, portion):
    am = AdversarialModel(_model(norm), attack=PGD, eval_attack=PGD, clean_portion=portion,
                          mixing=mixing, alp_weight=0.5, label_smoothing=0.1, weight_decay=5e-4)
    history = _fit(am, sample)
    assert set(history) == {"loss", "clean_accuracy", "adv_accuracy"}
    assert all(np.isfinite(v[-1]) for v in history.values())
    r = am.evaluate(sample[0][:32], sample[1][:32], verbose=0, return_dict=True)
    assert set(r) == {"loss", "clean_accuracy", "adv_accuracy"}


@pytest.mark.parametrize("where", ["step", "attack"])
def test_xla_compiled_training(sample, where):
    am = AdversarialModel(_model("mixbn"), attack=PGD, clean_portion=0.5, mixing="mixbn",
                          attack_jit_compile=where == "attack")
    x, y = sample
    am.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=where == "step")
    h = am.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(h["loss"][-1])


def test_standard_training_reports_no_adversarial_metric(sample):
    am = AdversarialModel(_model(), attack=None)
    assert set(_fit(am, sample)) == {"loss", "clean_accuracy"}


def test_batch_composition_follows_clean_portion():
    am = AdversarialModel(_model(), attack=PGD, clean_portion=0.25)
    x = tf.zeros((16, 28, 28, 1))
    assert am._clean_count(x) == 4
    logits_adv, logits_clean = am._forward(x, x[:4])
    assert logits_adv.shape[0] == 16 and logits_clean.shape[0] == 4
    am0 = AdversarialModel(_model(), attack=PGD, clean_portion=0.0)
    assert am0._clean_count(x) == 0


@pytest.mark.parametrize("mixing,portion", [("mixbn", 1.0), ("mixbn", 0.0), ("mixbn", 0.25),
                                            ("separate", 0.5), ("joint", 1.0)])
def test_mixbn_domains_move_toward_their_own_images_statistics(sample, mixing, portion):
    """One step: each MixBN domain's moving statistics move by the momentum
    toward the batch moments of that domain's input to the layer (``joint``:
    the adversarial domain sees the mixture, the clean one nothing)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, use_bias=False, name="stem_conv")(inputs)
    h = keras.layers.ReLU()(make_norm("mixbn", 4, name="stem_norm")(h))
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    x, y = sample[0][:16], sample[1][:16]
    adv = np.clip(x + 0.1 * np.sign(np.random.default_rng(0).normal(size=x.shape)), 0, 1)
    am = AdversarialModel(model, attack=PGD, clean_portion=portion, mixing=mixing, seed=0)
    am._generate = lambda images, labels, seed=None: tf.constant(adv, tf.float32)
    layer = model.get_layer("stem_norm")
    stem = model.get_layer("stem_conv")  # its input to the layer, before the step
    clean = x[:int(round(portion * 16))]
    seen = {"adversarial": [stem(adv)], "clean": [stem(clean)] if len(clean) else []}
    if mixing == "joint":
        seen = {"adversarial": seen["adversarial"] + seen["clean"], "clean": []}
    mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    want_mean, want_var = mean.copy(), var.copy()
    m = layer.momentum
    for domain, features in seen.items():
        if features:
            f = np.concatenate([np.asarray(t, "float64") for t in features])
            row = layer.domain_index(domain)
            want_mean[row] = m * mean[row] + (1 - m) * f.mean((0, 1, 2))
            want_var[row] = m * var[row] + (1 - m) * f.var((0, 1, 2))
            batch = f.mean((0, 1, 2))  # toward the domain's own statistics
            assert (np.abs(want_mean[row] - batch) < np.abs(mean[row] - batch)).all()
    _fit(am, (x, y), steps=1)
    np.testing.assert_allclose(layer.moving_mean.numpy(), want_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), want_var, rtol=1e-5, atol=1e-5)
    if not seen["clean"]:
        clean_row = layer.domain_index("clean")
        assert np.array_equal(layer.moving_mean.numpy()[clean_row], mean[clean_row])


@pytest.mark.parametrize("images,labels,match", [
    (255.0, 1, "divide by 255"),
    (float("nan"), 1, "NaN or Inf"),
    (-0.5, 1, "smallest value"),
    (0.5, 10, "< 10 classes"),
    (0.5, -1, "labels must be >= 0"),
])
def test_bad_batches_are_refused_naming_the_value(images, labels, match):
    am = AdversarialModel(_model(), attack=PGD)
    am.compile(optimizer=keras.optimizers.SGD(0.01))
    x = np.full((4, 28, 28, 1), images, "float32")
    y = np.full((4,), labels, "int32")
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        am.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_mixbn_mixing_needs_mixbn_layers():
    with pytest.raises(ValueError, match="MixBN"):
        AdversarialModel(_model("bn"), attack=PGD, mixing="mixbn")


@pytest.mark.parametrize("kwargs,match", [
    ({"clean_portion": 1.5}, "clean_portion=1.5"),
    ({"mixing": "mixed"}, "mixing='mixed'"),
    ({"attack_bn": "eval"}, "attack_bn='eval'"),
    ({"weight_decay": -1.0}, "weight_decay=-1.0"),
    ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
])
def test_bad_trainer_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialModel(_model(), attack=PGD, **kwargs)


def test_weight_decay_touches_kernels_only():
    from tf_advscale.training import _kernels
    names = {v.path.split("/")[-1] for v in _kernels(_model())}
    assert names == {"kernel"}


def test_adversarial_model_saves_and_reloads(tmp_path, sample):
    am = AdversarialModel(_model("mixbn"), attack=attacks.fgsm_rs(0.1), eval_attack=PGD,
                          clean_portion=1.0, mixing="mixbn", alp_weight=0.5)
    _fit(am, sample, steps=1)
    am.save(tmp_path / "am.keras")
    re = keras.saving.load_model(tmp_path / "am.keras")
    assert isinstance(re, AdversarialModel)
    assert re.attack == am.attack and re.mixing == "mixbn" and re.alp_weight == 0.5
    x = sample[0][:8]
    for route in ("clean", "adversarial"):
        set_route(am.model, route)
        set_route(re.model, route)
        np.testing.assert_array_equal(re.predict(x, verbose=0), am.predict(x, verbose=0))


def test_attack_uses_inference_bn_by_default(sample):
    am = AdversarialModel(_model(), attack=PGD)
    x = tf.constant(sample[0][:4])
    np.testing.assert_array_equal(am.attack_model_fn(x).numpy(),
                                  am.model(x, training=False).numpy())


class _Scripted(CatastrophicOverfittingMonitor):
    def __init__(self, values, **kw):
        super().__init__(np.zeros((1, 28, 28, 1)), np.zeros(1), **kw)
        self.values = list(values)

    def _measure(self):
        return self.values.pop(0)


def test_catastrophic_overfitting_monitor_stops_and_restores():
    model = AdversarialModel(_model(), attack=attacks.fgsm_rs(0.1))
    monitor = _Scripted([0.30, 0.40, 0.35, 0.02])
    monitor.set_model(model)
    model.stop_training = False
    best = None
    for epoch in range(4):
        if epoch == 1:
            best = [w.copy() for w in model.get_weights()]
        elif epoch > 1:
            model.set_weights([w + 1.0 for w in model.get_weights()])
        monitor.on_epoch_end(epoch, {})
        if model.stop_training:
            break
    assert monitor.triggered and epoch == 3
    for a, b in zip(model.get_weights(), best):
        np.testing.assert_array_equal(a, b)


def test_catastrophic_overfitting_monitor_quiet_on_normal_runs():
    model = AdversarialModel(_model(), attack=attacks.fgsm_rs(0.1))
    monitor = _Scripted([0.2, 0.3, 0.28, 0.35])
    monitor.set_model(model)
    model.stop_training = False
    for epoch in range(4):
        monitor.on_epoch_end(epoch, {})
    assert not monitor.triggered and not model.stop_training


def test_catastrophic_overfitting_monitor_records_clean_accuracy_and_flags_a_broken_attack():
    # A robust reading far above the batch's clean accuracy cannot come from a
    # working attack (it is how a run of an edited checkout once misread).
    model = AdversarialModel(_model(), attack=attacks.fgsm_rs(0.1))
    monitor = _Scripted([0.2, 0.9])
    monitor.set_model(model)
    pred = tf.argmax(model.eval_model_fn(monitor.images), -1, output_type=tf.int32)
    monitor.labels = (pred + 1) % 10  # every image misclassified: clean accuracy 0
    clean = monitor._measure_clean()
    assert clean == 0.0
    monitor.on_epoch_end(0, logs := {})
    assert logs["heldout_clean_accuracy"] == clean == monitor.clean_history[0]
    with pytest.warns(UserWarning, match="exceeds the same batch's clean accuracy"):
        monitor.on_epoch_end(1, {})
    state = monitor.get_state()
    assert state["clean_history"] == [clean, clean]
    again = _Scripted([])
    again.set_state({k: v for k, v in state.items() if k != "clean_history"})  # an older run's
    assert again.clean_history == [] and again.history == [0.2, 0.9]


@pytest.mark.slow
def test_adversarial_training_gains_robustness(sample):
    from tf_advscale import data
    x, y, _ = data.as_numpy("fashion_mnist_sample", "train")
    keras.utils.set_random_seed(0)
    am = AdversarialModel(resnet(8, 10, input_shape=(28, 28, 1)), attack=PGD, eval_attack=PGD)
    am.compile(optimizer=keras.optimizers.Adam(2e-3))
    before = am.evaluate(sample[0], sample[1], verbose=0, return_dict=True)["adv_accuracy"]
    am.fit(x, y, batch_size=64, epochs=4, verbose=0)
    after = am.evaluate(sample[0], sample[1], verbose=0, return_dict=True)["adv_accuracy"]
    assert after > before + 0.2


class SubclassedNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.bn = keras.layers.BatchNormalization()
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(10)

    def call(self, x, training=False):
        return self.dense(self.pool(keras.ops.relu(self.bn(self.conv(x), training=training))))


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_wraps_sequential_and_subclassed_classifiers(sample, kind):
    """The README says AdversarialModel wraps any Keras classifier; with the
    input checks on, it read ``model.output``, which only functional models have."""
    x, y = sample[0][:32], sample[1][:32]
    keras.utils.set_random_seed(0)
    if kind == "sequential":
        model = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"),
                                  keras.layers.BatchNormalization(), keras.layers.ReLU(),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    else:
        model = SubclassedNet()
    trainer = AdversarialModel(model, attack={"name": "pgd", "epsilon": 0.1, "step_size": 0.05,
                                              "steps": 1}, seed=0)
    # One step: its adversarial accuracy is that of the training-mode logits of
    # the attack's images before the update, its clean accuracy (no clean
    # images in the batch) that of the inference-mode logits after it.
    adv = trainer._generate(x, y, trainer._seed(0, 0))
    logits = model.stateless_call([v.value for v in model.trainable_variables],
                                  [v.value for v in model.non_trainable_variables],
                                  adv, training=True)[0]
    adv_accuracy = np.mean(np.argmax(logits, -1) == y)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05))
    logs = trainer.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    assert logs["adv_accuracy"][0] == pytest.approx(adv_accuracy, abs=1e-6)
    clean_accuracy = np.mean(np.argmax(model(x, training=False), -1) == y)
    assert logs["clean_accuracy"][0] == pytest.approx(clean_accuracy, abs=1e-6)
    bad = y.copy()
    bad[0] = 12
    with pytest.raises(Exception, match="labels must be < the number of classes the model outputs"):
        trainer.fit(x, bad, batch_size=16, epochs=1, verbose=0)


class _TurnsRight(attacks.Attack):
    """Replaces each image by one the model classifies as its label, so that
    every clean mistake becomes right "under attack"."""

    def __init__(self, bank):
        self.bank = tf.constant(bank)

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        return tf.gather(self.bank, labels)


def test_robust_accuracy_counts_images_correct_clean_and_attacked(sample, trained):
    """``test_step`` (validation, ``metrics.json``) and ``evaluate.run_attacks``
    (``advscale eval``) define robust accuracy alike: an image the model gets
    wrong clean is not robust, even where the attack's image is classified right."""
    from tf_advscale import evaluate
    x, y = sample[0][:256], sample[1][:256]
    pred = np.argmax(trained.predict(x, verbose=0), -1)
    assert set(pred) == set(range(10))
    bank = np.stack([x[np.flatnonzero(pred == c)[0]] for c in range(10)])
    attack = _TurnsRight(bank)
    am = AdversarialModel(trained, attack=None, eval_attack=attack)
    am.compile(optimizer=keras.optimizers.SGD(0.0))
    r = am.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    clean = np.mean(pred == y)
    assert 0.5 < clean < 1.0  # some clean mistakes, which the attack "fixes"
    assert r["clean_accuracy"] == pytest.approx(clean, abs=1e-6)
    assert r["adv_accuracy"] == pytest.approx(clean, abs=1e-6)  # not 1.0
    correct, _ = evaluate.run_attacks(am, x, y, {"turns_right": attack}, batch_size=64,
                                      verbose=False)
    assert correct["turns_right"].mean() == pytest.approx(clean, abs=1e-6)
