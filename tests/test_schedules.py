"""The learning-rate schedules of configs (``schedules.learning_rate``), against
the formulas of ``LRSchedule``, the one schedule class before Keras' own were used."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_advscale import schedules


def rates(schedule, n):
    """``schedule`` at steps 0 .. n - 1 (int64, as an optimizer counts them)."""
    steps = tf.range(n, dtype=tf.int64)
    return tf.function(lambda s: tf.vectorized_map(schedule, s))(steps).numpy()


def old_rates(base, spe, epochs, kind, warmup_epochs=0, decay_epochs=(), n=None):
    """LRSchedule's formulas (tf_advscale before Keras' schedules), in float64."""
    epoch = np.arange(n) / spe
    if kind == "cosine":
        t = np.clip((epoch - warmup_epochs) / max(1e-9, epochs - warmup_epochs), 0, 1)
        lr = 0.5 * base * (1 + np.cos(np.pi * t))
    elif kind == "piecewise":
        lr = base * 0.1 ** sum((epoch >= e).astype(float) for e in decay_epochs)
    else:
        lr = np.full(n, float(base))
    if warmup_epochs > 0:  # step s: base * (s + 1) / W, W = warmup_epochs * spe steps
        lr = np.where(epoch < warmup_epochs, base * (epoch + 1 / spe) / warmup_epochs, lr)
    return lr


# The configs' recipes: (base, steps per epoch, epochs, schedule, warm-up epochs,
# decay epochs), steps per epoch those of their data at batch 128 (CIFAR-10
# 50,000 images: 390; Fashion-MNIST 60,000: 468; reproduce's subsets), and
# small ones with fractional epochs and a run no longer than its warm-up.
RECIPES = {
    "adversarial_cifar10": (0.1, 390, 20, "cosine", 1, ()),
    "adversarial_fmnist": (0.1, 468, 8, "cosine", 1, ()),
    "cifar10_standard": (0.1, 390, 15, "cosine", 1, ()),
    "reproduce_small_cifar10": (0.1, 78, 10, "cosine", 1, ()),
    "runlocal_warmup_is_the_run": (0.1, 62, 1, "cosine", 1, ()),
    "fractional_warmup": (0.1, 7, 3, "cosine", 0.5, ()),
    "fmnist_standard": (0.1, 468, 4, "cosine", 0, ()),
    "reproduce_paper": (1.6, 1000, 110, "piecewise", 5, (35, 70, 95)),
    "piecewise_fractional": (0.1, 7, 4, "piecewise", 1, (2.3, 1.5)),
    "piecewise_no_warmup": (0.1, 10, 4, "piecewise", 0, (2, 3)),
    "piecewise_no_decay": (0.1, 10, 3, "piecewise", 1, ()),
    "constant": (0.05, 10, 3, "constant", 1, ()),
    "constant_no_warmup": (0.05, 10, 3, "constant", 0, ()),
}


@pytest.mark.parametrize("name", RECIPES)
def test_rates_are_the_old_ones_but_in_the_warmup(name):
    """Keras' warm-up (CosineDecay's, and ``LinearWarmup``'s, which is the same
    line) runs from ``initial_learning_rate = base / W`` at step 0 to ``base``
    at step W; the old one gave ``base * (s + 1) / W`` at step s. So at warm-up
    step s (0 <= s < W) the new rate is lower by exactly ``base * s / W**2``:
    equal at step 0, most apart at the last warm-up step, by
    ``base * (W - 1) / W**2`` (just under base / W: 0.1 * 389 / 390**2 = 2.56e-4,
    0.26% of the rate, for CIFAR-10's 390 steps at base 0.1; 1.27e-3 for
    reproduce's 78). From step W on the rates agree to float32 rounding: rtol
    1e-6, or where the cosine nears 0 at the end of the run 2**-21 * base
    absolute (measured at most 1.9e-8 at base 0.1: the old and new compute the
    cosine's fraction in different float32 orders). The warm-up's difference
    holds to the same float32 rounding."""
    base, spe, epochs, kind, warmup, decay = RECIPES[name]
    n = int(spe * epochs) + 2 * spe  # and steps past the end of the run
    new = rates(schedules.learning_rate(base, spe, epochs, kind, warmup_epochs=warmup,
                                        decay_epochs=decay), n).astype(np.float64)
    old = old_rates(base, spe, epochs, kind, warmup, decay, n)
    w = warmup * spe
    s = np.arange(int(np.ceil(w)))
    np.testing.assert_allclose(new[s] - old[s], -base * s / w ** 2, rtol=0, atol=2 ** -21 * base)
    np.testing.assert_allclose(new[len(s):], old[len(s):], rtol=1e-6, atol=2 ** -21 * base)


def test_every_warmup_is_cosine_decays():
    """Piecewise and constant rates warm up on the very floats CosineDecay's
    warm-up gives."""
    cosine = rates(schedules.learning_rate(0.4, 13, 6, "cosine", warmup_epochs=2), 26)
    for kind in ("piecewise", "constant"):
        s = schedules.learning_rate(0.4, 13, 6, kind, warmup_epochs=2, decay_epochs=[1, 4])
        np.testing.assert_array_equal(rates(s, 26), cosine)
    assert cosine[0] == np.float32(0.4 / 26)


def test_schedules_are_keras_own():
    cosine = schedules.learning_rate(0.1, 10, 5, "cosine", warmup_epochs=1)
    assert type(cosine) is keras.optimizers.schedules.CosineDecay
    assert (cosine.initial_learning_rate, cosine.warmup_target, cosine.warmup_steps,
            cosine.decay_steps, cosine.alpha) == (0.01, 0.1, 10, 40, 0.0)
    assert schedules.learning_rate(0.1, 10, 5).warmup_target is None
    piecewise = schedules.learning_rate(1.6, 100, 110, "piecewise", warmup_epochs=5,
                                        decay_epochs=[35, 70, 95])
    assert isinstance(piecewise, schedules.LinearWarmup)
    after = piecewise.after
    assert type(after) is keras.optimizers.schedules.PiecewiseConstantDecay
    # Value i + 1 from step boundaries[i] + 1 = decay epoch * steps per epoch on.
    assert after.boundaries == [3499, 6999, 9499]
    assert after.values == [1.6, 0.16, 0.016, 0.0016]


@pytest.mark.parametrize("args", [
    (0.2, 390, 15, None, {0: 0x38b33e67, 1: 0x39333e67, 194: 0x3c888889, 389: 0x3d088889,
                          390: 0x3d08e227, 2338: 0x3e4cb664, 2339: 0x3e4ccccd,
                          2340: 0x3e4cbdde, 3000: 0x3e263b76, 5848: 0x386eeeef, 5849: 0,
                          5850: 0}),
    (0.2, 390, 30, None, {0: 0x38333e67, 4679: 0x3e4ccccd, 11699: 0}),
    (0.2, 10, 15, 3, {0: 0x3bda740f, 29: 0x3e4ccccd, 30: 0x3e4b17e4, 31: 0x3e4962fd, 149: 0})])
def test_cyclic_rates_are_bit_for_bit_the_old_ones(args):
    """The float32 bits LRSchedule(..., "cyclic") gave before Keras' schedules
    came in (configs/fast.py's runs, which resume across the change)."""
    base, spe, epochs, peak, want = args
    s = schedules.learning_rate(base, spe, epochs, "cyclic", warmup_epochs=1, peak_epoch=peak)
    assert isinstance(s, schedules.Cyclic)  # and no warm-up, as before
    got = {step: int(np.float32(s(tf.constant(step, tf.int64))).view(np.uint32))
           for step in want}
    assert got == want


def test_cyclic_schedule_is_wong_et_al_triangle():
    steps_per_epoch, epochs = 10, 15
    s = schedules.learning_rate(0.2, steps_per_epoch, epochs, "cyclic")
    for step in (0, 5, 59, 60, 61, 100, 149):
        t = step // steps_per_epoch + (step % steps_per_epoch + 1) / steps_per_epoch
        want = np.interp(t, [0, 6, 15], [0, 0.2, 0])  # peak at epochs * 2 // 5
        assert abs(float(s(step)) - want) < 1e-6, step


EVERY_KIND = [("cosine", 1), ("cosine", 0), ("piecewise", 1), ("piecewise", 0),
              ("constant", 1), ("constant", 0), ("cyclic", 0)]


@pytest.mark.parametrize("kind,warmup", EVERY_KIND)
def test_optimizer_with_schedule_round_trips(kind, warmup):
    s = schedules.learning_rate(0.1, 10, 4, kind, warmup_epochs=warmup, decay_epochs=[2, 3])
    sgd = keras.optimizers.SGD(learning_rate=s, momentum=0.9)
    again = keras.optimizers.SGD.from_config(sgd.get_config())
    assert type(again._learning_rate) is type(s)
    through_json = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(sgd))))
    for o in (again, through_json):
        assert o.get_config() == sgd.get_config()
        np.testing.assert_array_equal(rates(o._learning_rate, 50), rates(s, 50))


def _compiled(learning_rate):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9), loss="mse")
    return model


@pytest.mark.parametrize("kind,warmup", [("piecewise", 1), ("cyclic", 0)])
def test_saved_model_with_compiled_schedule_reloads(tmp_path, kind, warmup):
    s = schedules.learning_rate(0.1, 10, 4, kind, warmup_epochs=warmup, decay_epochs=[2, 3])
    _compiled(s).save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # safe_mode
    assert type(loaded.optimizer._learning_rate) is type(s)
    np.testing.assert_array_equal(rates(loaded.optimizer._learning_rate, 50), rates(s, 50))


# An SGD as tf_advscale wrote it into a .keras file before Keras' schedules.
OLD_SGD = {
    "module": "keras.optimizers", "class_name": "SGD", "registered_name": None,
    "config": {"name": "sgd", "momentum": 0.9, "nesterov": False, "learning_rate": {
        "module": "tf_advscale.schedules", "class_name": "LRSchedule",
        "registered_name": "tf_advscale>LRSchedule",
        "config": {"base_lr": 0.1, "steps_per_epoch": 10, "epochs": 4.0, "kind": "piecewise",
                   "warmup_epochs": 1.0, "decay_epochs": [2.0, 3.0], "peak_epoch": 1.6}}}}


def test_models_saved_with_the_old_schedule_class_load(tmp_path):
    """A .keras file whose compiled optimizer names tf_advscale>LRSchedule
    loads, with today's schedule for that config."""
    _compiled(0.1).save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as new, \
            zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for name in new.namelist():
            data = new.read(name)
            if name == "config.json":
                config = json.loads(data)
                config["compile_config"]["optimizer"] = OLD_SGD
                data = json.dumps(config)
            old.writestr(name, data)
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    s = loaded.optimizer._learning_rate
    assert isinstance(s, schedules.LinearWarmup)
    want = schedules.learning_rate(0.1, 10, 4, "piecewise", warmup_epochs=1, decay_epochs=[2, 3])
    assert keras.saving.serialize_keras_object(s) == keras.saving.serialize_keras_object(want)
    with pytest.raises(TypeError, match="schedules.learning_rate"):
        schedules.LRSchedule(0.1, 10, 4)


@pytest.mark.parametrize("kwargs,said", [
    ({"schedule": "cosin"}, "Received: schedule='cosin'"),
    ({"base_lr": 0}, "Received: learning_rate=0"),
    ({"base_lr": "0.1"}, "Received: learning_rate='0.1'"),
    ({"epochs": 0}, "Received: epochs=0"),
    ({"warmup_epochs": -1}, "Received: warmup_epochs=-1"),
    ({"warmup_epochs": None}, "Received: warmup_epochs=None"),
    ({"decay_epochs": [35, "70"]}, "Received: decay_epochs=[35, '70']"),
    ({"schedule": "cyclic", "peak_epoch": 15}, "Received: peak_epoch=15"),
])
def test_bad_input_is_one_line_naming_the_value(kwargs, said):
    args = {"base_lr": 0.1, "steps_per_epoch": 10, "epochs": 15, **kwargs}
    with pytest.raises(ValueError) as e:
        schedules.learning_rate(**args)
    assert said in str(e.value) and "\n" not in str(e.value)
