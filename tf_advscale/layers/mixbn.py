"""MixBN: batch normalization with one set of statistics (and affine
parameters) per input domain -- the paper's "mixture BN" (MBN, Sec. 4.2).

Routing
-------
Every MixBN layer of a model reads the routing that is active when it is
called:

* no routing active (plain ``model(x)``, ``predict``, ``evaluate``): the whole
  batch goes through the layer's *inference route*, a non-trainable variable
  (saved with the model), so ``set_route(model, "clean")`` switches a built
  model without rebuilding or retracing;
* ``with route("adversarial"):`` -- the whole batch goes through one domain;
* ``with split([("adversarial", n), ("clean", m)]):`` -- the batch is the
  concatenation of the listed segments, in that order; each segment is
  normalised with its own batch statistics and updates only its own domain's
  moving statistics.

The routing is thread-local and read at trace time, so it is set inside the
train step: under ``tf.distribute`` each replica splits its own per-replica
batch and never sees another replica's rows.
"""

import contextlib
import threading

import keras
import tensorflow as tf
from keras import ops

from tf_advscale.layers import walk
from tf_advscale.layers.norms import BN_DEFAULTS, register_norm

DEFAULT_DOMAINS = ("clean", "adversarial")

_state = threading.local()


def _current():
    return getattr(_state, "routing", None)


@contextlib.contextmanager
def _routing(value):
    previous = _current()
    _state.routing = value
    try:
        yield
    finally:
        _state.routing = previous


def current_routing():
    """The routing in force in this thread (None outside ``route``/``split``)."""
    return _current()


def restore_routing(routing):
    """Context: re-enters a routing saved with ``current_routing()``."""
    return _routing(routing)


def route(domain):
    """Context: every MixBN layer sends the whole batch through ``domain``."""
    return _routing(("route", domain))


def split(segments):
    """Context: the batch is ``segments = [(domain, size), ...]`` concatenated.

    Sizes may be Python ints or scalar int tensors; a segment of size 0 is
    allowed (its domain's statistics are then left unchanged).
    """
    segments = [(d, s) for d, s in segments]
    if not segments:
        raise ValueError("split() needs at least one (domain, size) segment")
    return _routing(("split", segments))


@keras.saving.register_keras_serializable(package="tf_advscale")
class MixBN(keras.layers.BatchNormalization):
    """Domain-routed BatchNormalization.

    Args:
        domains: names of the domains, e.g. ``("clean", "adversarial")``.
        separate_stats: one set of moving mean/variance per domain (else one
            set shared by all domains).
        separate_affine: one gamma/beta per domain (else shared).
        inference_route: the domain used when no routing is active.
        batch_stats_at_inference: normalise with the batch's own statistics
            also at inference ("BN consistent at training and testing").
        **kwargs: everything ``keras.layers.BatchNormalization`` takes.

    Weights ``gamma``, ``beta`` have shape ``(n_affine, C)`` and
    ``moving_mean``, ``moving_variance`` ``(n_stats, C)``, one row per domain.
    """

    def __init__(
        self,
        domains=DEFAULT_DOMAINS,
        separate_stats=True,
        separate_affine=True,
        inference_route="adversarial",
        batch_stats_at_inference=False,
        **kwargs,
    ):
        if kwargs.get("renorm"):
            raise ValueError("MixBN does not support renorm. Received: renorm=True")
        super().__init__(**kwargs)
        # call() refuses masks: do not advertise BatchNormalization's support.
        self.supports_masking = False
        domains = tuple(domains)
        if len(domains) < 1 or len(set(domains)) != len(domains):
            raise ValueError(
                f"domains must be distinct names, at least one. Received: domains={domains}"
            )
        if inference_route not in domains:
            raise ValueError(
                f"inference_route must be one of {domains}. "
                f"Received: inference_route={inference_route!r}"
            )
        if self.axis not in (-1, 3):
            raise ValueError(f"MixBN normalises the last axis. Received: axis={self.axis}")
        self.domains = domains
        self.separate_stats = bool(separate_stats)
        self.separate_affine = bool(separate_affine)
        self.inference_route = inference_route
        self.batch_stats_at_inference = bool(batch_stats_at_inference)

    # -- construction -----------------------------------------------------

    def build(self, input_shape):
        channels = input_shape[self.axis]
        n_affine = len(self.domains) if self.separate_affine else 1
        n_stats = len(self.domains) if self.separate_stats else 1
        self.gamma = self.beta = None
        if self.scale:
            self.gamma = self.add_weight(
                shape=(n_affine, channels), name="gamma",
                initializer=self.gamma_initializer, regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint, trainable=True, autocast=False)
        if self.center:
            self.beta = self.add_weight(
                shape=(n_affine, channels), name="beta",
                initializer=self.beta_initializer, regularizer=self.beta_regularizer,
                constraint=self.beta_constraint, trainable=True, autocast=False)
        self.moving_mean = self.add_weight(
            shape=(n_stats, channels), name="moving_mean",
            initializer=self.moving_mean_initializer, trainable=False, autocast=False)
        self.moving_variance = self.add_weight(
            shape=(n_stats, channels), name="moving_variance",
            initializer=self.moving_variance_initializer, trainable=False, autocast=False)
        self.route_index = self.add_weight(
            shape=(), name="route_index", dtype="int32", trainable=False,
            initializer=keras.initializers.Constant(self.domains.index(self.inference_route)))
        self.use_batch_stats = self.add_weight(
            shape=(), name="use_batch_stats", dtype="int32", trainable=False,
            initializer=keras.initializers.Constant(int(self.batch_stats_at_inference)))
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self.axis: channels})
        self._reduction_axes = list(range(len(input_shape) - 1))

    @classmethod
    def from_batch_norm(cls, layer, **kwargs):
        """A MixBN with ``layer``'s configuration (weights are set by ``convert``)."""
        config = layer.get_config()
        if config.get("renorm"):
            raise ValueError(f"Cannot convert {layer.name}: renorm is not supported")
        for key in ("renorm", "renorm_clipping", "renorm_momentum"):
            config.pop(key, None)
        return cls(**config, **kwargs)

    def get_config(self):
        config = super().get_config()
        for key in ("renorm", "renorm_clipping", "renorm_momentum"):
            config.pop(key, None)
        config.update(
            domains=list(self.domains),
            separate_stats=self.separate_stats,
            separate_affine=self.separate_affine,
            inference_route=self.inference_route,
            batch_stats_at_inference=self.batch_stats_at_inference,
        )
        return config

    # -- routing ----------------------------------------------------------

    def domain_index(self, domain):
        if domain not in self.domains:
            raise ValueError(
                f"Unknown domain for {self.name}: expected one of {self.domains}. "
                f"Received: {domain!r}")
        return self.domains.index(domain)

    def set_route(self, domain):
        self.route_index.assign(self.domain_index(domain))

    def set_batch_stats_at_inference(self, flag):
        self.use_batch_stats.assign(int(bool(flag)))

    @property
    def route(self):
        return self.domains[int(ops.convert_to_numpy(self.route_index))]

    # -- computation ------------------------------------------------------

    def _row(self, variable, index, separate):
        if variable is None:
            return None
        return tf.gather(variable, index if separate else 0)

    def _normalize(self, x, index, training, size=None):
        """Normalises ``x`` (one domain) with domain ``index`` (int or tensor)."""
        dtype = x.dtype
        gamma = self._row(self.gamma, index, self.separate_affine)
        beta = self._row(self.beta, index, self.separate_affine)
        moving_mean = tf.cast(self._row(self.moving_mean, index, self.separate_stats), dtype)
        moving_var = tf.cast(self._row(self.moving_variance, index, self.separate_stats), dtype)

        def normalized(mean, variance):
            return tf.nn.batch_normalization(
                x, mean, variance,
                None if beta is None else tf.cast(beta, dtype),
                None if gamma is None else tf.cast(gamma, dtype),
                self.epsilon)

        if not training:
            # The whole normalisation in each branch, not only the statistics:
            # with the condition on the statistics alone, a MixBN ResNet-20's
            # forward + input gradient took 1.20 ms per image against 1.05 for
            # the same network with BatchNormalization; like this, 1.07 against
            # 1.09 (benchmarks/model_cost.py, batch 100, this machine's 2 cores).
            use_batch = tf.cast(self.use_batch_stats, tf.bool)
            return tf.cond(use_batch,
                           lambda: normalized(*self._batch_moments(x)),
                           lambda: normalized(moving_mean, moving_var))
        # What BatchNormalization computes without a mask (its private
        # ``_moments``), through the public op.
        mean, variance = ops.moments(
            x, axes=self._reduction_axes, synchronized=self.synchronized)
        nonempty = None
        if size is not None:
            # An empty segment has no statistics: keep the moving ones.
            nonempty = size > 0
            mean = tf.where(nonempty, mean, moving_mean)
            variance = tf.where(nonempty, variance, moving_var)
        self._update_row(self.moving_mean, index, moving_mean, mean, nonempty)
        self._update_row(self.moving_variance, index, moving_var, variance, nonempty)
        return normalized(mean, variance)

    def _batch_moments(self, x):
        # Inference-time batch statistics stay per replica: a cross-replica
        # all-reduce cannot sit inside this tf.cond (nor an attack's loop).
        return keras.ops.moments(x, axes=self._reduction_axes, synchronized=False)

    def _update_row(self, variable, index, old, new, keep_if=None):
        row = index if self.separate_stats else 0
        value = old * self.momentum + tf.cast(new, old.dtype) * (1.0 - self.momentum)
        if keep_if is not None:
            # old * m + old * (1 - m) is not old in floating point (about 1 ulp):
            # an empty segment leaves the statistics bit for bit as they were.
            value = tf.where(keep_if, value, old)
        value = tf.cast(value, variable.dtype)
        indices = tf.reshape(tf.cast(row, tf.int32), [1, 1])
        variable.assign(tf.tensor_scatter_nd_update(
            tf.convert_to_tensor(variable), indices, value[None]))

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError("MixBN does not support masks")
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = tf.cast(inputs, compute_dtype)
        training = bool(training) and self.trainable
        routing = _current()
        if routing is None:
            out = self._normalize(x, tf.convert_to_tensor(self.route_index.value), training)
        elif routing[0] == "route":
            out = self._normalize(x, self.domain_index(routing[1]), training)
        else:
            segments = routing[1]
            sizes = [s for _, s in segments]
            parts = tf.split(x, sizes, axis=0) if len(segments) > 1 else [x]
            out = tf.concat([
                self._normalize(part, self.domain_index(domain), training, size=size)
                for part, (domain, size) in zip(parts, segments)
            ], axis=0)
        return tf.cast(out, self.compute_dtype)


@register_norm("mixbn")
def _mixbn(channels, name, **kwargs):
    return MixBN(name=name, **{**BN_DEFAULTS, **kwargs})


# -- model-level helpers -----------------------------------------------------

def mixbn_layers(model):
    """All MixBN layers of ``model``, nested models included."""
    return [l for l in walk.sublayers(model) if isinstance(l, MixBN)]


def set_route(model, domain):
    """Chooses the inference route of every MixBN layer of ``model``."""
    layers = mixbn_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no MixBN layers; it has no routes")
    for layer in layers:
        layer.set_route(domain)


def set_batch_stats_at_inference(model, flag=True):
    """Makes every MixBN layer normalise with batch statistics at inference."""
    layers = mixbn_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no MixBN layers")
    for layer in layers:
        layer.set_batch_stats_at_inference(flag)


def convert(model, domains=DEFAULT_DOMAINS, **mixbn_kwargs):
    """Returns a copy of ``model`` in which every BatchNormalization is a MixBN.

    Each domain starts from the original layer's gamma, beta and moving
    statistics; all other weights are copied. Works for functional and
    sequential models (nested ones included), e.g. ``keras.applications``.
    """
    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization) and not isinstance(layer, MixBN):
            return MixBN.from_batch_norm(layer, domains=domains, **mixbn_kwargs)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy_weights(model, new)
    return new


def _leaves(model):
    """The layers of ``model`` that own weights (those with weights and no
    sublayer holding any: a nested model, or a layer wrapping one such as
    ``models.resnet.Recompute``, is looked into, not copied whole), in the
    order of ``model.weights``. Raises ValueError if a variable of the model
    is owned by none of them."""
    layers = [l for l in walk.sublayers(model)
              if l.weights and not any(s.weights for s in walk.sublayers(l))]
    index = {id(v): i for i, v in enumerate(model.weights)}
    owned = {id(v) for l in layers for v in l.weights}
    missing = [v.path for v in model.weights if id(v) not in owned]
    if missing:
        raise ValueError(f"{model.name!r}: variables {missing[:3]} belong to a layer that also "
                         "holds layers with weights; copy_weights cannot copy them")
    return sorted(layers, key=lambda l: min(index.get(id(v), len(index)) for v in l.weights))


BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def _bn_weights(src, layer, where):
    """``(name, target variable, source value)`` for each of ``BN_WEIGHTS``
    that both normalisations have (one having it alone is an error)."""
    for name in BN_WEIGHTS:
        dst, value = getattr(layer, name), getattr(src, name)
        if (dst is None) != (value is None):
            raise ValueError(f"Cannot copy weights at {where}: {name} is in the "
                             f"{'target' if value is None else 'source'} only")
        if dst is not None:
            yield name, dst, ops.convert_to_numpy(value)


def copy_weights(source, target, skip=(), domain=None):
    """Sets ``target``'s weights from ``source``, a model of the same
    architecture, layer by layer in weight order (nested models included);
    layer names must agree. Layers named in ``skip`` (each in both models)
    are left as they are in ``target``, e.g. ``["logits"]`` for another
    number of classes.

    A BatchNormalization's gamma, beta and moving statistics fill every
    domain of the MixBN in its place in ``target`` (as ``convert`` does); a
    MixBN into a MixBN copies those four per domain (the domains must be the
    same, in the same order) and keeps the target's inference route; a
    MixBN into a BatchNormalization takes ``domain``'s four (without
    ``domain`` it is refused: which one to keep is not defined); any other
    layer takes ``source``'s weights as they are. Raises ValueError, naming
    the first layer that differs (in name, kind or weight shapes), before
    anything is written. Layers without
    weights (activations, padding) are not compared: see
    ``recipe.warm_start``, which compares the two models' outputs.
    """
    sources, targets = _leaves(source), _leaves(target)
    for name in skip:
        for model, layers in ((source, sources), (target, targets)):
            if name not in [l.name for l in layers]:
                raise ValueError(f"Cannot skip {name!r}: {model.name!r} has no layer of that "
                                 "name with weights")
    sources = [l for l in sources if l.name not in skip]
    targets = [l for l in targets if l.name not in skip]
    for src, layer in zip(sources, targets):
        if src.name != layer.name:
            raise ValueError(f"Cannot copy weights from {source.name!r} into {target.name!r}: "
                             f"the layers differ at {src.name} -> {layer.name}")
    if len(sources) != len(targets):
        longer = sources if len(sources) > len(targets) else targets
        raise ValueError(f"Cannot copy weights from {source.name!r} ({len(sources)} layers "
                         f"with weights) into {target.name!r} ({len(targets)}): the "
                         f"{'source' if longer is sources else 'target'} goes on with "
                         f"{longer[min(len(sources), len(targets))].name}")
    writes = []  # (variable, value): every layer is checked before any is written
    for src, layer in zip(sources, targets):
        where = f"{src.name} -> {layer.name}"
        if isinstance(src, MixBN) and not isinstance(layer, MixBN):
            if domain is None or type(layer) is not keras.layers.BatchNormalization:
                raise ValueError(f"Cannot copy weights at {where}: a MixBN into a "
                                 f"{type(layer).__name__}" + (" (which domain to keep is not "
                                                              "defined)" if domain is None else ""))
            if int(ops.convert_to_numpy(src.use_batch_stats)):
                raise ValueError(f"Cannot copy weights at {where}: the MixBN normalises "
                                 "with batch statistics at inference "
                                 "(batch_stats_at_inference), which a BatchNormalization "
                                 "cannot")
            row = src.domain_index(domain)
            for name, dst, value in _bn_weights(src, layer, where):
                value = value[row if value.shape[0] > 1 else 0]
                if value.shape != tuple(dst.shape):
                    raise ValueError(f"Cannot copy weights at {where}: {name} has shape "
                                     f"{value.shape} in domain {domain!r}, the target "
                                     f"{tuple(dst.shape)}")
                writes.append((dst, value))
            continue
        if isinstance(layer, MixBN):
            if not isinstance(src, keras.layers.BatchNormalization):
                raise ValueError(f"Cannot copy weights at {where}: a {type(src).__name__} "
                                 "into a MixBN")
            if isinstance(src, MixBN) and tuple(src.domains) != tuple(layer.domains):
                raise ValueError(f"Cannot copy weights at {where}: domains "
                                 f"{tuple(src.domains)} into {tuple(layer.domains)}")
            for name, dst, value in _bn_weights(src, layer, where):
                if not isinstance(src, MixBN):
                    value = value[None]
                if value.shape[1:] != tuple(dst.shape[1:]) or value.shape[0] not in (
                        1, dst.shape[0]):
                    raise ValueError(f"Cannot copy weights at {where}: {name} has shape "
                                     f"{value.shape}, the target {tuple(dst.shape)}")
                writes.append((dst, ops.broadcast_to(value, dst.shape)))
            continue
        if type(src) is not type(layer):
            raise ValueError(f"Cannot copy weights at {where}: a {type(src).__name__} into "
                             f"a {type(layer).__name__}")
        weights = src.get_weights()
        shapes = [tuple(w.shape) for w in weights]
        wanted = [tuple(w.shape) for w in layer.weights]
        if shapes != wanted:
            raise ValueError(f"Cannot copy weights at {where}: shapes {shapes}, the target "
                             f"has {wanted}")
        writes.extend(zip(layer.weights, weights))
    for variable, value in writes:
        variable.assign(value)
