"""One harness for every layer the package defines (keras-hub style).

Each entry of ``CASES`` is one line: a name, a factory for the layer, the
input shape, a *reference* (an independent computation of what the layer is
documented to do, from a snapshot of its weights) and what it does with a
masked input. Every case then runs the same checks: config round trip,
saving inside a model, ``mixed_bfloat16``, ``training=True`` against
``training=False``, and masking. ``test_every_package_layer_is_in_the_harness``
fails when a layer class is added to ``tf_advscale.layers`` or
``tf_advscale.models`` without a line here.
"""

import copy
import dataclasses
import importlib
import inspect
import json
import pkgutil
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_advscale.layers
import tf_advscale.models
from tf_advscale.layers import MixBN, walk
from tf_advscale.models import Standardize
from tf_advscale.models.resnet import Recompute

SHAPE = (4, 4, 3)


# -- references: what each layer is documented to compute ----------------------
# ``state`` maps each weight's path to a tensor (the weights before the call);
# a reference returns (output, {path: new value} for the weights the call updates).

def _by_name(state):
    return {path.split("/")[-1]: (path, value) for path, value in state.items()}


def _mixbn_reference(layer, state, x, training):
    """BN of the whole batch through the inference route's row; batch statistics
    in training (then that row's moving statistics move by the momentum) and,
    with ``batch_stats_at_inference``, at inference without any update; a frozen
    (trainable=False) layer runs in inference mode whatever ``training`` says."""
    w = _by_name(state)
    route = int(w["route_index"][1])
    stats_row = route if layer.separate_stats else 0
    affine_row = route if layer.separate_affine else 0
    batch_mean = tf.reduce_mean(x, axis=[0, 1, 2])
    batch_var = tf.reduce_mean(tf.square(x - batch_mean), axis=[0, 1, 2])
    train = bool(training) and layer.trainable
    if train or int(w["use_batch_stats"][1]):
        mean, var = batch_mean, batch_var
    else:
        mean, var = w["moving_mean"][1][stats_row], w["moving_variance"][1][stats_row]
    out = ((x - mean) / tf.sqrt(var + layer.epsilon) * w["gamma"][1][affine_row]
           + w["beta"][1][affine_row])
    updates = {}
    if train:
        for name, batch in (("moving_mean", batch_mean), ("moving_variance", batch_var)):
            path, old = w[name]
            new = np.array(old)
            new[stats_row] = new[stats_row] * layer.momentum + np.asarray(batch) * (
                1 - layer.momentum)
            updates[path] = new
    return out, updates


def _standardize_reference(layer, state, x, training):
    """``(x - mean) / std`` per channel, in either mode, no state."""
    return (x - np.asarray(layer.mean, "float32")) / np.asarray(layer.std, "float32"), {}


def _recompute_reference(layer, state, x, training):
    """The block itself, its statistics updated once (by the forward pass)."""
    block = layer.block
    out, new = block.stateless_call([state[v.path] for v in block.trainable_variables],
                                    [state[v.path] for v in block.non_trainable_variables],
                                    x, training=training)
    return out, {v.path: np.asarray(n) for v, n in zip(block.non_trainable_variables, new)
                 if not np.array_equal(np.asarray(n), np.asarray(state[v.path]))}


# -- the cases ------------------------------------------------------------------

def _frozen(layer):
    layer.trainable = False
    return layer


def _block():
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.8, name="bn")(h)
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(h), name="block")


@dataclasses.dataclass
class Case:
    name: str
    make: object  # () -> a new, unbuilt layer
    reference: object  # (layer, state, x, training) -> (output, updates)
    masking: str  # "propagate" (keeps the mask), "refuse" (ValueError), "drop" (warns)
    refuse_match: str = ""


CASES = [
    Case("mixbn", lambda: MixBN(momentum=0.8, epsilon=1e-3), _mixbn_reference, "refuse",
         "MixBN does not support masks"),
    Case("mixbn_clean_route_shared_stats",
         lambda: MixBN(inference_route="clean", separate_stats=False), _mixbn_reference,
         "refuse", "MixBN does not support masks"),
    Case("mixbn_shared_affine", lambda: MixBN(separate_affine=False), _mixbn_reference,
         "refuse", "MixBN does not support masks"),
    Case("mixbn_batch_stats_at_inference", lambda: MixBN(batch_stats_at_inference=True),
         _mixbn_reference, "refuse", "MixBN does not support masks"),
    Case("mixbn_frozen", lambda: _frozen(MixBN()), _mixbn_reference, "refuse",
         "MixBN does not support masks"),
    Case("standardize", lambda: Standardize(), _standardize_reference, "drop"),
    Case("standardize_per_channel", lambda: Standardize([0.1, 0.2, 0.3], [0.5, 1.0, 2.0]),
         _standardize_reference, "drop"),
    Case("recompute", lambda: Recompute(_block(), name="recompute"), _recompute_reference,
         "drop"),
]
PARAMS = [pytest.param(c, id=c.name) for c in CASES]


# -- helpers ----------------------------------------------------------------------

def _inputs(seed=0):
    return np.random.default_rng(seed).normal(0.7, 1.3, (4,) + SHAPE).astype("float32")


def _is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def _randomize(layer, seed=1):
    """Every float weight away from its initial value (positive: fits variances)."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        if _is_float(v.dtype):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))


def _built(case):
    layer = case.make()
    layer(_inputs(), training=False)
    _randomize(layer)
    return layer


def _state(layer):
    return {v.path: tf.constant(np.array(v)) for v in layer.weights}


# -- the checks -------------------------------------------------------------------

def test_every_package_layer_is_in_the_harness():
    found = set()
    for package in (tf_advscale.layers, tf_advscale.models):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if (cls.__module__ == module.__name__ and issubclass(cls, keras.layers.Layer)
                        and not issubclass(cls, keras.Model)):
                    found.add(cls.__name__)
    assert found == {type(c.make()).__name__ for c in CASES}


@pytest.mark.parametrize("case", PARAMS)
def test_config_round_trip(case):
    layer = _built(case)
    config = layer.get_config()
    kept = copy.deepcopy(config)
    again = type(layer).from_config(config)
    assert config == kept  # from_config leaves its argument alone
    assert again.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    json.dumps(serialized)  # what a .keras file stores
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(layer) and restored.get_config() == config
    x = _inputs()
    again(x, training=False)
    again.set_weights(layer.get_weights())
    np.testing.assert_array_equal(again(x, training=False), layer(x, training=False))


@pytest.mark.parametrize("case", PARAMS)
def test_saves_and_loads_inside_a_model(case, tmp_path):
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, case.make()(inputs))
    _randomize(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    x = _inputs()
    for training in (False, True):  # the training call moves the statistics of both alike
        np.testing.assert_array_equal(loaded(x, training=training), model(x, training=training))
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.fixture
def mixed_bfloat16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("case", PARAMS)
def test_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_variables(case, mixed_bfloat16):
    layer = _built(case)
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
    for sub in walk.sublayers(layer):
        if sub.weights:
            assert sub.compute_dtype == "bfloat16", sub.name
    assert all(v.dtype == "float32" for v in layer.weights if _is_float(v.dtype))
    x = _inputs()
    for training in (False, True):
        for given in (x, tf.cast(x, "bfloat16")):  # a float32 input, or a mixed model's
            # The float32 reference from the weights before this call (a training
            # call moves the statistics), to bfloat16's precision (8-bit mantissa).
            want = case.reference(layer, _state(layer), x, training)[0]
            want = np.asarray(tf.cast(want, "float32"))
            out = layer(given, training=training)
            assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
            np.testing.assert_allclose(np.asarray(tf.cast(out, "float32")), want,
                                       atol=0.02 * np.abs(want).max() + 0.02)
    assert all(v.dtype == "float32" for v in layer.weights if _is_float(v.dtype))


def _call_and_reference(case, layer, training):
    """The layer's output, gradients and new weights beside the reference's."""
    x = tf.constant(_inputs())
    probe = tf.constant(np.random.default_rng(5).normal(size=(4,) + SHAPE).astype("float32"))
    state = _state(layer)
    trainable = [state[v.path] for v in layer.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch([x] + trainable)
        want, updates = case.reference(layer, state, x, training)
        want_loss = tf.reduce_sum(tf.cast(want, "float32") * probe)
    want_grads = tape.gradient(want_loss, [x] + trainable)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(out, "float32") * probe)
    grads = tape.gradient(loss, [x] + layer.trainable_variables)
    return (out, grads, {v.path: np.array(v) for v in layer.weights}), (want, want_grads,
                                                                       updates, state)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("case", PARAMS)
def test_training_flag_behaves_as_documented(case, training):
    layer = _built(case)
    (out, grads, after), (want, want_grads, updates, before) = _call_and_reference(
        case, layer, training)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, want_grads):  # (MixBN's are IndexedSlices: rows)
        np.testing.assert_allclose(np.asarray(tf.convert_to_tensor(got)),
                                   np.asarray(tf.convert_to_tensor(expected)),
                                   rtol=1e-4, atol=1e-4)
    if not training:
        assert not updates  # inference never updates state
    for path, value in after.items():
        if path in updates:
            np.testing.assert_allclose(value, updates[path], rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(value, np.asarray(before[path]))


@pytest.mark.parametrize("case", PARAMS)
def test_masking(case):
    x = _inputs()
    x[0, 0, 0] = 0.0
    masked = keras.layers.Masking(0.0)(x)
    layer = _built(case)
    assert layer.supports_masking == (case.masking == "propagate")
    if case.masking == "refuse":
        with pytest.raises(ValueError, match=case.refuse_match):
            layer(masked)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = layer(masked)
    mask = getattr(out, "_keras_mask", None)
    if case.masking == "propagate":
        np.testing.assert_array_equal(np.asarray(mask), np.asarray(masked._keras_mask))
    else:
        assert mask is None
        assert any("does not support masking" in str(w.message) for w in caught)
