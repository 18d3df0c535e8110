"""The private Keras / TensorFlow API tf_advscale cannot do without.

Each test pins one private name with the behaviour the package relies on, so
that a Keras or TensorFlow upgrade that changes it fails here, by name, before
it fails (or silently misbehaves) deep inside training. Where each is used,
and why no public API does: tf_advscale/layers/walk.py (``_flatten_layers``),
training.py (``_maybe_symbolic_build``, ``_distribute_strategy``,
``_in_multi_worker_mode``), bridge.py (``Functional._nodes_by_depth``).
"""

import inspect
import re
import types

import keras
import numpy as np
import tensorflow as tf

from tf_advscale import bridge, training
from tf_advscale.layers import walk

def _params(fn):
    return list(inspect.signature(fn).parameters)


class _Holder(keras.layers.Layer):
    """A plain layer holding a model, as models.resnet.Recompute does."""

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        return self.block(x)


def test_flatten_layers_walks_nested_models_and_plain_layers_depth_first():
    assert _params(keras.layers.Layer._flatten_layers) == ["self", "include_self", "recursive"], (
        "Keras changed Layer._flatten_layers; update tf_advscale/layers/walk.py")
    inner = keras.Sequential(
        [keras.layers.Dense(3, name="d"), keras.layers.BatchNormalization(name="bn")], name="inner")
    shared = keras.layers.Dense(3, name="shared")
    x = keras.Input((3,), name="x")
    h = shared(_Holder(inner, name="holder")(x))
    model = keras.Model(x, shared(h), name="outer")
    # The Sequential's input layer is named by Keras' per-process counter
    # (input_layer, input_layer_1, ...): compare it without the counter.
    names = [re.sub(r"^input_layer_\d+$", "input_layer", l.name) for l in walk.sublayers(model)]
    # Without the model itself; a nested layer's children right after it (in
    # reverse, as Keras pushes them to the front of its queue), before its
    # siblings; the shared layer once. convert() pairs a model's layers with
    # its clone's by this order.
    assert names == ["x", "holder", "inner", "bn", "d", "input_layer", "shared"], names
    assert [re.sub(r"^input_layer_\d+$", "input_layer", l.name)
            for l in walk.sublayers(model.layers[1])] == ["inner", "bn", "d", "input_layer"]


class HookSpy(keras.Model):
    def __init__(self):
        super().__init__(name="hook_spy")
        self.dense = keras.layers.Dense(1)
        self.hook_calls = []

    def call(self, x):
        return self.dense(x)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        self.hook_calls.append((iterator is not None, data_batch is not None))
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def test_fit_and_evaluate_call_maybe_symbolic_build_with_an_iterator():
    # AdversarialModel overrides this hook to skip Keras's strategy.reduce of
    # the first batch; the override only works while Keras calls it so.
    params = _params(keras.Model._maybe_symbolic_build)
    assert params == ["self", "iterator", "data_batch"], (
        f"Keras changed Model._maybe_symbolic_build to {params}; "
        "update AdversarialModel._maybe_symbolic_build in tf_advscale/training.py")
    assert training.AdversarialModel._maybe_symbolic_build is not keras.Model._maybe_symbolic_build
    model = HookSpy()
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert model.hook_calls == [(True, False)], "fit no longer calls _maybe_symbolic_build"
    model.evaluate(x, y, batch_size=2, verbose=0)
    assert model.hook_calls[1:] == [(True, False)], "evaluate no longer calls it"


def test_distribute_strategy_attribute_is_none_outside_a_strategy_scope():
    # The override tells "Keras would build under a strategy" by this attribute
    # (the public distribute_strategy property never returns None).
    assert keras.Sequential()._distribute_strategy is None
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        assert keras.Sequential()._distribute_strategy is strategy


def test_in_multi_worker_mode_is_more_than_one_worker_and_what_keras_tests():
    from keras.src.backend.tensorflow import trainer
    from tensorflow.python.distribute import collective_all_reduce_strategy as cars
    extended = cars.CollectiveAllReduceExtended
    # MultiWorkerMirroredStrategy's extended is this class, and the method
    # counts workers.
    assert "CollectiveAllReduceExtended" in inspect.getsource(
        tf.distribute.MultiWorkerMirroredStrategy.__init__)
    method = extended._in_multi_worker_mode
    assert method(types.SimpleNamespace(_num_workers=1)) is False
    assert method(types.SimpleNamespace(_num_workers=2)) is True
    # training._multi_worker must decide as Keras does before it reduces logs.
    keras_test = inspect.getsource(trainer._collective_all_reduce_multi_worker)
    assert "_in_multi_worker_mode()" in keras_test, (
        "Keras no longer decides multi-worker log reduction by _in_multi_worker_mode(); "
        "update tf_advscale.training._multi_worker to match")


def test_nodes_by_depth_gives_the_functional_graph_in_execution_order():
    x = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(x)
    b = keras.layers.Dense(4, name="b")(x)
    out = keras.layers.Add(name="add")([a, b])
    model = keras.Model(x, keras.layers.Dense(2, name="head")(out))
    steps = bridge._graph(model)
    order = [layer.name for layer, _, _ in steps]
    assert sorted(order[:2]) == ["a", "b"] and order[2:] == ["add", "head"], order
    produced = {id(t) for t in model.inputs}
    for layer, inputs, outputs in steps:  # each input exists before its layer runs
        assert set(inputs) <= produced, layer.name
        produced |= set(outputs)
    assert steps[-1][2] == [id(model.outputs[0])]
