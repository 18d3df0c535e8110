"""ResNets of any depth from one table (He et al. 2016; the paper's deep ones).

Four families share the code:

* ``"cifar"``: 3x3 stem, three stages of basic blocks (16, 32, 64 filters),
  depth = 6n + 2. Any such depth builds; the table lists the usual ones.
* ``"imagenet"``: 7x7/2 stem + max-pool, four stages (64, 128, 256, 512
  filters), basic blocks for 18/34 and bottleneck blocks (x4 expansion,
  stride on the 3x3 conv) from 50 up.
* ``"preact"``: PreActResNet-18/34 as the robust CIFAR-10 literature uses it
  (Wong et al. 2020): 3x3 stem of 64, four stages (64 ... 512) of
  pre-activation basic blocks, no max-pool.
* ``"cifar4"``: ResNet-18/34 for 32x32 images as most CIFAR-10 code builds it
  (post-activation basic blocks, 3x3 stem of 64, no max-pool, four stages
  of 64 ... 512 filters): ``cifar4_resnet18``, the "ResNet-18" of RobustBench's
  CIFAR-10 entries.
* ``"wide"``: WideResNet-d-k (Zagoruyko & Komodakis 2016), depth = 6n + 4:
  3x3 stem of 16, three stages of n pre-activation blocks with 16k, 32k
  and 64k filters (``width`` = k). WRN-28-10, WRN-34-10 and WRN-70-16 (with
  ``activation="silu"``, Gowal et al. 2020) are the common robust ones.

The ``preact`` and ``wide`` families are always pre-activation; they and
``cifar4`` pad a stride-2 3x3 conv by one pixel on every side, as PyTorch's ``padding=1``
does, so that a PyTorch checkpoint's weights give the same function
(Keras' ``"same"`` pads only the bottom/right at stride 2).

ResNet-338/518/638 (the paper, Sec. 5) have 112, 172 and 212 bottleneck
blocks; their per-stage layout is not published. We grow the third stage,
as ResNet-152 -> 200 grows the second and third: ResNet-200 is
[3, 24, 36, 3], so 338 = [3, 24, 82, 3], 518 = [3, 24, 142, 3] and
638 = [3, 24, 182, 3].

Models take images in [0, 1] and standardise them inside (default: to
[-1, 1], as in the paper), so attacks and epsilons live in pixel space.
They return logits.
"""

import copy

import keras

from tf_advscale.layers import make_norm
from tf_advscale.models.registry import register_model

# family -> depth -> (block type, blocks per stage). Depth is data.
DEPTHS = {
    "cifar": {
        8: ("basic", (1, 1, 1)),
        14: ("basic", (2, 2, 2)),
        20: ("basic", (3, 3, 3)),
        32: ("basic", (5, 5, 5)),
        44: ("basic", (7, 7, 7)),
        56: ("basic", (9, 9, 9)),
        110: ("basic", (18, 18, 18)),
    },
    "imagenet": {
        18: ("basic", (2, 2, 2, 2)),
        34: ("basic", (3, 4, 6, 3)),
        50: ("bottleneck", (3, 4, 6, 3)),
        101: ("bottleneck", (3, 4, 23, 3)),
        152: ("bottleneck", (3, 8, 36, 3)),
        200: ("bottleneck", (3, 24, 36, 3)),
        338: ("bottleneck", (3, 24, 82, 3)),
        518: ("bottleneck", (3, 24, 142, 3)),
        638: ("bottleneck", (3, 24, 182, 3)),
    },
    "preact": {
        18: ("basic", (2, 2, 2, 2)),
        34: ("basic", (3, 4, 6, 3)),
    },
    "cifar4": {
        18: ("basic", (2, 2, 2, 2)),
        34: ("basic", (3, 4, 6, 3)),
    },
    "wide": {
        16: ("basic", (2, 2, 2)),
        28: ("basic", (4, 4, 4)),
        34: ("basic", (5, 5, 5)),
        70: ("basic", (11, 11, 11)),
    },
}

STAGE_FILTERS = {"cifar": (16, 32, 64), "imagenet": (64, 128, 256, 512),
                 "preact": (64, 128, 256, 512), "cifar4": (64, 128, 256, 512),
                 "wide": (16, 32, 64)}
# family -> (stem kernel, stem stride, max-pool after the stem).
STEMS = {"cifar": (3, 1, False), "imagenet": (7, 2, True), "preact": (3, 1, False),
         "cifar4": (3, 1, False),
         "wide": (3, 1, False)}
# Families built as PyTorch code builds them: symmetric padding at stride 2;
# the first two are pre-activation by definition.
PREACT_ONLY = ("preact", "wide")
TORCH_STYLE = PREACT_ONLY + ("cifar4",)
ACTIVATIONS = ("relu", "silu")
PADDINGS = ("same", "symmetric")
# Any depth = 6n + offset builds for these families.
FORMULA = {"cifar": 2, "wide": 4}
EXPANSION = {"basic": 1, "bottleneck": 4}


def blocks_for(family, depth):
    """(block type, blocks per stage) for ``family`` and ``depth``."""
    if family not in DEPTHS:
        raise ValueError(f"Unknown family. Expected one of {sorted(DEPTHS)}. "
                         f"Received: family={family!r}")
    if depth in DEPTHS[family]:
        return DEPTHS[family][depth]
    offset = FORMULA.get(family)
    if (offset is not None and isinstance(depth, int) and not isinstance(depth, bool)
            and depth >= 6 + offset and (depth - offset) % 6 == 0):
        n = (depth - offset) // 6
        return "basic", (n, n, n)
    hint = (f"6n+{offset} with n >= 1" if offset is not None
            else f"one of {sorted(DEPTHS[family])}")
    raise ValueError(f"Unsupported depth for the {family} family: expected {hint}. "
                     f"Received: depth={depth!r}")


@keras.saving.register_keras_serializable(package="tf_advscale")
class Standardize(keras.layers.Layer):
    """``(x - mean) / std`` with constant per-channel mean and std."""

    def __init__(self, mean=0.5, std=0.5, **kwargs):
        super().__init__(**kwargs)
        self.mean = mean
        self.std = std

    def call(self, x):
        mean = keras.ops.cast(keras.ops.convert_to_tensor(self.mean), x.dtype)
        std = keras.ops.cast(keras.ops.convert_to_tensor(self.std), x.dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="tf_advscale")
class Recompute(keras.layers.Layer):
    """Runs ``block`` (a Keras model) and, in training, keeps only its input
    for the backward pass: the block's activations are recomputed there
    (gradient checkpointing, Chen et al. 2016). Memory for activations goes
    from one copy per layer to one per block, for one more forward pass.

    Built on ``tf.recompute_grad``. The recomputation is a
    ``stateless_call``: BN moving statistics are updated once, by the
    forward pass, not again by the recomputation; MixBN layers see the
    routing of the forward pass. Inference-mode calls are recomputed as
    well (an attack's gradients with respect to its input go through them).
    """

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def build(self, input_shape):
        self.built = True

    def call(self, x, training=None):
        import tensorflow as tf

        from tf_advscale.layers import mixbn
        block = self.block
        routing = mixbn.current_routing()  # the backward pass runs outside the context
        if not training:
            # Inference mode recomputes too: an attack's input gradients (PGD
            # with inference BN) go through the network, and keeping every
            # activation for them set the adversarial step's peak. Nothing
            # is updated in this mode, so the recomputation is a plain call.
            def run_inference(x_in):
                with mixbn.restore_routing(routing):
                    return block(x_in, training=False)

            return tf.recompute_grad(run_inference)(x)
        calls = []

        def run(x_in):
            if not calls:  # the forward pass: updates the BN statistics, once
                calls.append(True)
                return block(x_in, training=True)
            # The recomputation, in the backward pass: the same function of
            # the same weights (read from the variables, so that their
            # gradients flow), with the statistics' updates discarded.
            with mixbn.restore_routing(routing):
                values = [v.value for v in block.trainable_variables]
                others = [v.value for v in block.non_trainable_variables]
                return block.stateless_call(values, others, x_in, training=True)[0]

        # tf.recompute_grad keeps only x for the backward pass and runs the
        # recomputation once the block output's gradient exists.
        return tf.recompute_grad(run)(x)

    def compute_output_shape(self, input_shape):
        return self.block.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "block": keras.saving.serialize_keras_object(self.block)}

    @classmethod
    def from_config(cls, config):
        # A deep copy: deserializing a functional block empties its nested
        # config in place, which broke a second from_config of the same dict.
        config = copy.deepcopy(config)
        config["block"] = keras.saving.deserialize_keras_object(config["block"])
        return cls(**config)


def _conv(filters, kernel, stride, name, use_bias, padding="same"):
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=use_bias,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal"),
        name=name)


class _Builder:
    """Builds the graph of one ResNet; keeps the per-model switches together."""

    def __init__(self, norm, norm_kwargs, preact, zero_init_residual, recompute=False,
                 activation="relu", padding="same"):
        self.recompute = recompute
        self.activation = activation
        self.padding = padding
        self.norm = norm
        self.norm_kwargs = dict(norm_kwargs or {})
        self.preact = preact
        self.zero_init_residual = zero_init_residual
        self.bias = norm == "none"

    def norm_layer(self, x, name, zero=False):
        kwargs = dict(self.norm_kwargs)
        if zero and self.norm in ("bn", "mixbn", "gn", "ln"):
            kwargs["gamma_initializer"] = "zeros"
        return make_norm(self.norm, x.shape[-1], name=name, **kwargs)(x)

    def conv(self, x, filters, kernel, stride, name):
        if self.padding == "symmetric" and stride > 1 and kernel > 1:
            # PyTorch's padding=k//2: both sides, where "same" pads bottom/right only.
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            return _conv(filters, kernel, stride, name, self.bias, padding="valid")(x)
        return _conv(filters, kernel, stride, name, self.bias)(x)

    def relu(self, x, name):
        if self.activation == "silu":
            return keras.layers.Activation("silu", name=name)(x)
        return keras.layers.ReLU(name=name)(x)

    def block(self, x, block, filters, stride, name):
        if not self.recompute:
            return self._block(x, block, filters, stride, name)
        inputs = keras.Input(x.shape[1:], name=f"{name}_in")
        sub = keras.Model(inputs, self._block(inputs, block, filters, stride, name), name=name)
        return Recompute(sub, name=f"{name}_recompute")(x)

    def _block(self, x, block, filters, stride, name):
        out_ch = filters * EXPANSION[block]
        needs_proj = stride != 1 or x.shape[-1] != out_ch
        if self.preact:
            pre = self.relu(self.norm_layer(x, f"{name}_preact_norm"), f"{name}_preact_relu")
            shortcut = self.conv(pre, out_ch, 1, stride, f"{name}_proj") if needs_proj else x
            y = pre
        else:
            shortcut = x
            if needs_proj:
                shortcut = self.conv(x, out_ch, 1, stride, f"{name}_proj")
                shortcut = self.norm_layer(shortcut, f"{name}_proj_norm")
            y = x
        if block == "basic":
            convs = [(filters, 3, stride), (filters, 3, 1)]
        else:
            convs = [(filters, 1, 1), (filters, 3, stride), (out_ch, 1, 1)]
        for i, (f, k, s) in enumerate(convs):
            last = i == len(convs) - 1
            if self.preact and i > 0:
                y = self.relu(self.norm_layer(y, f"{name}_norm{i}"), f"{name}_relu{i}")
            y = self.conv(y, f, k, s, f"{name}_conv{i + 1}")
            if not self.preact:
                y = self.norm_layer(y, f"{name}_norm{i + 1}", zero=last and self.zero_init_residual)
                if not last:
                    y = self.relu(y, f"{name}_relu{i + 1}")
        y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
        if not self.preact:
            y = self.relu(y, f"{name}_out")
        return y


@keras.saving.register_keras_serializable(package="tf_advscale")
class ResNetBackbone(keras.Model):
    """ResNet feature extractor: images in [0, 1] -> final feature map.

    Args:
        depth: network depth (see ``DEPTHS``; any 6n+2 for ``family="cifar"``,
            any 6n+4 for ``family="wide"``).
        family: ``"cifar"``, ``"imagenet"``, ``"preact"``, ``"cifar4"`` or ``"wide"``.
        input_shape: ``(H, W, C)``; spatial dims may be ``None``.
        norm: ``"bn"``, ``"gn"``, ``"ln"``, ``"none"`` or ``"mixbn"``.
        norm_kwargs: extra arguments for every normalization layer.
        width: multiplier on every stage's filter count (the stem's too,
            except in the ``wide`` family, where it is WRN's k).
        preact: pre-activation blocks (He et al. 2016b); always on for the
            ``preact`` and ``wide`` families.
        zero_init_residual: start each residual branch's last norm at gamma=0
            (Goyal et al. 2017; off by default: it slowed short runs here).
        mean, std: input standardisation done inside the model (numbers or
            per-channel lists).
        recompute: recompute each residual block's activations in the
            backward pass instead of storing them (``Recompute``): less
            memory for one more forward pass; the deep ResNets need it.
        activation: ``"relu"`` or ``"silu"`` (Gowal et al. 2020's WRNs).
        padding: of the stride-2 3x3 convs: ``"same"`` (Keras') or
            ``"symmetric"`` (PyTorch's ``padding=1``). Default: symmetric for
            the ``preact`` and ``wide`` families, same otherwise.
    """

    def __init__(self, depth=20, family="cifar", input_shape=(32, 32, 3), norm="bn",
                 norm_kwargs=None, width=1.0, preact=False, zero_init_residual=False,
                 mean=0.5, std=0.5, recompute=False, activation="relu", padding=None,
                 **kwargs):
        block, stages = blocks_for(family, depth)
        if not width or width <= 0:
            raise ValueError(f"width must be > 0. Received: width={width!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}. "
                             f"Received: activation={activation!r}")
        if padding is None:
            padding = "symmetric" if family in TORCH_STYLE else "same"
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}. Received: padding={padding!r}")
        if family in PREACT_ONLY and not preact:
            preact = True  # these families are pre-activation by definition
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C). Received: input_shape={input_shape}")
        b = _Builder(norm, norm_kwargs, preact, zero_init_residual, bool(recompute),
                     activation, padding)

        inputs = keras.Input(shape=input_shape, name="images")
        x = Standardize(mean, std, name="standardize")(inputs)
        filters = [max(1, int(round(f * width))) for f in STAGE_FILTERS[family]]
        stem_kernel, stem_stride, stem_pool = STEMS[family]
        stem = STAGE_FILTERS[family][0] if family == "wide" else filters[0]
        x = b.conv(x, stem, stem_kernel, stem_stride, "stem_conv")
        if not preact:
            x = b.relu(b.norm_layer(x, "stem_norm"), "stem_relu")
        if stem_pool:
            x = keras.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
        for s, (n, f) in enumerate(zip(stages, filters)):
            for i in range(n):
                stride = 2 if (i == 0 and s > 0) else 1
                x = b.block(x, block, f, stride, f"stage{s + 1}_block{i + 1}")
        if preact:
            x = b.relu(b.norm_layer(x, "final_norm"), "final_relu")
        super().__init__(inputs=inputs, outputs=x, **kwargs)

        self.depth = depth
        self.family = family
        self.image_shape = input_shape
        self.norm = norm
        self.norm_kwargs = dict(norm_kwargs or {})
        self.width = width
        self.preact = preact
        self.zero_init_residual = zero_init_residual
        self.mean = mean
        self.std = std
        self.block_type = block
        self.stackwise_num_blocks = stages
        self.recompute = bool(recompute)
        self.activation = activation
        self.padding = padding

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "depth": self.depth, "family": self.family,
            "input_shape": list(self.image_shape), "norm": self.norm,
            "norm_kwargs": self.norm_kwargs, "width": self.width,
            "preact": self.preact, "zero_init_residual": self.zero_init_residual,
            "mean": self.mean, "std": self.std, "recompute": self.recompute,
            "activation": self.activation, "padding": self.padding,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_advscale")
class ResNetClassifier(keras.Model):
    """Backbone + global average pooling + dense logits."""

    def __init__(self, backbone, num_classes, **kwargs):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}")
        inputs = backbone.input
        x = backbone(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        # Logits in float32 under any mixed-precision policy (softmax numerics).
        outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32",
                                     kernel_initializer=keras.initializers.RandomNormal(stddev=0.01)
                                     )(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


# Registered WideResNets: name -> (depth, k).
WIDE = {"wrn-16-4": (16, 4), "wrn-28-10": (28, 10), "wrn-34-10": (34, 10),
        "wrn-34-20": (34, 20), "wrn-70-16": (70, 16)}
PREFIX = {"cifar": "cifar_resnet", "imagenet": "resnet", "preact": "preactresnet",
          "cifar4": "cifar4_resnet", "wide": "wrn-"}


def resnet(depth=20, num_classes=10, family=None, input_shape=None, name=None, **kwargs):
    """A ResNet classifier. ``family`` defaults to ``"cifar"`` for the CIFAR
    table's depths and ``"imagenet"`` otherwise; ``input_shape`` to 224x224x3
    for ``"imagenet"`` and 32x32x3 for the others."""
    if family is None:
        family = "cifar" if depth in DEPTHS["cifar"] else "imagenet"
    if input_shape is None:
        input_shape = (224, 224, 3) if family == "imagenet" else (32, 32, 3)
    prefix = PREFIX.get(family, "resnet")
    if family == "wide":
        prefix = f"wrn-{depth}-{kwargs.get('width', 1.0):g}"
        label = prefix
    else:
        label = f"{prefix}{depth}"
    backbone = ResNetBackbone(depth=depth, family=family, input_shape=input_shape,
                              name=f"{label}_backbone", **kwargs)
    return ResNetClassifier(backbone, num_classes, name=name or label)


def _register_table():
    for family, table in DEPTHS.items():
        if family == "wide":
            continue  # registered by (depth, k) below
        for depth in table:
            def make(num_classes=1000 if family == "imagenet" else 10, _d=depth, _f=family,
                     **kw):
                return resnet(_d, num_classes=num_classes, family=_f, **kw)
            make.__name__ = f"{PREFIX[family]}{depth}"
            register_model(make.__name__)(make)
    for name, (depth, k) in WIDE.items():
        def make(num_classes=10, _d=depth, _k=k, **kw):
            return resnet(_d, num_classes=num_classes, family="wide", width=_k, **kw)
        make.__name__ = name
        register_model(name)(make)


_register_table()
