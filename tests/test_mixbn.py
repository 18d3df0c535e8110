"""MixBN must equal two separate BatchNormalization layers, one per domain."""

import numpy as np
import keras
import pytest
import tensorflow as tf

from tf_advscale.layers import MixBN, convert, mixbn_layers, route, set_route, split
from tf_advscale.layers import set_batch_stats_at_inference
from tf_advscale.models import resnet

C = 6


def _pair(momentum=0.9, epsilon=1e-3):
    """A MixBN and two BNs (clean, adversarial) with identical random weights."""
    rng = np.random.default_rng(0)
    mix = MixBN(momentum=momentum, epsilon=epsilon)
    mix.build((None, 4, 4, C))
    bns = {}
    for i, domain in enumerate(("clean", "adversarial")):
        bn = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon)
        bn.build((None, 4, 4, C))
        gamma, beta = rng.uniform(0.5, 2, C), rng.normal(size=C)
        mean, var = rng.normal(size=C), rng.uniform(0.5, 2, C)
        bn.set_weights([gamma, beta, mean, var])
        for name, value in zip(("gamma", "beta", "moving_mean", "moving_variance"),
                               (gamma, beta, mean, var)):
            v = getattr(mix, name).numpy()
            v[i] = value
            getattr(mix, name).assign(v)
        bns[domain] = bn
    return mix, bns


def _data(n_adv=5, n_clean=3):
    rng = np.random.default_rng(1)
    adv = rng.normal(2.0, 3.0, (n_adv, 4, 4, C)).astype("float32")
    clean = rng.normal(-1.0, 0.5, (n_clean, 4, 4, C)).astype("float32")
    return adv, clean


def _check_training_equivalence(call):
    mix, bns = _pair()
    adv, clean = _data()
    out = call(mix, adv, clean)
    want = np.concatenate([bns["adversarial"](adv, training=True),
                           bns["clean"](clean, training=True)])
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
    for i, domain in enumerate(("clean", "adversarial")):
        np.testing.assert_allclose(mix.moving_mean.numpy()[i], bns[domain].moving_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mix.moving_variance.numpy()[i],
                                   bns[domain].moving_variance.numpy(), rtol=1e-5, atol=1e-6)
    return mix, bns


def _split_call(mix, adv, clean):
    with split([("adversarial", len(adv)), ("clean", len(clean))]):
        return mix(np.concatenate([adv, clean]), training=True)


def test_training_equals_two_bns_eager():
    _check_training_equivalence(_split_call)


def test_training_equals_two_bns_tf_function():
    def call(mix, adv, clean):
        @tf.function
        def f(x):
            with split([("adversarial", len(adv)), ("clean", len(clean))]):
                return mix(x, training=True)
        return f(np.concatenate([adv, clean]))
    _check_training_equivalence(call)


def test_training_equals_two_bns_xla():
    def call(mix, adv, clean):
        @tf.function(jit_compile=True)
        def f(x):
            with split([("adversarial", len(adv)), ("clean", len(clean))]):
                return mix(x, training=True)
        return f(np.concatenate([adv, clean]))
    _check_training_equivalence(call)


def test_training_equals_two_bns_under_mirrored_strategy():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (set in conftest before TF starts)")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    with strategy.scope():
        mix, _ = _pair()
    _, bns = _pair()
    # Each replica gets its own (adv, clean) pair; the split is per replica,
    # so replica 0's clean rows never mix with replica 1's.
    rng = np.random.default_rng(3)
    per_replica = [(rng.normal(r, 1 + r, (4, 4, 4, C)).astype("float32"),
                    rng.normal(-r, 0.5, (2, 4, 4, C)).astype("float32")) for r in range(2)]

    @tf.function
    def step(x):
        with split([("adversarial", 4), ("clean", 2)]):
            return mix(x, training=True)

    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: np.concatenate(per_replica[ctx.replica_id_in_sync_group]))
    outs = strategy.experimental_local_results(strategy.run(step, args=(inputs,)))

    # Reference: two plain BNs under the same strategy, each replica feeding
    # its adversarial rows to one and its clean rows to the other.
    with strategy.scope():
        ref = {}
        for domain in ("adversarial", "clean"):
            ref[domain] = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
            ref[domain].build((None, 4, 4, C))
            ref[domain].set_weights(bns[domain].get_weights())

    @tf.function
    def ref_step(adv, clean):
        return tf.concat([ref["adversarial"](adv, training=True),
                          ref["clean"](clean, training=True)], 0)

    adv_in = strategy.experimental_distribute_values_from_function(
        lambda ctx: per_replica[ctx.replica_id_in_sync_group][0])
    clean_in = strategy.experimental_distribute_values_from_function(
        lambda ctx: per_replica[ctx.replica_id_in_sync_group][1])
    want = strategy.experimental_local_results(strategy.run(ref_step, args=(adv_in, clean_in)))
    for r in range(2):
        np.testing.assert_allclose(np.asarray(outs[r]), np.asarray(want[r]), rtol=1e-5, atol=1e-5)
    for i, domain in enumerate(("clean", "adversarial")):
        np.testing.assert_allclose(mix.moving_mean.numpy()[i], ref[domain].moving_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mix.moving_variance.numpy()[i],
                                   ref[domain].moving_variance.numpy(), rtol=1e-5, atol=1e-6)


def test_other_domain_statistics_do_not_move():
    mix, _ = _pair()
    before = mix.moving_mean.numpy().copy(), mix.moving_variance.numpy().copy()
    adv, _ = _data()
    with route("adversarial"):
        mix(adv, training=True)
    assert np.array_equal(mix.moving_mean.numpy()[0], before[0][0])
    assert np.array_equal(mix.moving_variance.numpy()[0], before[1][0])
    assert not np.allclose(mix.moving_mean.numpy()[1], before[0][1])


def test_empty_segment_keeps_its_statistics():
    mix, _ = _pair()
    # Statistics away from 0 and 1, where old * m + old * (1 - m) != old in
    # floating point: the empty segment must leave them bit for bit.
    rng = np.random.default_rng(0)
    mix.moving_mean.assign(rng.normal(size=mix.moving_mean.shape).astype("float32"))
    mix.moving_variance.assign(rng.uniform(0.3, 3, size=mix.moving_variance.shape)
                               .astype("float32"))
    before = mix.moving_mean.numpy().copy(), mix.moving_variance.numpy().copy()
    adv, _ = _data()
    with split([("adversarial", len(adv)), ("clean", 0)]):
        out = mix(adv, training=True)
    assert np.isfinite(np.asarray(out)).all()
    clean = mix.domain_index("clean")
    assert np.array_equal(mix.moving_mean.numpy()[clean], before[0][clean])
    assert np.array_equal(mix.moving_variance.numpy()[clean], before[1][clean])
    assert not np.allclose(mix.moving_mean.numpy()[1 - clean], before[0][1 - clean])


def test_inference_routes_match_each_bn_and_switch_without_rebuild():
    mix, bns = _pair()
    adv, clean = _data()
    f = tf.function(lambda x: mix(x, training=False))
    for domain in ("clean", "adversarial"):
        mix.set_route(domain)
        np.testing.assert_allclose(np.asarray(f(adv)), bns[domain](adv, training=False),
                                   rtol=1e-5, atol=1e-5)
    assert mix.route == "adversarial"


def test_batch_stats_at_inference():
    mix, bns = _pair()
    adv, _ = _data()
    mix.set_batch_stats_at_inference(True)
    before = mix.moving_mean.numpy().copy()
    out = mix(adv, training=False)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    ref.build(adv.shape)
    ref.set_weights(bns["adversarial"].get_weights())
    np.testing.assert_allclose(np.asarray(out), ref(adv, training=True), rtol=1e-5, atol=1e-5)
    assert np.array_equal(mix.moving_mean.numpy(), before)  # nothing updated


@pytest.mark.parametrize("stats,affine", [(True, True), (True, False), (False, True),
                                          (False, False)])
def test_ablation_switches_statistics_and_affine(stats, affine):
    """Each segment is normalised by its own batch moments and its domain's
    gamma/beta; the moving statistics each segment updates are its domain's
    row, or the one shared row (updated by the segments in batch order)."""
    momentum, eps = 0.9, 1e-3
    mix = MixBN(momentum=momentum, epsilon=eps, separate_stats=stats, separate_affine=affine)
    mix.build((None, 4, 4, C))
    n_affine, n_stats = (2 if affine else 1), (2 if stats else 1)
    assert mix.gamma.shape == (n_affine, C) and mix.moving_mean.shape == (n_stats, C)
    rng = np.random.default_rng(4)
    gamma, beta = rng.uniform(0.5, 2, (n_affine, C)), rng.normal(size=(n_affine, C))
    mean, var = rng.normal(size=(n_stats, C)), rng.uniform(0.5, 2, (n_stats, C))
    mix.set_weights([gamma, beta, mean, var] + mix.get_weights()[4:])
    adv, clean = _data()
    with split([("adversarial", len(adv)), ("clean", len(clean))]):
        out = mix(np.concatenate([adv, clean]), training=True)

    want = []
    for domain, part in (("adversarial", adv), ("clean", clean)):
        row = mix.domain_index(domain)
        a, s = (row if affine else 0), (row if stats else 0)
        mu, sigma2 = part.mean((0, 1, 2)), part.var((0, 1, 2))
        want.append((part - mu) / np.sqrt(sigma2 + eps) * gamma[a] + beta[a])
        mean[s] = mean[s] * momentum + mu * (1 - momentum)
        var[s] = var[s] * momentum + sigma2 * (1 - momentum)
    np.testing.assert_allclose(np.asarray(out), np.concatenate(want), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mix.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mix.moving_variance.numpy(), var, rtol=1e-5, atol=1e-5)
    for domain in ("clean", "adversarial"):  # inference: the route's (or the shared) rows
        mix.set_route(domain)
        row = mix.domain_index(domain)
        a, s = (row if affine else 0), (row if stats else 0)
        np.testing.assert_allclose(
            np.asarray(mix(adv, training=False)),
            (adv - mean[s]) / np.sqrt(var[s] + eps) * gamma[a] + beta[a], rtol=1e-4, atol=1e-4)


def test_model_save_and_reload_both_routes(tmp_path):
    m = resnet(8, 10, input_shape=(28, 28, 1), norm="mixbn")
    x = np.random.default_rng(2).uniform(size=(6, 28, 28, 1)).astype("float32")
    with split([("adversarial", 3), ("clean", 3)]):
        m(x, training=True)
    m.save(tmp_path / "mix.keras")
    re = keras.saving.load_model(tmp_path / "mix.keras")
    outs = {}
    for domain in ("clean", "adversarial"):
        set_route(m, domain)
        set_route(re, domain)
        outs[domain] = re.predict(x, verbose=0)
        np.testing.assert_array_equal(outs[domain], m.predict(x, verbose=0))
    assert not np.allclose(outs["clean"], outs["adversarial"])


def test_convert_keeps_outputs_and_initialises_both_domains():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)
    inner = keras.Model(inputs, keras.layers.ReLU()(h), name="inner")
    outer_in = keras.Input((8, 8, 3))
    outer = keras.Model(outer_in, keras.layers.Dense(3)(keras.layers.Flatten()(inner(outer_in))))
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    outer(x, training=True)  # non-trivial moving statistics
    converted = convert(outer)
    layers = mixbn_layers(converted)
    assert len(layers) == 1
    for domain in ("clean", "adversarial"):
        set_route(converted, domain)
        np.testing.assert_allclose(converted(x, training=False), outer(x, training=False),
                                   rtol=1e-5, atol=1e-5)


def test_convert_keras_applications_model():
    app = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    n_bn = sum(isinstance(l, keras.layers.BatchNormalization) for l in app.layers)
    converted = convert(app)
    assert len(mixbn_layers(converted)) == n_bn
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(converted(x, training=False), app(x, training=False),
                               rtol=1e-4, atol=1e-5)


def test_set_route_errors_name_the_value():
    plain = resnet(8, 10, input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="no MixBN"):
        set_route(plain, "clean")
    m = resnet(8, 10, input_shape=(28, 28, 1), norm="mixbn")
    with pytest.raises(ValueError, match="'clear'"):
        set_route(m, "clear")
    with pytest.raises(ValueError, match="inference_route='x'"):
        MixBN(inference_route="x")
    set_batch_stats_at_inference(m, True)
    assert all(l.use_batch_stats.numpy() == 1 for l in mixbn_layers(m))
