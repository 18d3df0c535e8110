"""The adversarial Keras model: the paper's training procedure in ``train_step``.

``AdversarialModel(classifier, attack=...)`` wraps any Keras classifier
(images in [0, 1] -> logits). ``fit``, ``evaluate``, ``predict``, callbacks,
``tf.distribute`` and ``.keras`` saving keep working; Keras owns the loop.

One training step, per replica (Sec. 3-4 of the paper):

1. generate adversarial images for the N images of the batch with
   ``attack``, through ``attack_bn`` mode ("inference": BN uses its moving
   statistics and nothing is updated, as in the paper) and the adversarial
   MixBN route; the result is a constant for the weight update;
2. take the clean versions of ``clean_portion`` x N of them;
3. forward the N adversarial + the clean images according to ``mixing``:
   ``"joint"`` one batch through one BN (statistics of the mixture),
   ``"mixbn"`` one batch split between MixBN's clean and adversarial
   domains, ``"separate"`` two forward passes (per domain for MixBN models,
   through the one shared BN otherwise);
4. loss = mean cross-entropy over all N + clean images (optionally label
   smoothing), + ``alp_weight`` x mean squared logit distance of clean/adv
   pairs (ALP), + ``weight_decay`` x L2 of conv/dense kernels.
"""

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

from tf_advscale import attacks as attacks_lib
from tf_advscale.layers import mixbn

MIXING = ("joint", "mixbn", "separate")
ATTACK_BN = ("inference", "train")
CLEAN, ADV = "clean", "adversarial"


def _kernels(model):
    return [v for v in model.trainable_variables if v.path.endswith("kernel")]


@keras.saving.register_keras_serializable(package="tf_advscale")
class AdversarialModel(keras.Model):
    """Adversarial training of ``model`` with the paper's batch recipe.

    Args:
        model: the classifier (images in [0, 1] -> logits).
        attack: training attack (an ``Attack``, a spec dict, or None for
            standard training).
        eval_attack: attack used by ``evaluate`` (``test_step``); None:
            clean evaluation only.
        clean_portion: clean images added per adversarial image, in [0, 1]
            (the paper's "x% clean"); 0 = adversarial only.
        mixing: ``"joint"``, ``"mixbn"`` or ``"separate"`` (see module doc).
        alp_weight: adversarial logit pairing weight (0 = off).
        label_smoothing: for the cross-entropy.
        weight_decay: L2 coefficient on conv/dense kernels only (the gradient
            is ``weight_decay * w``, as SGD weight decay).
        attack_bn: BN mode while generating the attack: ``"inference"`` or
            ``"train"`` (batch statistics, still without updating anything).
        attack_route: MixBN route the attacker sees.
        attack_jit_compile: compile the attack loop with XLA (measure first:
            on CPU plain graph mode is usually faster).
        check_inputs: refuse batches with images outside [0, 1], NaN/Inf or
            labels outside [0, num_classes) with an error naming the value.
        seed: the attacks' random starts and targets are stateless draws
            keyed by ``(seed, optimizer step[, replica])`` in training and
            ``(seed, evaluation batch)`` in ``evaluate``, so a resumed run
            draws what the uninterrupted one drew. None: a seed from numpy's
            global generator (set by ``keras.utils.set_random_seed``).
    """

    def __init__(self, model, attack=None, eval_attack=None, clean_portion=0.0,
                 mixing="joint", alp_weight=0.0, label_smoothing=0.0, weight_decay=0.0,
                 attack_bn="inference", attack_route=ADV, attack_jit_compile=False,
                 check_inputs=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(f"model must be a keras.Model. Received: model={model!r}")
        _in_unit("clean_portion", clean_portion)
        if mixing not in MIXING:
            raise ValueError(f"mixing must be one of {MIXING}. Received: mixing={mixing!r}")
        if attack_bn not in ATTACK_BN:
            raise ValueError(f"attack_bn must be one of {ATTACK_BN}. Received: attack_bn={attack_bn!r}")
        for name, value in (("alp_weight", alp_weight), ("label_smoothing", label_smoothing),
                            ("weight_decay", weight_decay)):
            if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0. Received: {name}={value!r}")
        if label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be < 1. Received: label_smoothing={label_smoothing}")
        self.has_mixbn = bool(mixbn.mixbn_layers(model))
        if mixing == "mixbn" and not self.has_mixbn:
            raise ValueError("mixing='mixbn' needs a model with MixBN layers (build it with "
                             "norm='mixbn' or tf_advscale.layers.convert(model)). "
                             f"Received: model={model.name!r} without MixBN")
        self.model = model
        self.attack = attacks_lib.from_spec(attack)
        self.eval_attack = None if eval_attack is None else attacks_lib.from_spec(eval_attack)
        self.clean_portion = float(clean_portion)
        self.mixing = mixing
        self.alp_weight = float(alp_weight)
        self.label_smoothing = float(label_smoothing)
        self.weight_decay = float(weight_decay)
        self.attack_bn = attack_bn
        self.attack_route = attack_route
        self.attack_jit_compile = bool(attack_jit_compile)
        self.check_inputs = bool(check_inputs)
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an int >= 0 or None. Received: seed={seed!r}")
        self.seed = int(seed)
        if self.attack_jit_compile:
            self._generate = tf.function(self._generate, jit_compile=True)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.clean_accuracy = keras.metrics.SparseCategoricalAccuracy(name="clean_accuracy")
        self.adv_accuracy = keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")
        # Counts evaluation batches (reset with the metrics): the eval seed.
        self._eval_batches = keras.metrics.Sum(name="eval_batches", dtype="int64")
        if model.built:
            self.built = True

    # -- Keras plumbing ---------------------------------------------------

    @property
    def metrics(self):
        return [self.loss_tracker, self.clean_accuracy, self.adv_accuracy, self._eval_batches]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds a model under a strategy by reducing the first
        # (PerReplica) batch with strategy.reduce, which fails under
        # MultiWorkerMirroredStrategy. This model is built from its classifier
        # and has no compiled loss or metrics to build: create the optimizer's
        # variables in the strategy's scope and skip the rest.
        # Private Keras API, unavoidable: fit/evaluate call this hook under any
        # strategy with no public switch, and only the private
        # ``_distribute_strategy`` (None outside a strategy scope) tells
        # whether Keras would act at all. tests/test_private_api.py pins both.
        if self.built and getattr(self, "_distribute_strategy", None) is not None:
            with self.distribute_strategy.scope():
                if self.optimizer is not None and not self.optimizer.built:
                    self.optimizer.build(self.model.trainable_variables)
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def build(self, input_shape=None):
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {
            "name": self.name, "trainable": self.trainable,
            "model": ser(self.model), "attack": ser(self.attack),
            "eval_attack": None if self.eval_attack is None else ser(self.eval_attack),
            "clean_portion": self.clean_portion, "mixing": self.mixing,
            "alp_weight": self.alp_weight, "label_smoothing": self.label_smoothing,
            "weight_decay": self.weight_decay, "attack_bn": self.attack_bn,
            "attack_route": self.attack_route, "attack_jit_compile": self.attack_jit_compile,
            "check_inputs": self.check_inputs, "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        de = keras.saving.deserialize_keras_object
        config["model"] = de(config["model"])
        config["attack"] = de(config["attack"])
        if config.get("eval_attack") is not None:
            config["eval_attack"] = de(config["eval_attack"])
        return cls(**config)

    # -- the forward passes the attacker and the evaluator see -------------

    def attack_model_fn(self, images):
        """Logits as the training attacker sees them; never updates state."""
        images, unscale = self._attack_gradient_scaling(images)
        with mixbn.route(self.attack_route) if self.has_mixbn else contextlib.nullcontext():
            if self.attack_bn == "inference":
                return unscale(self.model(images, training=False))
            values = [v.value for v in self.model.trainable_variables]
            others = [v.value for v in self.model.non_trainable_variables]
            logits, _ = self.model.stateless_call(values, others, images, training=True)
            return unscale(logits)

    def eval_model_fn(self, images):
        """Logits for evaluation: inference mode, the model's inference route."""
        images, unscale = self._attack_gradient_scaling(images)
        return unscale(self.model(images, training=False))

    def _attack_gradient_scaling(self, images):
        """Under float16 compute, the attacker's input gradients would
        underflow: the backward pass through the model runs at
        ``ATTACK_GRAD_SCALE`` x and is scaled back at the input. Values
        are unchanged; perturbations and projections stay in float32."""
        if self.model.compute_dtype != "float16":
            return images, lambda logits: logits
        scale = ATTACK_GRAD_SCALE
        return (_scale_gradient(images, 1.0 / scale),
                lambda logits: _scale_gradient(logits, scale))

    def _generate(self, images, labels, seed=None):
        return tf.stop_gradient(self.attack(self.attack_model_fn, images, labels, seed=seed))

    def _seed(self, counter, salt):
        """A stateless seed from ``(self.seed, salt, counter[, replica id])``."""
        seed = attacks_lib.fold_seed(tf.constant([self.seed, salt], tf.int64),
                                     tf.cast(counter, tf.int64))
        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            seed = attacks_lib.fold_seed(seed, context.replica_id_in_sync_group)
        return seed

    # -- the step ------------------------------------------------------------

    def _clean_count(self, images):
        if self.clean_portion == 0.0:
            return 0
        split = self.mixing in ("mixbn", "separate")  # each domain needs >= 1 image
        static = images.shape[0]
        if static is not None:
            count = int(round(self.clean_portion * static))
            if split and count == 0:
                raise ValueError(
                    f"A batch of {static} images (per replica) with clean_portion="
                    f"{self.clean_portion} has no clean image for mixing={self.mixing!r}: use a "
                    f"batch of at least {math.ceil(0.5 / self.clean_portion)} images per replica")
            return count
        n = tf.shape(images)[0]
        count = tf.cast(tf.round(self.clean_portion * tf.cast(n, tf.float32)), tf.int32)
        if split:
            check = tf.debugging.assert_positive(
                count, message=f"batch too small to split for mixing={self.mixing!r} with "
                f"clean_portion={self.clean_portion}: clean images in this batch:")
            with tf.control_dependencies([check]):
                count = tf.identity(count)
        return count

    def _forward(self, adv, clean):
        """Logits of (adversarial, clean) images in training mode."""
        n_adv = tf.shape(adv)[0]
        if clean is None:
            with mixbn.route(ADV) if self.has_mixbn else contextlib.nullcontext():
                return self.model(adv, training=True), None
        if self.mixing == "separate" or self._sync_split():
            with mixbn.route(ADV) if self.has_mixbn else contextlib.nullcontext():
                logits_adv = self.model(adv, training=True)
            with mixbn.route(CLEAN) if self.has_mixbn else contextlib.nullcontext():
                logits_clean = self.model(clean, training=True)
            return logits_adv, logits_clean
        both = tf.concat([adv, clean], axis=0)
        if self.mixing == "mixbn":
            n_adv_static = adv.shape[0] if adv.shape[0] is not None else n_adv
            n_clean = clean.shape[0] if clean.shape[0] is not None else tf.shape(clean)[0]
            context = mixbn.split([(ADV, n_adv_static), (CLEAN, n_clean)])
        else:
            context = mixbn.route(ADV) if self.has_mixbn else contextlib.nullcontext()
        with context:
            logits = self.model(both, training=True)
        return logits[:n_adv], logits[n_adv:]

    def _sync_split(self):
        """MixBN with statistics synchronized across replicas runs the two
        domains as two forward passes: the same function (MixBN normalises
        each domain on its own and every other layer is per example), with
        the cross-replica all-reduces of one BN per pass."""
        return (self.mixing == "mixbn" and tf.distribute.get_strategy().num_replicas_in_sync > 1
                and any(layer.synchronized for layer in mixbn.mixbn_layers(self.model)))

    def _cross_entropy(self, labels, logits):
        k = tf.shape(logits)[-1]
        onehot = tf.one_hot(labels, k)
        return keras.losses.categorical_crossentropy(
            onehot, tf.cast(logits, tf.float32), from_logits=True,
            label_smoothing=self.label_smoothing)

    def _unpack(self, data):
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        if sw is not None:
            raise ValueError("AdversarialModel does not support sample weights")
        x = tf.cast(x, tf.float32)
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        if self.check_inputs:
            x, y = self._checked(x, y)
        return x, y

    def _checked(self, x, y):
        """Refuses images outside [0, 1] (e.g. 0-255), NaN/Inf and bad labels:
        epsilons are in [0, 1] pixel units, so such a batch would silently
        train against the wrong threat model."""
        k = _static_classes(self.model)
        if k is None:  # a Sequential or subclassed classifier: ask its logits
            k = tf.shape(self.model(x[:1], training=False))[-1]
        checks = [
            tf.debugging.assert_all_finite(x, "images contain NaN or Inf"),
            tf.debugging.assert_greater_equal(
                tf.reduce_min(x), 0.0, message="images must be in [0, 1]; smallest value:"),
            tf.debugging.assert_less_equal(
                tf.reduce_max(x), 1.0,
                message="images must be in [0, 1] (0-255 images? divide by 255); largest value:"),
            tf.debugging.assert_greater_equal(
                tf.reduce_min(y), 0, message="labels must be >= 0; smallest label:"),
        ]
        checks.append(tf.debugging.assert_less(
            tf.reduce_max(y), tf.cast(k, y.dtype),
            message=f"labels must be < {k} classes; largest label:" if isinstance(k, int)
            else "labels must be < the number of classes the model outputs; largest label:"))
        with tf.control_dependencies(checks):
            return tf.identity(x), tf.identity(y)

    def train_step(self, data):
        x, y = self._unpack(data)
        adversarial = not isinstance(self.attack, attacks_lib.NoAttack)
        if adversarial:
            adv = self._generate(x, y, self._seed(self.optimizer.iterations, 0))
            n_clean = self._clean_count(x)
            clean = None if (isinstance(n_clean, int) and n_clean == 0) else x[:n_clean]
            y_clean = None if clean is None else y[:n_clean]
        else:
            adv, clean, y_clean = x, None, None
        with tf.GradientTape() as tape:
            logits_adv, logits_clean = self._forward(adv, clean)
            per_example = self._cross_entropy(y, logits_adv)
            if logits_clean is not None:
                per_example = tf.concat([per_example, self._cross_entropy(y_clean, logits_clean)], 0)
            loss = tf.reduce_mean(per_example)
            if self.alp_weight and logits_clean is not None:
                n = tf.shape(logits_clean)[0]
                diff = tf.cast(logits_clean, tf.float32) - tf.cast(logits_adv[:n], tf.float32)
                loss += self.alp_weight * tf.reduce_mean(tf.reduce_sum(tf.square(diff), -1))
            if self.weight_decay:
                loss += self.weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32))
                                                      for k in _kernels(self.model)])
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas if replicas > 1 else loss
            scaled = self.optimizer.scale_loss(scaled)
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)

        self.loss_tracker.update_state(loss)
        if adversarial:
            self.adv_accuracy.update_state(y, logits_adv)
            if logits_clean is not None:
                self.clean_accuracy.update_state(y_clean, logits_clean)
            else:
                self.clean_accuracy.update_state(y, self.eval_model_fn(x))
        else:
            self.clean_accuracy.update_state(y, logits_adv)
        return self._logs(adversarial)

    def test_step(self, data):
        x, y = self._unpack(data)
        logits = self.eval_model_fn(x)
        self.loss_tracker.update_state(tf.reduce_mean(self._cross_entropy(y, logits)))
        self.clean_accuracy.update_state(y, logits)
        if self.eval_attack is not None:
            adv = self.eval_attack(self.eval_model_fn, x, y,
                                   seed=self._seed(self._eval_batches.result(), 1))
            # Robust means correct both clean and attacked, as in
            # ``evaluate.run_attacks``: an image misclassified clean keeps its
            # clean logits, so an attack that happens to fix it counts nothing.
            clean_correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y)
            adv_logits = self.eval_model_fn(adv)
            self.adv_accuracy.update_state(
                y, tf.where(clean_correct[:, None], adv_logits, tf.cast(logits, adv_logits.dtype)))
        self._eval_batches.update_state(1)
        return self._logs(self.eval_attack is not None)

    def _logs(self, with_adv):
        metrics = self.metrics[:3] if with_adv else self.metrics[:2]
        if _multi_worker():
            # Keras reduces step logs across workers with reduce(axis=0), which
            # needs a leading axis: give each scalar one (the result is scalar).
            return {m.name: tf.reshape(m.result(), [1]) for m in metrics}
        return {m.name: m.result() for m in metrics}


ATTACK_GRAD_SCALE = 1024.0


def _static_classes(model):
    """The classifier's number of outputs when its graph says it (functional
    models); None for a Sequential or subclassed model not yet known."""
    try:
        k = model.output.shape[-1]
    except (AttributeError, ValueError):  # no symbolic output (not functional)
        return None
    return None if k is None else int(k)


def _scale_gradient(x, scale):
    """Identity whose gradient is multiplied by ``scale``."""
    @tf.custom_gradient
    def identity(t):
        return tf.identity(t), lambda dy: dy * tf.cast(scale, dy.dtype)
    return identity(x)


def _multi_worker():
    # The very test Keras makes before it reduces step logs across workers
    # (``keras.src.backend.tensorflow.trainer._collective_all_reduce_multi_worker``):
    # _logs must agree with it exactly, and TF has no public equivalent
    # (``strategy.cluster_resolver`` re-reads TF_CONFIG). Private TF API,
    # pinned by tests/test_private_api.py.
    strategy = tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _in_unit(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1]. Received: {name}={value!r}")
