import json
import os
import subprocess
import sys

import numpy as np
import keras
import pytest
import tensorflow as tf

from tf_advscale import attacks, data
from tf_advscale.attacks import make as make_attack
from tf_advscale.evaluate import epsilon_fraction, evaluate, markdown, summary
from tf_advscale.masking import sanity_checks
from tf_advscale.models import resnet
from tf_advscale.training import AdversarialModel

EPS = 0.1


@pytest.fixture(scope="module")
def robust_model(tmp_path_factory):
    """A small model adversarially trained on the sample's training split."""
    x, y, _ = data.as_numpy("fashion_mnist_sample", "train")
    keras.utils.set_random_seed(0)
    m = resnet(8, 10, input_shape=(28, 28, 1))
    am = AdversarialModel(m, attack={"name": "pgd", "epsilon": EPS, "step_size": 0.04, "steps": 3})
    am.compile(optimizer=keras.optimizers.Adam(2e-3))
    am.fit(x, y, batch_size=64, epochs=3, verbose=0)
    path = str(tmp_path_factory.mktemp("model") / "robust.keras")
    m.save(path)
    return path


def _eval(model, workdir, n=100, **kw):
    kw = {"attacks": ["pgd-10", "apgd-ce", "square-100"], "steps_curve": [2, 5, 10],
          "eps_curve": [0.05, 0.1], "batch_size": 50, **kw}
    return evaluate(model, dataset="fashion_mnist_sample", n=n, epsilon=EPS,
                    workdir=str(workdir), verbose=False, **kw)


@pytest.mark.slow
def test_report_worst_case_and_files(robust_model, tmp_path):
    r = _eval(robust_model, tmp_path)
    accs = [v["accuracy"] for v in r["attacks"].values()]
    assert r["worst_case_accuracy"] <= min(accs) <= r["clean_accuracy"]
    assert 0.3 < r["clean_accuracy"] and r["worst_case_accuracy"] > 0.1
    assert r["epsilon_fraction"] == "1/10" and r["data"]["n"] == 100 and len(r["data"]["ids"]) == 100
    assert not r["gradient_masking_suspected"], r["sanity_checks"]
    for f in ("report.json", "report.md", "curve_steps.png", "curve_epsilon.png"):
        assert (tmp_path / f).exists(), f
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["attacks"]["apgd-ce"]["config"]["loss"] == "ce"
    assert saved["robustbench"]["eps"] == "1/10"
    assert "worst case" in markdown(r)


@pytest.mark.slow
def test_interrupted_evaluation_resumes_with_the_same_numbers(robust_model, tmp_path):
    full = _eval(robust_model, tmp_path / "full", steps_curve=None, eps_curve=None)
    # Simulate a crash after the first batch: drop the later batch files.
    part = tmp_path / "part"
    _eval(robust_model, part, steps_curve=None, eps_curve=None)
    batches = sorted((part / "main" / "batches").iterdir())
    for b in batches[1:]:
        b.unlink()
    os.remove(part / "report.json")
    resumed = _eval(robust_model, part, steps_curve=None, eps_curve=None)
    assert resumed["attacks"] == {k: {**v, "seconds": resumed["attacks"][k]["seconds"]}
                                  for k, v in full["attacks"].items()}
    assert resumed["worst_case_accuracy"] == full["worst_case_accuracy"]
    # A different evaluation in the same workdir is refused, not mixed in.
    with pytest.raises(ValueError, match="different evaluation"):
        _eval(robust_model, part, n=60, steps_curve=None, eps_curve=None)


@keras.saving.register_keras_serializable(package="tests")
class Quantize(keras.layers.Layer):
    """Rounds inputs to 4 levels with a zero gradient: classic gradient masking."""

    def call(self, x):
        return tf.stop_gradient(tf.round(x * 3.0) / 3.0)


@pytest.mark.slow
def test_gradient_masked_model_is_flagged(robust_model, tmp_path):
    inner = keras.saving.load_model(robust_model)
    inputs = keras.Input((28, 28, 1))
    masked = keras.Model(inputs, inner(Quantize()(inputs)))
    r = _eval(masked, tmp_path, attacks=["pgd-10", "apgd-ce", "square-300"])
    assert r["gradient_masking_suspected"]
    failed = {c["check"] for c in r["sanity_checks"] if c["passed"] is False}
    assert "the gradient-free attack does not beat the white-box ones" in failed
    assert "random noise is weaker than PGD" in failed


def test_sanity_checks_logic():
    ok = sanity_checks({"pgd": 0.4, "square": 0.45}, {10: 0.5, 100: 0.4}, (0.4, 0.39),
                       (0.5, 0.0), 0.8)
    assert all(c["passed"] for c in ok)
    bad = sanity_checks({"pgd": 0.4, "square": 0.3}, {10: 0.4, 100: 0.5}, (0.4, 0.45),
                        (0.5, 0.3), 0.4)
    assert not any(c["passed"] for c in bad)


def test_checks_that_cannot_fail_read_n_a():
    """A route at 0% robust accuracy (MixBN's clean route): nothing can rise
    above 0 or fall below it, so those checks are n/a, not passes."""
    moot = sanity_checks({"pgd-20": 0.0, "square": 0.0, "autoattack": 0.0}, {10: 0.0, 100: 0.0},
                         (0.0, 0.0), (0.5, 0.0), 0.9)
    assert [c["passed"] for c in moot] == [None, None, None, None, True]
    assert all("n/a" in c for c in moot[:4])
    # AutoAttack contains Square: it is not the white-box side of the Square check.
    mixed = sanity_checks({"pgd-20": 0.4, "square": 0.45, "autoattack": 0.3})
    assert mixed[0]["detail"]["best white-box"] == 0.4 and mixed[0]["passed"]


def test_apgd_is_at_least_as_strong_as_pgd(robust_model, sample):
    m = keras.saving.load_model(robust_model)
    fn = lambda z: m(z, training=False)
    x, y = tf.constant(sample[0][:200]), tf.constant(sample[1][:200])
    acc = lambda a: float((m(a, training=False).numpy().argmax(-1) == sample[1][:200]).mean())
    keras.utils.set_random_seed(0)
    pgd = acc(tf.function(lambda a, b: attacks.PGD(EPS, EPS / 4, 10)(fn, a, b))(x, y))
    apgd = acc(tf.function(lambda a, b: attacks.APGD(EPS, 20)(fn, a, b))(x, y))
    apgd_t = acc(tf.function(lambda a, b: attacks.APGD(EPS, 20, loss="dlr_targeted",
                                                       n_target_classes=3)(fn, a, b))(x, y))
    assert apgd <= pgd + 0.015 and apgd_t <= pgd + 0.015


@pytest.mark.parametrize("cls,kwargs", [(attacks.APGD, {"steps": 10}),
                                        (attacks.APGD, {"steps": 10, "norm": "l2", "epsilon": 1.0}),
                                        (attacks.APGD, {"steps": 10, "loss": "dlr_targeted"}),
                                        (attacks.Square, {"queries": 50})])
def test_new_attacks_stay_in_the_ball(robust_model, sample, cls, kwargs):
    m = keras.saving.load_model(robust_model)
    kwargs = {"epsilon": EPS, **kwargs}
    atk = cls(**kwargs)
    x, y = sample[0][:16], sample[1][:16]
    adv = atk(lambda z: m(z, training=False), x, y).numpy()
    assert adv.min() >= 0 and adv.max() <= 1
    d = (adv - x).reshape(16, -1)
    if kwargs.get("norm") == "l2":
        assert np.linalg.norm(d, axis=1).max() <= kwargs["epsilon"] * (1 + 1e-5)
    else:
        assert np.abs(d).max() <= EPS + 1e-6


def test_attack_names_and_errors():
    assert make_attack("pgd-20", 0.1).steps == 20
    assert make_attack("pgd-20-r3", 0.1).restarts == 3
    p = make_attack("paper-pgd-10", 16 / 255)
    assert p.targeted and abs(p.step_size - 1.6 / 255) < 1e-9
    assert make_attack("apgd-t", 0.1).loss == "dlr_targeted"
    assert make_attack("apgd-ce-l2", 0.5).norm == "l2"
    with pytest.raises(ValueError, match="'pdg-20'"):
        make_attack("pdg-20", 0.1)
    assert epsilon_fraction(8 / 255) == "8/255"
    with pytest.raises(ValueError, match="0-255"):
        evaluate(resnet(8, 10, input_shape=(28, 28, 1)), x=np.full((2, 28, 28, 1), 200.0),
                 y=np.zeros(2), attacks=["pgd-1"])


@pytest.mark.slow
def test_cli_eval(robust_model, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run([sys.executable, "-m", "tf_advscale.cli", "eval", "--model", robust_model,
                        "--dataset", "fashion_mnist_sample", "--n", "50", "--epsilon", "1/10",
                        "--attacks", "pgd-5,square-50", "--steps-curve", "2,5",
                        "--batch-size", "50", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "worst case" in r.stdout
    assert json.loads((tmp_path / "report.json").read_text())["epsilon_fraction"] == "1/10"


def test_several_attacks_trace_without_a_retracing_warning():
    import logging

    from tf_advscale.evaluate import run_attacks

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype("float32")
    y = np.arange(20) % 3
    steps = range(1, 8)  # a steps curve: each attack traced once
    handler = Records()
    tf.get_logger().addHandler(handler)
    try:
        out, _ = run_attacks(model, x, y, {f"pgd-{k}": make_attack(f"pgd-{k}", 0.1, 3)
                                           for k in steps}, batch_size=10, verbose=False)
    finally:
        tf.get_logger().removeHandler(handler)
    assert set(out) == {"clean"} | {f"pgd-{k}" for k in steps}
    assert not [m for m in handler.messages if "retracing" in m], handler.messages


def test_each_attack_is_traced_once_whatever_each_batch_leaves_it(monkeypatch):
    """The attacks run on the images classified correctly, a different
    number in each batch; each attack (and the clean prediction) is traced
    once, not once for the first size and again relaxed."""
    from tf_advscale import evaluate as evaluate_lib
    from tf_advscale.evaluate import run_attacks

    traces, predict_traces = [], []
    predict = evaluate_lib._predict
    monkeypatch.setattr(evaluate_lib, "_predict",
                        lambda fn, images: predict_traces.append(1) or predict(fn, images))

    class Counted(attacks.PGD):
        def perturb(self, *args, **kwargs):
            traces.append(1)  # Python runs only while TensorFlow traces
            return super().perturb(*args, **kwargs)

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((30, 8, 8, 1)).astype("float32")
    pred = model.predict(x, verbose=0).argmax(1)
    right = np.concatenate([np.arange(10) < k for k in (7, 3, 5)])  # 7, 3, 5 correct
    y = np.where(right, pred, (pred + 1) % 3)
    out, _ = run_attacks(model, x, y, {"pgd": Counted(0.1, 0.05, 2)}, batch_size=10,
                         verbose=False)
    assert [int(out["clean"][b * 10:(b + 1) * 10].sum()) for b in range(3)] == [7, 3, 5]
    assert len(traces) == 1, len(traces)
    assert len(predict_traces) == 1, len(predict_traces)


def test_resumed_evaluation_reports_the_time_its_saved_batches_took(tmp_path):
    from tf_advscale.evaluate import run_attacks
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype("float32")
    y = np.arange(20) % 3
    attacks = {"pgd-5": make_attack("pgd-5", 0.1, 3)}
    first, seconds = run_attacks(model, x, y, attacks, batch_size=10, workdir=str(tmp_path),
                                 verbose=False)
    again, reused = run_attacks(model, x, y, attacks, batch_size=10, workdir=str(tmp_path),
                                verbose=False)  # every batch is reused
    assert seconds["pgd-5"] > 0 and reused["pgd-5"] == pytest.approx(seconds["pgd-5"])
    np.testing.assert_array_equal(first["pgd-5"], again["pgd-5"])
    # Batches saved attacking only the correct images are not reused for an
    # evaluation that attacks every image (the two differ under batch statistics).
    with pytest.raises(ValueError, match="different evaluation"):
        run_attacks(model, x, y, attacks, batch_size=10, workdir=str(tmp_path), verbose=False,
                    correct_only=False)


def test_a_resume_by_other_code_warns_that_the_result_mixes_versions(tmp_path, monkeypatch):
    """The settings' fingerprint cannot see a code change: each batch records
    the code that computed it (the package's source tree), and a result whose
    batches come from two versions says so. Rereading one version's batches
    does not."""
    import warnings
    from tf_advscale import evaluate as ev
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype("float32")
    y = np.arange(20) % 3
    attacks = {"pgd-2": make_attack("pgd-2", 0.1, 3)}

    def run(code, workdir, n=20):
        monkeypatch.setattr(ev, "code_identity", lambda: code)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ev.run_attacks(model, x[:n], y[:n], attacks, batch_size=10, workdir=str(workdir),
                           verbose=False)
        return [str(w.message) for w in caught if "versions of the code" in str(w.message)]

    a, b = "tf_advscale 0.1.0, tree aaa", "tf_advscale 0.1.0, tree aaa + edits bbb"
    assert run(a, tmp_path / "one", n=10) == [] and run(a, tmp_path / "one") == []
    with np.load(tmp_path / "one" / "batches" / "batch_00001.npz") as saved:
        assert str(saved["code__"]) == a
    assert run(b, tmp_path / "one") == []  # nothing computed: one version's result
    assert run(a, tmp_path / "two", n=10) == []
    [message] = run(b, tmp_path / "two")
    assert "2 versions" in message and f"({a}; {b})" in message
    # A batch saved before batches recorded their code counts as another version.
    assert run(a, tmp_path / "three", n=10) == []
    path = tmp_path / "three" / "batches" / "batch_00000.npz"
    with np.load(path) as saved:
        old = {k: saved[k] for k in saved.files if k != "code__"}
    np.savez(path, **old)
    [message] = run(a, tmp_path / "three")
    assert "a version from before batches recorded it" in message


def test_attacks_run_only_on_the_images_classified_correctly():
    """Robust means correct clean and attacked, so attacking the misclassified
    images is wasted work: the attacks see only the correct ones, with the
    same result as attacking all (deterministic PGD: no random start)."""
    from tf_advscale.evaluate import run_attacks

    class Counting(attacks.PGD):
        seen = tf.Variable(0)

        def __call__(self, model_fn, images, labels, seed=None):
            self.seen.assign_add(tf.shape(images)[0])
            return super().__call__(model_fn, images, labels, seed=seed)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((60, 8, 8, 1)).astype("float32")
    y = np.arange(60) % 3
    attack = Counting(epsilon=0.02, step_size=0.01, steps=3, random_start=0.0)
    full, _ = run_attacks(model, x, y, {"pgd": attack}, batch_size=25, verbose=False,
                          correct_only=False)
    assert int(Counting.seen.numpy()) == 60
    Counting.seen.assign(0)
    only, _ = run_attacks(model, x, y, {"pgd": attack}, batch_size=25, verbose=False)
    assert int(Counting.seen.numpy()) == full["clean"].sum() < 60
    np.testing.assert_array_equal(only["clean"], full["clean"])
    np.testing.assert_array_equal(only["pgd"], full["pgd"])
    assert 0 < full["pgd"].sum() < full["clean"].sum()  # the attack did something
    # A batch with no correct image is not attacked at all.
    wrong = (np.argmax(model.predict(x, verbose=0), -1) + 1) % 3
    Counting.seen.assign(0)
    none, _ = run_attacks(model, x, wrong, {"pgd": attack}, batch_size=25, verbose=False)
    assert int(Counting.seen.numpy()) == 0 and not none["pgd"].any()


def test_curves_run_on_a_seeded_subset_not_the_first_images():
    """Test sets stored by class (an image folder) must not give the curves one
    class: a model that is right on class 0 only, 100 images of class 0 then
    100 of class 1, curves on 100 of them."""
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(2, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant([1, 0]))
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).random((200, 4, 4, 1)).astype("float32")
    y = np.repeat([0, 1], 100)
    r = evaluate(model, x, y, epsilon=0.01, attacks=["pgd-2"], steps_curve=[1, 2], curve_n=100,
                 batch_size=50, verbose=False)
    curve = r["curves"]["steps"]
    assert curve["n"] == 100 and curve["subset"] == "drawn with seed 0"
    ids = np.sort(np.random.default_rng(0).choice(200, 100, replace=False))
    assert curve["accuracy"]["2"] == pytest.approx(np.mean(y[ids] == 0))
    assert 0.3 < curve["accuracy"]["2"] < 0.7  # the first 100 would read 1.0
    whole = evaluate(model, x, y, epsilon=0.01, attacks=["pgd-2"], steps_curve=[2],
                     batch_size=50, verbose=False)["curves"]["steps"]
    assert whole["subset"] == "all" and whole["accuracy"]["2"] == pytest.approx(0.5)


def test_checks_false_skips_the_sanity_checks_and_keeps_the_numbers(tmp_path):
    """A quick re-measurement (the zoo's check set) skips the ~100 extra PGD
    steps per image of the checks, gives the same attack numbers and says the
    numbers are not checked."""
    inputs = keras.Input((4, 4, 1))
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.RandomNormal(seed=1))
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(1).random((60, 4, 4, 1)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), 1).astype("int32")  # all right clean
    kwargs = dict(epsilon=0.3, attacks=["pgd-3"], batch_size=20, verbose=False)
    full = evaluate(model, x, y, workdir=str(tmp_path / "full"), **kwargs)
    quick = evaluate(model, x, y, workdir=str(tmp_path / "quick"), checks=False, **kwargs)
    assert full["sanity_checks"] and full["gradient_masking_suspected"] is not None
    assert quick["sanity_checks"] == [] and quick["gradient_masking_suspected"] is None
    assert summary(quick) == summary(full) and summary(full)["pgd-3"] < 0.9  # it attacks
    assert (tmp_path / "full" / "checks").is_dir() and not (tmp_path / "quick" / "checks").exists()
    assert "Not run" in (tmp_path / "quick" / "report.md").read_text()


def test_an_l2_evaluation_reports_l2_and_curves_and_checks_with_l2_attacks(trained, sample,
                                                                             tmp_path):
    x, y = sample
    report = evaluate(trained, x=x[:32], y=y[:32], epsilon=1.0,
                      attacks=["pgd-10-l2", "square-50-l2"], steps_curve=[2, 5],
                      eps_curve=[0.5, 1.0], batch_size=32, verbose=False,
                      workdir=str(tmp_path))
    assert report["threat_model"] == "L2" and report["robustbench"]["threat_model"] == "L2"
    assert "L2 epsilon 1" in markdown(report)
    assert report["attacks"]["pgd-10-l2"]["config"]["norm"] == "l2"
    assert report["curves"]["steps"]["attack"].startswith("pgd-K-l2")
    assert report["curves"]["epsilon"]["attack"] == "pgd-20-l2"
    state = json.load(open(tmp_path / "checks" / "state.json"))["settings"]["attacks"]
    assert all("norm='l2'" in v for v in state.values()), state
    # The very large epsilon is L-inf 0.5's L2 size: 0.5 x sqrt(28 x 28 x 1) = 14.
    large = next(c for c in report["sanity_checks"] if "large epsilon" in c["check"])
    assert large["detail"]["epsilon"] == pytest.approx(14.0)
    with pytest.raises(ValueError, match="mix L-inf and L2"):
        evaluate(trained, x=x[:8], y=y[:8], epsilon=0.1, attacks=["pgd-5", "pgd-5-l2"],
                 checks=False, verbose=False)


def test_a_trajectory_attack_reports_each_step_count_it_was_read_at():
    """``paper-pgd-2-6``: one 6-step trajectory, read at 2 and 6 steps; the
    report's ``after_each`` has both, and its last is the attack's accuracy."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).random((60, 8, 8, 1)).astype("float32")
    y = np.arange(60) % 3
    run = lambda name: evaluate(model, x=x, y=y, epsilon=0.05, attacks=[name],  # noqa: E731
                                batch_size=25, checks=False, verbose=False)
    r = run("paper-pgd-2-6")
    a = r["attacks"]["paper-pgd-2-6"]
    assert list(a["after_each"]) == ["step-2", "step-6"]
    assert a["after_each"]["step-6"] == a["accuracy"] < r["clean_accuracy"]
    assert a["config"]["checkpoints"] == [2] and a["config"]["steps"] == 6
    # In the evaluation's graphs, at the same place in the list (so the same
    # seeds): each step count is what the separate attack gives.
    for k in (2, 6):
        alone = run(f"paper-pgd-{k}")["attacks"][f"paper-pgd-{k}"]["accuracy"]
        assert a["after_each"][f"step-{k}"] == alone
    assert a["after_each"]["step-2"] != a["accuracy"]  # two different points
    assert f"| paper-pgd-2-6: after step-2 | {100 * a['after_each']['step-2']:.2f} |" in markdown(r)
