"""The learning-rate schedules of ``advscale train`` configs (``optimizer.schedule``).

``learning_rate(...)`` builds a config's schedule, from Keras' own where Keras
has one. ``W = warmup_epochs * steps_per_epoch`` warm-up steps, then:

    cosine     keras CosineDecay: the base rate -> 0 at the end of the run
               (its own warm-up: ``warmup_target``, ``warmup_steps``)
    piecewise  keras PiecewiseConstantDecay: the base rate, / 10 from each of
               ``decay_epochs`` on (epochs of the run, warm-up included)
    constant   the base rate (``Constant``)
    cyclic     ``Cyclic``: Wong et al. 2020's triangle, which Keras lacks;
               it has no warm-up (``warmup_epochs`` is not used)

Keras has no warm-up for the piecewise and constant rates: ``LinearWarmup``
puts CosineDecay's in front of them. Every warm-up is CosineDecay's line,
``base / W + (base - base / W) * step / W`` at steps 0 .. W - 1, from
``base / W`` up to (but short of) the base rate the schedule after it starts at.

The schedules are Keras objects: an optimizer's config and a saved ``.keras``
model carry them, and ``LRSchedule``, the one class of earlier versions, is
kept so that models they saved still load.
"""

import math

import keras
import tensorflow as tf
from keras import ops

KINDS = ("cosine", "piecewise", "constant", "cyclic")


def learning_rate(base_lr, steps_per_epoch, epochs, schedule="cosine", warmup_epochs=0,
                  decay_epochs=(), peak_epoch=None):
    """The ``keras.optimizers.schedules.LearningRateSchedule`` of a config's
    ``optimizer`` keys (``learning_rate`` is ``base_lr``); ``steps_per_epoch``
    is the training data's (a step is a batch). ``peak_epoch`` (``"cyclic"``
    only): the epoch of the triangle's top, None for 2/5 of the run."""
    if schedule not in KINDS:
        raise ValueError(f"schedule must be one of {KINDS}. Received: schedule={schedule!r}")
    if not (_is_number(base_lr) and 0 < base_lr < 100):
        raise ValueError(f"learning_rate must be in (0, 100). Received: learning_rate={base_lr!r}")
    if not (_is_number(epochs) and epochs > 0):
        raise ValueError(f"epochs must be a positive number. Received: epochs={epochs!r}")
    if not (_is_number(warmup_epochs) and warmup_epochs >= 0):
        raise ValueError("warmup_epochs must be a number >= 0. "
                         f"Received: warmup_epochs={warmup_epochs!r}")
    if not (isinstance(decay_epochs, (list, tuple)) and all(map(_is_number, decay_epochs))):
        raise ValueError(f"decay_epochs must be numbers. Received: decay_epochs={decay_epochs!r}")
    base_lr = float(base_lr)
    steps_per_epoch = max(1, int(steps_per_epoch))
    if schedule == "cyclic":
        return Cyclic(base_lr, steps_per_epoch, epochs, peak_epoch)
    warmup_steps = _steps(warmup_epochs, steps_per_epoch)
    warmup = {"initial_learning_rate": base_lr / warmup_steps, "warmup_target": base_lr,
              "warmup_steps": warmup_steps} if warmup_steps else None
    if schedule == "cosine":
        # A run no longer than its warm-up: the base rate at step W, then 0 (as before).
        decay_steps = _steps(epochs, steps_per_epoch) - warmup_steps
        decay_steps = decay_steps if decay_steps > 0 else 1
        if warmup:
            return keras.optimizers.schedules.CosineDecay(decay_steps=decay_steps, **warmup)
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps)
    after = Constant(base_lr)
    if schedule == "piecewise" and decay_epochs:
        # PiecewiseConstantDecay's value i + 1 applies from step boundaries[i] + 1 on.
        boundaries = [math.ceil(_steps(e, steps_per_epoch)) - 1 for e in sorted(decay_epochs)]
        after = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [base_lr / 10 ** i for i in range(len(boundaries) + 1)])
    return LinearWarmup(after, **warmup) if warmup else after


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _steps(epochs, steps_per_epoch):
    """``epochs * steps_per_epoch``, an int when it is whole."""
    steps = float(epochs) * steps_per_epoch
    return int(steps) if steps.is_integer() else steps


@keras.saving.register_keras_serializable(package="tf_advscale")
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    """``learning_rate`` at every step. A schedule rather than a float, so
    that the optimizer's variables (which a checkpoint holds) are those of
    every other schedule: a float adds a ``learning_rate`` variable."""

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate

    def __call__(self, step):
        return ops.convert_to_tensor(self.learning_rate)

    def get_config(self):
        return {"learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package="tf_advscale")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Keras CosineDecay's linear warm-up in front of another schedule:
    ``initial_learning_rate`` at step 0 rising by equal steps towards
    ``warmup_target`` while ``step < warmup_steps``, then ``after(step)`` (the
    step counted from the start, warm-up included)."""

    def __init__(self, after, initial_learning_rate, warmup_target, warmup_steps):
        if not (_is_number(warmup_steps) and warmup_steps > 0):
            raise ValueError(f"warmup_steps must be > 0. Received: warmup_steps={warmup_steps!r}")
        self.after = after
        self.initial_learning_rate = initial_learning_rate
        self.warmup_target = warmup_target
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        # CosineDecay._warmup_function's arithmetic, in the same float32 order.
        initial = ops.convert_to_tensor(self.initial_learning_rate)
        dtype = initial.dtype
        target = ops.cast(self.warmup_target, dtype)
        warmup_steps = ops.cast(self.warmup_steps, dtype)
        at = ops.cast(step, dtype)
        return ops.cond(at < warmup_steps,
                        lambda: (target - initial) * (at / warmup_steps) + initial,
                        lambda: ops.cast(self.after(step), dtype))

    def get_config(self):
        return {"after": keras.saving.serialize_keras_object(self.after),
                "initial_learning_rate": self.initial_learning_rate,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        return cls(**dict(config, after=keras.saving.deserialize_keras_object(config["after"])))


@keras.saving.register_keras_serializable(package="tf_advscale")
class Cyclic(keras.optimizers.schedules.LearningRateSchedule):
    """One triangle, 0 -> ``base_lr`` at ``peak_epoch`` (None: 2/5 of the run)
    -> 0 at the end: the schedule of fast adversarial training (Wong et al.
    2020), ``np.interp(t, [0, peak_epoch, epochs], [0, base_lr, 0])`` at
    ``t = epoch + (i + 1) / steps_per_epoch``, i the step in the epoch."""

    def __init__(self, base_lr, steps_per_epoch, epochs, peak_epoch=None):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = float(epochs)
        if peak_epoch is None:
            peak_epoch = 0.4 * self.epochs
        if not (_is_number(peak_epoch) and 0 < peak_epoch < self.epochs):
            raise ValueError(f"peak_epoch must lie strictly inside the {epochs} epochs. "
                             f"Received: peak_epoch={peak_epoch!r}")
        self.peak_epoch = float(peak_epoch)

    def __call__(self, step):
        # The arithmetic (ops and their float32 order) of LRSchedule's "cyclic"
        # before this class: a run resumed across the change goes on unchanged.
        epoch = tf.cast(step, tf.float32) / float(max(1, self.steps_per_epoch))
        t = epoch + 1.0 / max(1, self.steps_per_epoch)
        up = t / self.peak_epoch
        down = (self.epochs - t) / (self.epochs - self.peak_epoch)
        return self.base_lr * tf.clip_by_value(tf.minimum(up, down), 0.0, 1.0)

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.epochs, "peak_epoch": self.peak_epoch}


@keras.saving.register_keras_serializable(package="tf_advscale")
class LRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Kept only to load models saved by earlier versions, whose optimizer
    config names ``tf_advscale>LRSchedule`` (one class for every kind then):
    ``from_config`` returns ``learning_rate(...)`` of that config, so a loaded
    model's optimizer holds today's schedule. Its rates are the saved one's
    but in the warm-up (see ``learning_rate``); the cyclic one's are equal.
    Not for new code: it cannot be constructed."""

    def __init__(self, *args, **kwargs):
        raise TypeError("LRSchedule only loads models saved by earlier versions. "
                        "Use tf_advscale.schedules.learning_rate(...)")

    @classmethod
    def from_config(cls, config):
        c = dict(config)
        return learning_rate(c.pop("base_lr"), c.pop("steps_per_epoch"), c.pop("epochs"),
                             c.pop("kind", "cosine"), **c)
