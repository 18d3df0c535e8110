"""The PyTorch twin of a Keras classifier, for checking against PyTorch tools.

    twin = torch_twin(model)            # torch.nn.Module, NCHW images in [0, 1]
    logits = twin(torch.from_numpy(x.transpose(0, 3, 1, 2)))

``torch_twin`` reads the model's Keras graph layer by layer and builds the
same function in PyTorch with the same weights: Conv2D (HWIO -> OIHW),
Dense, BatchNormalization (inference statistics), MixBN (the route in
force, or ``route``), GroupNormalization, ReLU / SiLU, Add, ZeroPadding2D,
pooling, ``Standardize`` and ``Recompute``. It therefore covers every
architecture of the registry, and any later one built from these layers; a
layer it does not know is refused, by name. Keras' ``"same"`` padding at
stride 2 pads the bottom/right only; the twin pads as Keras does, so the two
agree exactly whichever padding a model uses.

The twin's ``state_dict`` keys are the Keras layer names (``stem_conv.weight``,
``stage1_block1_norm1.running_mean``, ...). It is an inference-mode copy for
evaluation (``twin.eval()``; BN uses the moving statistics). PyTorch is
imported only here: ``pip install torch==2.13.0``.
"""

import keras
import numpy as np

from tf_advscale.layers import MixBN
from tf_advscale.models.resnet import Recompute, Standardize


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("the PyTorch twin needs torch: pip install torch==2.13.0") from e
    return torch


def _same_pad(size, kernel, stride):
    """TensorFlow's "same" padding of one spatial axis: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _graph(functional):
    """The functional model's layers in execution order, as (layer, input
    tensor ids, output tensor ids). Reads ``_nodes_by_depth``, the order
    Keras itself runs a functional model in (``Functional._run_through_graph``);
    no public API gives a layer's place in the graph.
    ``tests/test_private_api.py`` fails first if Keras changes it."""
    steps = []
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            steps.append((layer, [id(t) for t in node.input_tensors],
                          [id(t) for t in node.outputs]))
    return steps


def _np(v):
    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float32)


def _same_pads(x, kernel, strides):
    """The ``F.pad`` widths (left, right, top, bottom) of Keras' "same" padding
    of the NCHW tensor ``x``."""
    (t, b), (l, r) = (_same_pad(x.shape[2], kernel[0], strides[0]),
                      _same_pad(x.shape[3], kernel[1], strides[1]))
    return l, r, t, b


def _conv2d(op, layer):
    """The convolution of ``layer``, its kernel (HWIO -> OIHW) and bias held by ``op``."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    if layer.dilation_rate != (1, 1) or layer.groups != 1:
        raise ValueError(f"{layer.name}: dilated or grouped convs are not "
                         "supported by the twin")
    op.weight = nn.Parameter(torch.from_numpy(
        _np(layer.kernel).transpose(3, 2, 0, 1).copy()))
    op.bias = nn.Parameter(torch.from_numpy(_np(layer.bias))) \
        if layer.use_bias else None
    k, s, same = layer.kernel_size, layer.strides, layer.padding == "same"

    def conv(x):
        if same:
            x = F.pad(x, _same_pads(x, k, s))
        return F.conv2d(x, op.weight, op.bias, s)
    return conv


def _dense(op, layer):
    """The affine map of ``layer``, its kernel (transposed) and bias held by ``op``."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    op.weight = nn.Parameter(torch.from_numpy(_np(layer.kernel).T.copy()))
    op.bias = nn.Parameter(torch.from_numpy(_np(layer.bias))) \
        if layer.use_bias else None
    return lambda x: F.linear(x, op.weight, op.bias)


def _mixbn(op, layer, route):
    """The inference batch norm of ``layer``'s ``route`` (default: its route in force)."""
    index = layer.domain_index(route) if route else layer.domains.index(layer.route)
    row = lambda v, sep: _np(v)[index if sep else 0]  # noqa: E731
    return _bn(op, layer, row(layer.gamma, layer.separate_affine) if layer.scale else None,
               row(layer.beta, layer.separate_affine) if layer.center else None,
               row(layer.moving_mean, layer.separate_stats),
               row(layer.moving_variance, layer.separate_stats))


def _batch_norm(op, layer):
    """The inference batch norm of the channel-last ``layer``."""
    if layer.axis not in (-1, 3) and layer.axis != [3]:
        raise ValueError(f"{layer.name}: only channel-last BN is supported")
    return _bn(op, layer, _np(layer.gamma) if layer.scale else None,
               _np(layer.beta) if layer.center else None,
               _np(layer.moving_mean), _np(layer.moving_variance))


def _bn(op, layer, gamma, beta, mean, var):
    """Batch norm with these moving statistics and affine parameters, held by ``op``."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    op.weight = nn.Parameter(torch.from_numpy(gamma.copy())) if gamma is not None \
        else None
    op.bias = nn.Parameter(torch.from_numpy(beta.copy())) if beta is not None \
        else None
    op.register_buffer("running_mean", torch.from_numpy(mean.copy()))
    op.register_buffer("running_var", torch.from_numpy(var.copy()))
    eps = layer.epsilon
    return lambda x: F.batch_norm(x, op.running_mean, op.running_var, op.weight,
                                  op.bias, False, 0.0, eps)


def _group_norm(op, layer):
    """The group norm of ``layer``, its affine parameters held by ``op``."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    op.weight = nn.Parameter(torch.from_numpy(_np(layer.gamma))) \
        if layer.scale else None
    op.bias = nn.Parameter(torch.from_numpy(_np(layer.beta))) \
        if layer.center else None
    groups, eps = layer.groups, layer.epsilon
    return lambda x: F.group_norm(x, groups, op.weight, op.bias, eps)


def _activation(layer):
    """The PyTorch function of the ``Activation`` layer (relu, silu/swish, linear)."""
    F = _torch().nn.functional
    name = keras.activations.serialize(layer.activation)
    name = name if isinstance(name, str) else name.get("config", name)
    acts = {"relu": F.relu, "silu": F.silu, "swish": F.silu, "linear": lambda x: x}
    if name not in acts:
        raise ValueError(f"{layer.name}: activation {name!r} is not supported")
    return acts[name]


def _max_pool(layer):
    """The max pooling of ``layer``, padded (with -inf) as Keras pads."""
    F = _torch().nn.functional
    k, s, same = layer.pool_size, layer.strides, layer.padding == "same"

    def pool(x):
        if same:
            x = F.pad(x, _same_pads(x, k, s), value=float("-inf"))
        return F.max_pool2d(x, k, s)
    return pool


def _standardize(op, layer):
    """``(x - mean) / std`` of ``layer``, the statistics held by ``op`` as buffers."""
    torch = _torch()
    mean = torch.tensor(np.reshape(np.asarray(layer.mean, np.float32), (1, -1, 1, 1)))
    std = torch.tensor(np.reshape(np.asarray(layer.std, np.float32), (1, -1, 1, 1)))
    op.register_buffer("mean", mean)
    op.register_buffer("std", std)
    return lambda x: (x - op.mean) / op.std


def _convert(op, layer, route, graph):
    """The PyTorch function computing ``layer``; its weights go onto the module
    ``op``, and a nested model becomes a ``graph`` (``op.block``)."""
    F = _torch().nn.functional
    if isinstance(layer, keras.layers.Conv2D) and not isinstance(
            layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)):
        return _conv2d(op, layer)
    if isinstance(layer, keras.layers.Dense):
        return _dense(op, layer)
    if isinstance(layer, MixBN):
        return _mixbn(op, layer, route)
    if isinstance(layer, keras.layers.BatchNormalization):
        return _batch_norm(op, layer)
    if isinstance(layer, keras.layers.GroupNormalization):
        return _group_norm(op, layer)
    if isinstance(layer, keras.layers.ReLU):
        return F.relu
    if isinstance(layer, keras.layers.Activation):
        return _activation(layer)
    if isinstance(layer, keras.layers.Add):
        return lambda *xs: sum(xs[1:], xs[0])
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (t, b), (l, r) = layer.padding
        return lambda x: F.pad(x, (l, r, t, b))
    if isinstance(layer, keras.layers.MaxPooling2D):
        return _max_pool(layer)
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return lambda x: x.mean(dim=(2, 3))
    if isinstance(layer, keras.layers.Identity):
        return lambda x: x
    if isinstance(layer, Standardize):
        return _standardize(op, layer)
    if isinstance(layer, Recompute):
        op.block = graph(layer.block)
        return op.block
    if isinstance(layer, keras.Model):
        op.block = graph(layer)
        return op.block
    raise ValueError(f"The PyTorch twin does not support layer {layer.name!r} "
                     f"({type(layer).__name__})")


def torch_twin(model, route=None):
    """A ``torch.nn.Module`` computing ``model``'s logits (NCHW input in [0, 1]).

    ``model``: a Keras functional classifier (a registry model, a zoo entry's
    model) or an ``AdversarialModel`` wrapping one. ``route``: the MixBN route
    to copy ("clean" / "adversarial"; default: each layer's inference route).
    """
    torch = _torch()
    nn = torch.nn
    if hasattr(model, "eval_model_fn") and hasattr(model, "model"):
        model = model.model

    # The module classes are made here: torch is imported only when a twin is.
    class Op(nn.Module):
        """One Keras layer, with its weights as PyTorch parameters/buffers."""

        def __init__(self, layer):
            super().__init__()
            self.kind = type(layer).__name__
            self.layer_name = layer.name
            self.fn = _convert(self, layer, route, Graph)

        def forward(self, *xs):
            return self.fn(*xs)

    class Graph(nn.Module):
        """A Keras functional model, run step by step in PyTorch."""

        def __init__(self, functional):
            super().__init__()
            self.ops = nn.ModuleDict()
            self.steps = []
            for layer, inputs, outputs in _graph(functional):
                if layer.name in self.ops:
                    raise ValueError(f"layer {layer.name!r} is used twice; the twin needs "
                                     "each layer once")
                self.ops[layer.name] = Op(layer)
                self.steps.append((layer.name, inputs, outputs))
            self.input_ids = [id(t) for t in functional.inputs]
            self.output_ids = [id(t) for t in functional.outputs]

        def forward(self, *xs):
            values = dict(zip(self.input_ids, xs))
            for name, inputs, outputs in self.steps:
                out = self.ops[name](*[values[i] for i in inputs])
                values[outputs[0]] = out
            result = [values[i] for i in self.output_ids]
            return result[0] if len(result) == 1 else result

    twin = Graph(model)
    twin.eval()
    return twin


def keras_logits_and_twin_logits(model, x, twin=None, batch_size=250):
    """Both models' logits on NHWC images ``x`` in [0, 1]: (keras, torch) arrays."""
    torch = _torch()
    twin = twin if twin is not None else torch_twin(model)
    ks, ts = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = np.asarray(x[i:i + batch_size], np.float32)
            ks.append(np.asarray(model(xb, training=False)))
            ts.append(twin(torch.from_numpy(xb.transpose(0, 3, 1, 2).copy())).numpy())
    return np.concatenate(ks), np.concatenate(ts)
