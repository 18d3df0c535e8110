"""The learning-rate schedule of ``advscale train`` configs (``optimizer.schedule``)."""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_advscale")
class LRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine, piecewise (/10 at ``decay_epochs``) or constant;
    or ``"cyclic"``: one triangle, 0 -> ``base_lr`` at ``peak_epoch`` (default 2/5
    of the run) -> 0 at the end, the schedule of fast adversarial training
    (Wong et al. 2020), which has no separate warm-up."""

    KINDS = ("cosine", "piecewise", "constant", "cyclic")

    def __init__(self, base_lr, steps_per_epoch, epochs, kind="cosine", warmup_epochs=0,
                 decay_epochs=(), peak_epoch=None):
        if kind not in self.KINDS:
            raise ValueError(f"schedule must be one of {self.KINDS}. Received: schedule={kind!r}")
        if not (isinstance(base_lr, (int, float)) and 0 < base_lr < 100):
            raise ValueError(f"learning_rate must be in (0, 100). Received: learning_rate={base_lr!r}")
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = float(epochs)
        self.kind = kind
        self.warmup_epochs = float(warmup_epochs)
        self.decay_epochs = [float(e) for e in decay_epochs]
        if peak_epoch is None:
            peak_epoch = 0.4 * self.epochs
        if kind == "cyclic" and not (isinstance(peak_epoch, (int, float))
                                     and 0 < peak_epoch < self.epochs):
            raise ValueError(f"peak_epoch must lie strictly inside the {epochs} epochs. "
                             f"Received: peak_epoch={peak_epoch!r}")
        self.peak_epoch = float(peak_epoch)

    def __call__(self, step):
        epoch = tf.cast(step, tf.float32) / float(max(1, self.steps_per_epoch))
        lr = tf.constant(self.base_lr)
        if self.kind == "cyclic":
            # Wong et al.'s np.interp at t = epoch + (i + 1) / n, i the step in the epoch.
            t = epoch + 1.0 / max(1, self.steps_per_epoch)
            up = t / self.peak_epoch
            down = (self.epochs - t) / (self.epochs - self.peak_epoch)
            return self.base_lr * tf.clip_by_value(tf.minimum(up, down), 0.0, 1.0)
        if self.kind == "cosine":
            span = max(1e-9, self.epochs - self.warmup_epochs)
            t = tf.clip_by_value((epoch - self.warmup_epochs) / span, 0.0, 1.0)
            lr = 0.5 * self.base_lr * (1.0 + tf.cos(math.pi * t))
        elif self.kind == "piecewise":
            n = tf.add_n([tf.cast(epoch >= e, tf.float32) for e in self.decay_epochs]) \
                if self.decay_epochs else 0.0
            lr = self.base_lr * tf.pow(0.1, n)
        if self.warmup_epochs > 0:
            lr = tf.where(epoch < self.warmup_epochs,
                          self.base_lr * (epoch + 1.0 / max(1, self.steps_per_epoch))
                          / self.warmup_epochs, lr)
        return lr

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.epochs, "kind": self.kind, "warmup_epochs": self.warmup_epochs,
                "decay_epochs": self.decay_epochs, "peak_epoch": self.peak_epoch}
