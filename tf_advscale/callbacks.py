"""Training callbacks: the best-model saver and the catastrophic-overfitting monitor of
fast adversarial training."""

import math
import warnings

import keras
import tensorflow as tf

from tf_advscale import attacks as attacks_lib
from tf_advscale.files import save_model_atomic


class CatastrophicOverfittingMonitor(keras.callbacks.Callback):
    """Detects catastrophic overfitting of fast (FGSM) adversarial training.

    Every ``every_n_steps`` steps (and at each epoch end) it measures
    accuracy under ``attack`` (default PGD-10 with the training epsilon) on a
    fixed held-out batch. If that accuracy drops below ``drop_ratio`` x the
    best seen so far (after ``min_accuracy`` was once reached), it stops
    training and, with ``restore_best``, rolls the weights back to the best
    point (Wong et al. 2020).
    """

    def __init__(self, images, labels, attack=None, every_n_steps=None, drop_ratio=0.5,
                 min_accuracy=0.05, restore_best=True, verbose=1):
        super().__init__()
        self.images = tf.convert_to_tensor(images, tf.float32)
        self.labels = tf.convert_to_tensor(labels, tf.int32)
        self.attack = attack
        self.every_n_steps = every_n_steps
        self.drop_ratio = drop_ratio
        self.min_accuracy = min_accuracy
        self.restore_best = restore_best
        self.verbose = verbose
        self.best = -1.0
        self.best_weights = None
        self.history = []
        self.clean_history = []
        self.triggered = False
        self._steps = 0
        self._fn = None

    def _measure(self):
        model = self.model
        if self._fn is None:
            attack = self.attack
            if attack is None:
                eps = getattr(model.attack, "epsilon", 8 / 255)
                attack = attacks_lib.PGD(epsilon=eps, step_size=eps / 4, steps=10)

            @tf.function
            def robust_accuracy(x, y):
                adv = attack(model.eval_model_fn, x, y)
                pred = tf.argmax(model.eval_model_fn(adv), -1, output_type=tf.int32)
                return tf.reduce_mean(tf.cast(tf.equal(pred, y), tf.float32))
            self._fn = robust_accuracy
        return float(self._fn(self.images, self.labels))

    def _measure_clean(self):
        logits = self.model.eval_model_fn(self.images)
        pred = tf.argmax(logits, -1, output_type=tf.int32)
        return float(tf.reduce_mean(tf.cast(tf.equal(pred, self.labels), tf.float32)))

    def check(self):
        """Measures the held-out batch now (clean and attacked) and stops
        training, rolling back, on a collapse; training calls it on schedule."""
        acc = self._measure()
        clean = self._measure_clean()
        self.history.append(acc)
        self.clean_history.append(clean)
        if acc > clean + 0.05:
            warnings.warn(f"Catastrophic-overfitting monitor: held-out robust accuracy {acc:.3f} "
                          f"exceeds the same batch's clean accuracy {clean:.3f}; its attack is "
                          "not working and this reading is not to be trusted.")
        if acc > self.best:
            self.best = acc
            if self.restore_best:
                self.best_weights = self.model.get_weights()
        elif self.best >= self.min_accuracy and acc < self.drop_ratio * self.best:
            self.triggered = True
            if self.verbose:
                print(f"\nCatastrophic overfitting: held-out robust accuracy {acc:.3f} "
                      f"fell below {self.drop_ratio} x best {self.best:.3f}; stopping"
                      + (" and restoring the best weights." if self.restore_best else "."))
            if self.restore_best and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            self.model.stop_training = True

    def get_state(self):
        """JSON-able state for ``checkpoint.TrainingState`` (the best weights
        themselves are not kept across a restart)."""
        return {"best": self.best, "history": list(self.history),
                "clean_history": list(self.clean_history), "triggered": self.triggered,
                "steps": self._steps}

    def set_state(self, state):
        self.best = float(state["best"])
        self.history = [float(a) for a in state["history"]]
        self.clean_history = [float(a) for a in state.get("clean_history", [])]  # older runs lack it
        self.triggered = bool(state["triggered"])
        self._steps = int(state["steps"])

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self.every_n_steps and self._steps % self.every_n_steps == 0 and not self.triggered:
            self.check()

    def on_epoch_end(self, epoch, logs=None):
        if not self.triggered:
            self.check()
        if logs is not None:
            logs["heldout_robust_accuracy"] = self.history[-1]
            logs["heldout_clean_accuracy"] = self.clean_history[-1]


class BestModel(keras.callbacks.Callback):
    """Saves the model to ``path`` (atomically) when ``monitor`` improves.

    Epochs without the monitored value (validation skipped) are ignored. Its
    best value is part of ``TrainingState`` when passed in ``tracked``, so a
    resumed run does not overwrite a better model with a worse one.
    """

    def __init__(self, path, monitor="val_adv_accuracy", mode="max"):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'. Received: mode={mode!r}")
        self.path = str(path)
        self.monitor = monitor
        self.mode = mode
        self.best = -math.inf if mode == "max" else math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if value > self.best if self.mode == "max" else value < self.best:
            self.best = value
            save_model_atomic(self.model, self.path)

    def get_state(self):
        return {"best": self.best}

    def set_state(self, state):
        self.best = float(state["best"])
