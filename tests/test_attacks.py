"""Attack properties on real images (the Fashion-MNIST sample)."""

import numpy as np
import keras
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_advscale import attacks, data
from tf_advscale.models import resnet
from tf_advscale.training import AdversarialModel


def test_fixture_model_is_trained(trained, sample):
    x, y = sample
    assert (trained.predict(x, verbose=0).argmax(-1) == y).mean() > 0.5


def _fn(model):
    return lambda images: model(images, training=False)


def _xent(model, x, y):
    return keras.losses.sparse_categorical_crossentropy(y, model(x, training=False),
                                                        from_logits=True).numpy()


ATTACKS = st.sampled_from(["pgd_linf", "pgd_l2", "fgsm", "fgsm_rs", "pgd_targeted"])


def _make(kind, eps, steps):
    if kind == "pgd_linf":
        return attacks.PGD(epsilon=eps, step_size=eps / 4, steps=steps)
    if kind == "pgd_l2":
        return attacks.PGD(epsilon=eps * 10, step_size=eps * 2.5, steps=steps, norm="l2")
    if kind == "fgsm":
        return attacks.FGSM(epsilon=eps)
    if kind == "fgsm_rs":
        return attacks.fgsm_rs(epsilon=eps)
    return attacks.PGD(epsilon=eps, step_size=eps / 4, steps=steps, targeted=True,
                       random_start=0.8)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=ATTACKS, eps=st.floats(0.005, 0.3), steps=st.integers(0, 4),
       start=st.integers(0, 480))
def test_output_in_ball_and_valid_range(trained, sample, kind, eps, steps, start):
    x, y = sample[0][start:start + 16], sample[1][start:start + 16]
    attack = _make(kind, eps, steps)
    adv = attack(_fn(trained), x, y).numpy()
    assert adv.shape == x.shape and adv.dtype == np.float32
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    d = (adv - x).reshape(len(x), -1)
    if attack.norm == "linf":
        assert np.abs(d).max() <= attack.epsilon + 1e-6
    else:
        assert np.linalg.norm(d, axis=1).max() <= attack.epsilon * (1 + 1e-5)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 400), eps=st.floats(0.03, 0.1))
def test_pgd_beats_random_noise_of_the_same_size(trained, sample, start, eps):
    x, y = sample[0][start:start + 64], sample[1][start:start + 64]
    pgd = attacks.PGD(epsilon=eps, step_size=eps / 4, steps=10)
    noise = np.clip(x + np.sign(np.random.default_rng(start).normal(size=x.shape)) * eps, 0, 1)
    assert _xent(trained, pgd(_fn(trained), x, y), y).mean() > \
        _xent(trained, noise.astype("float32"), y).mean()


def test_targeted_attack_raises_target_probability(trained, sample):
    x, y = sample[0][:64], sample[1][:64]
    target = (y + 3) % 10
    pgd = attacks.PGD(epsilon=0.1, step_size=0.02, steps=10, targeted=True)
    adv = pgd(_fn(trained), x, y, target=target)
    p0 = tf.nn.softmax(trained(x, training=False)).numpy()[np.arange(64), target]
    p1 = tf.nn.softmax(trained(adv, training=False)).numpy()[np.arange(64), target]
    assert p1.mean() > p0.mean() + 0.05
    assert (p1 > p0).mean() > 0.8


def test_random_targets_are_wrong_classes():
    y = tf.constant(np.arange(1000) % 10, tf.int32)
    t = attacks.random_targets(y, 10).numpy()
    assert (t != y.numpy()).all() and set(t) == set(range(10))


@pytest.mark.parametrize("attack_bn", ["inference", "train"])
@pytest.mark.parametrize("norm", ["bn", "mixbn"])
def test_attacks_leave_all_model_variables_unchanged(sample, attack_bn, norm):
    x, y = sample[0][:32], sample[1][:32]
    m = resnet(8, 10, input_shape=(28, 28, 1), norm=norm, width=0.5)
    am = AdversarialModel(m, attack=attacks.PGD(0.1, 0.03, 3), attack_bn=attack_bn)
    before = [v.numpy().copy() for v in m.variables]
    adv = tf.function(am._generate)(tf.constant(x), tf.constant(y))
    assert not np.allclose(adv.numpy(), x)
    for b, v in zip(before, m.variables):
        np.testing.assert_array_equal(b, v.numpy(), err_msg=v.path)


def test_restarts_never_lose_a_success(trained, sample):
    x, y = sample[0][:64], sample[1][:64]
    fn = _fn(trained)
    keras.utils.set_random_seed(5)
    one = attacks.PGD(0.05, 0.0125, 3, restarts=1)
    many = attacks.PGD(0.05, 0.0125, 3, restarts=4)
    acc = lambda a: (trained(a, training=False).numpy().argmax(-1) == y).mean()
    assert acc(many(fn, x, y)) <= acc(one(fn, x, y)) + 1 / 64


def test_zero_steps_without_random_start_is_identity(sample):
    x, y = sample[0][:4], sample[1][:4]
    m = resnet(8, 10, input_shape=(28, 28, 1))
    adv = attacks.PGD(0.1, 0.1, steps=0, random_start=0.0)(_fn(m), x, y)
    np.testing.assert_array_equal(adv.numpy(), x)
    np.testing.assert_array_equal(attacks.NoAttack()(_fn(m), x, y).numpy(), x)


@pytest.mark.parametrize("kwargs,match", [
    ({"epsilon": -0.1}, "epsilon=-0.1"),
    ({"epsilon": 8}, "epsilon=8"),
    ({"step_size": float("nan")}, "step_size=nan"),
    ({"steps": 2.5}, "steps=2.5"),
    ({"norm": "l1"}, "norm='l1'"),
    ({"random_start": 1.5}, "random_start=1.5"),
    ({"restarts": 0}, "restarts=0"),
])
def test_bad_attack_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.PGD(**kwargs)


def test_specs_and_serialization():
    a = attacks.from_spec({"name": "pgd", "epsilon": 0.1, "steps": 3})
    assert isinstance(a, attacks.PGD) and a.steps == 3
    b = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(a))
    assert a == b
    p = attacks.paper_pgd(steps=30)
    assert p.targeted and p.epsilon == 16 / 255 and p.step_size == 1 / 255 and p.random_start == 0.8
    assert attacks.paper_pgd(steps=10, train=False).step_size == 1.6 / 255
    with pytest.raises(ValueError, match="'pgdd'"):
        attacks.from_spec({"name": "pgdd"})
    with pytest.raises(ValueError, match="stepz"):
        attacks.from_spec({"name": "pgd", "stepz": 3})


def _linear_fn(w):
    """Logits of a fixed linear model: its input gradient is known exactly."""
    return lambda images: tf.reshape(images, [tf.shape(images)[0], -1]) @ w


def test_n_fgsm_is_noise_plus_one_unprojected_step():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(64, 8, 8, 1)).astype("float32")  # room for 3 epsilon
    y = rng.integers(0, 3, 64)
    w = tf.constant(rng.normal(size=(64, 3)).astype("float32"))
    eps, seed = 8 / 255, [3, 4]
    attack = attacks.n_fgsm(epsilon=eps)
    adv = attack(_linear_fn(w), x, y, seed=seed).numpy()
    # The same call by hand: noise from [-2 eps, 2 eps], one step of eps along
    # the sign of the cross-entropy's gradient, no projection to the eps ball.
    noise = tf.random.stateless_uniform(x.shape, attacks.fold_seed(
        attacks.fold_seed(tf.constant(seed, tf.int64), 100), 1), -eps, eps).numpy() * 2
    start = tf.constant(np.clip(x + noise, 0, 1))
    with tf.GradientTape() as tape:
        tape.watch(start)
        loss = keras.losses.sparse_categorical_crossentropy(y, _linear_fn(w)(start),
                                                            from_logits=True)
    expected = np.clip(start.numpy() + eps * np.sign(tape.gradient(loss, start).numpy()), 0, 1)
    np.testing.assert_allclose(adv, expected, atol=1e-6)
    dist = np.abs(adv - x).max(axis=(1, 2, 3))
    assert dist.max() > 2 * eps and dist.max() <= 3 * eps + 1e-6


def test_fgsm_rs_stays_in_the_ball_and_n_fgsm_config_round_trips():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(16, 8, 8, 1)).astype("float32")
    w = tf.constant(rng.normal(size=(64, 3)).astype("float32"))
    adv = attacks.fgsm_rs(epsilon=0.03)(_linear_fn(w), x, rng.integers(0, 3, 16), seed=[0, 1])
    assert np.abs(adv.numpy() - x).max() <= 0.03 + 1e-6
    a = attacks.from_spec({"name": "n_fgsm", "epsilon": 0.03})
    assert (a.start_scale, a.project, a.step_size) == (2.0, False, 0.03)
    assert attacks.FGSM.from_config(a.get_config()) == a
    with pytest.raises(ValueError, match="project='no'"):
        attacks.FGSM(project="no")


def test_pgd_checkpoints_equal_separate_runs_with_the_same_seed(trained, sample):
    """Reading PGD-k off one trajectory gives, at each k, exactly what a
    separate k-step run with the same seed gives: the same random start and
    target, the same steps."""
    x, y = tf.constant(sample[0][:48]), tf.constant(sample[1][:48].astype("int32"))
    fn, seed = _fn(trained), tf.constant([3, 9], tf.int64)
    one = attacks.make("paper-pgd-2-5-12", 0.1)
    assert one.stage_names() == ("step-2", "step-5", "step-12") and one.steps == 12
    adv, after = one.stages(fn, x, y, seed=seed)
    for k in (2, 5, 12):
        alone = attacks.make(f"paper-pgd-{k}", 0.1)(fn, x, y, seed=seed)
        correct = trained(alone, training=False).numpy().argmax(-1) == y.numpy()
        np.testing.assert_array_equal(after[f"step-{k}"].numpy(), correct)
    np.testing.assert_array_equal(adv.numpy(), attacks.make("paper-pgd-12", 0.1)(
        fn, x, y, seed=seed).numpy())
    # The attack does something along the way: fewer images survive 12 steps than the clean pass.
    clean = trained(x, training=False).numpy().argmax(-1) == y.numpy()
    assert after["step-12"].numpy().sum() < clean.sum()


@pytest.mark.parametrize("name,match", [
    ("paper-pgd-10-20", "1.6/255"),
    ("paper-pgd-50-20", "must increase"),
    ("paper-pgd-20-20", "must increase"),
    ("paper-pgd", "paper-pgd-K"),
    ("paper-pgd-20-x", "paper-pgd-K"),
])
def test_bad_trajectory_names_say_why(name, match):
    with pytest.raises(ValueError, match=match):
        attacks.make(name, 8 / 255)


def test_checkpoints_are_checked_and_kept_out_of_plain_configs():
    with pytest.raises(ValueError, match=r"checkpoints=\(0,"):
        attacks.PGD(steps=5, checkpoints=(0, 2))
    with pytest.raises(ValueError, match=r"checkpoints=\(5,\)"):
        attacks.PGD(steps=5, checkpoints=(5,))
    with pytest.raises(ValueError, match="restarts=2"):
        attacks.PGD(steps=5, restarts=2, checkpoints=(2,))
    # A plain PGD's config (which saved evaluations fingerprint) has no checkpoints key.
    assert "checkpoints" not in attacks.PGD(steps=5).get_config()
    a = attacks.PGD(steps=5, checkpoints=(2, 4))
    assert attacks.PGD.from_config(a.get_config()) == a
    assert attacks.PGD(steps=5).stage_names() == ()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_noise_has_the_size_epsilon_in_its_norm(norm):
    """The baseline every attack must beat: random noise exactly epsilon in
    size (mid-grey images, so that clipping does not shrink it)."""
    x = np.full((6, 8, 8, 3), 0.5, np.float32)
    eps = 0.3 if norm == "l2" else 0.05
    d = (attacks.make(f"noise{'-l2' if norm == 'l2' else ''}", eps)(
        lambda v: v, x, np.zeros(6), seed=[1, 2]).numpy() - x).reshape(6, -1)
    size = np.linalg.norm(d, axis=1) if norm == "l2" else np.abs(d).max(axis=1)
    np.testing.assert_allclose(size, eps, rtol=1e-5)
    if norm == "linf":
        np.testing.assert_allclose(np.abs(d), eps, rtol=1e-5)  # every pixel at a corner
    assert len({tuple(r) for r in np.sign(d)}) == 6  # random: a different draw per image
