"""APGD (Croce & Hein, ICML 2020): the step-size-free core of AutoAttack.

Follows the published algorithm: step size starting at 2 epsilon, momentum
0.75, checkpoints at p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
- 0.03, 0.06) of the iterations; at a checkpoint the step size of an example
is halved, and it restarts from its best point, when fewer than rho = 0.75
of the steps since the last checkpoint increased its loss, or when its step
size was not reduced at the last checkpoint and its best loss has not
improved since. Losses: cross-entropy, DLR, and targeted DLR (toward the
k-th most likely classes, k = 2 .. n_target_classes + 1, as in AutoAttack's
APGD-T). Every iterate is checked: an example broken at any iterate stays
broken, and its result is its first broken iterate. So a run stops as soon
as no image of its batch is left correct: the later steps would change
nothing it returns (AutoAttack against a standard model: a few steps, not
100).
"""

import tensorflow as tf

from tf_advscale.attacks.base import (NORMS, Attack, _check_number, _expand, _into_l2_ball,
                                      _unit_l2, fold_seed, on_subset, over_runs,
                                      register_attack, true_and_best_other)

LOSSES = ("ce", "dlr", "dlr_targeted")


def dlr_loss(logits, labels):
    """Difference-of-logits ratio (untargeted), per example, to maximise."""
    own, other = true_and_best_other(logits, labels)
    top = tf.sort(tf.cast(logits, tf.float32), axis=-1, direction="DESCENDING")
    return -(own - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits, labels, target):
    """Targeted DLR, per example, to maximise."""
    logits = tf.cast(logits, tf.float32)
    k = tf.shape(logits)[-1]
    own = tf.reduce_sum(logits * tf.one_hot(labels, k), -1)
    tgt = tf.reduce_sum(logits * tf.one_hot(target, k), -1)
    top = tf.sort(logits, axis=-1, direction="DESCENDING")
    return -(own - tgt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


@register_attack
class APGD(Attack):
    """Auto-PGD, L-inf or L2.

    Args:
        epsilon: radius, in [0, 1] pixel units.
        steps: iterations per run (AutoAttack: 100).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"``, ``"dlr"`` or ``"dlr_targeted"``.
        restarts: random restarts (untargeted losses).
        n_target_classes: targeted runs, one per k-th most likely class.
        rho: the oscillation threshold (0.75).
        seed: random start seed (None: TF's global seed).
    """

    # Stop a run once every image is broken (the same result, fewer steps);
    # a test turns it off to compare against the full run.
    _stop_when_all_broken = True

    def __init__(self, epsilon=8 / 255, steps=100, norm="linf", loss="ce", restarts=1,
                 n_target_classes=9, rho=0.75, seed=None, clip_min=0.0, clip_max=1.0):
        _check_number("epsilon", epsilon, 0.0, None)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}. Received: norm={norm!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}. Received: loss={loss!r}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1. Received: steps={steps!r}")
        if not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts must be an int >= 1. Received: restarts={restarts!r}")
        if not isinstance(n_target_classes, int) or n_target_classes < 1:
            raise ValueError(f"n_target_classes must be an int >= 1. "
                             f"Received: n_target_classes={n_target_classes!r}")
        _check_number("rho", rho, 0.0, 1.0)
        self.epsilon = float(epsilon)
        self.steps = steps
        self.norm = norm
        self.loss = loss
        self.restarts = restarts
        self.n_target_classes = n_target_classes
        self.rho = float(rho)
        self.seed = seed
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        # Checkpoint schedule (Sec. 3.2): window lengths shrink by 0.03 n
        # down to 0.06 n, starting at 0.22 n.
        self.first_window = max(int(0.22 * steps), 1)
        self.window_decrease = max(int(0.03 * steps), 1)
        self.min_window = max(int(0.06 * steps), 1)

    def get_config(self):
        return {"epsilon": self.epsilon, "steps": self.steps, "norm": self.norm,
                "loss": self.loss, "restarts": self.restarts,
                "n_target_classes": self.n_target_classes, "rho": self.rho,
                "seed": self.seed, "clip_min": self.clip_min, "clip_max": self.clip_max}

    # -- geometry ------------------------------------------------------------

    def _project(self, x, adv):
        if self.norm == "linf":
            adv = tf.clip_by_value(adv, x - self.epsilon, x + self.epsilon)
        else:
            adv = x + _into_l2_ball(adv - x, self.epsilon)
        return tf.clip_by_value(adv, self.clip_min, self.clip_max)

    def _ascent(self, grad, step):
        if self.norm == "linf":
            return _expand(step, grad) * tf.sign(grad)
        return _expand(step, grad) * _unit_l2(grad)

    def _start(self, x, seed):
        """Random start; ``seed``: an op seed (int), a stateless seed tensor or None."""
        shape = tf.shape(x)
        stateless = isinstance(seed, tf.Tensor)
        if self.norm == "linf":
            r = tf.random.stateless_uniform(shape, seed, -1.0, 1.0) if stateless else \
                tf.random.uniform(shape, -1.0, 1.0, seed=seed)
            return self._project(x, x + self.epsilon * r)
        g = tf.random.stateless_normal(shape, seed) if stateless else \
            tf.random.normal(shape, seed=seed)
        return self._project(x, x + self.epsilon * _unit_l2(g))

    # -- one run -------------------------------------------------------------

    def _objective(self, logits, labels, target):
        if self.loss == "ce":
            return tf.keras.losses.sparse_categorical_crossentropy(
                labels, tf.cast(logits, tf.float32), from_logits=True)
        if self.loss == "dlr":
            return dlr_loss(logits, labels)
        return dlr_targeted_loss(logits, labels, target)

    def _value_and_grad(self, model_fn, adv, labels, target):
        with tf.GradientTape() as tape:
            tape.watch(adv)
            logits = model_fn(adv)
            loss = self._objective(logits, labels, target)
        grad = tape.gradient(loss, adv)
        if grad is None:  # the model hides its gradient
            grad = tf.zeros_like(adv)
        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        return loss, grad, correct

    def run(self, model_fn, x, labels, target=None, seed=None):
        """One APGD run; returns (adversarial images, still-correct mask)."""
        n = tf.shape(x)[0]
        adv = self._start(x, seed)
        loss, grad, correct = self._value_and_grad(model_fn, adv, labels, target)
        best_adv = tf.where(_expand(correct, x), x, adv)  # an already-broken start counts
        state = dict(
            i=tf.constant(0), adv=adv, old=adv, grad=grad, loss=loss,
            x_best=adv, grad_best=grad, loss_best=loss, correct=correct, best_adv=best_adv,
            step=tf.fill([n], 2.0 * self.epsilon), increases=tf.zeros([n]),
            since=tf.constant(0), window=tf.constant(self.first_window),
            reduced_last=tf.ones([n], tf.bool), loss_best_last=loss)

        def body(s):
            momentum = tf.where(s["i"] > 0, 0.75, 1.0)
            z = self._project(x, s["adv"] + self._ascent(s["grad"], s["step"]))
            new = self._project(x, s["adv"] + momentum * (z - s["adv"])
                                + (1.0 - momentum) * (s["adv"] - s["old"]))
            loss, grad, ok = self._value_and_grad(model_fn, new, labels, target)
            broken_now = tf.logical_and(s["correct"], tf.logical_not(ok))
            best_adv = tf.where(_expand(broken_now, x), new, s["best_adv"])
            correct = tf.logical_and(s["correct"], ok)
            better = loss > s["loss_best"]
            x_best = tf.where(_expand(better, x), new, s["x_best"])
            grad_best = tf.where(_expand(better, x), grad, s["grad_best"])
            loss_best = tf.where(better, loss, s["loss_best"])
            increases = s["increases"] + tf.cast(loss > s["loss"], tf.float32)
            since = s["since"] + 1

            at_check = tf.equal(since, s["window"])
            oscillating = increases <= tf.cast(s["window"], tf.float32) * self.rho
            stalled = tf.logical_and(tf.logical_not(s["reduced_last"]),
                                     s["loss_best_last"] >= loss_best)
            halve = tf.logical_and(at_check, tf.logical_or(oscillating, stalled))
            step = tf.where(halve, s["step"] / 2.0, s["step"])
            adv_next = tf.where(_expand(halve, x), x_best, new)
            grad_next = tf.where(_expand(halve, x), grad_best, grad)
            out = dict(
                # The momentum term of the next step is (its start) - (this
                # step's start): the reference's x_adv - x_adv_old.
                i=s["i"] + 1, adv=adv_next, old=s["adv"], grad=grad_next, loss=loss,
                x_best=x_best, grad_best=grad_best, loss_best=loss_best, correct=correct,
                best_adv=best_adv, step=step,
                increases=tf.where(at_check, tf.zeros_like(increases), increases),
                since=tf.where(at_check, 0, since),
                window=tf.where(at_check, tf.maximum(s["window"] - self.window_decrease,
                                                     self.min_window), s["window"]),
                reduced_last=tf.where(at_check, tf.logical_or(oscillating, stalled),
                                      s["reduced_last"]),
                loss_best_last=tf.where(at_check, loss_best, s["loss_best_last"]))
            return (out,)

        def more(s):
            if not self._stop_when_all_broken:
                return s["i"] < self.steps
            return tf.logical_and(s["i"] < self.steps, tf.reduce_any(s["correct"]))

        (final,) = tf.while_loop(more, body, (state,))
        result = tf.where(_expand(final["correct"], x), final["x_best"], final["best_adv"])
        return tf.stop_gradient(result), final["correct"]

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        x = images
        logits = model_fn(x)
        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        if self.loss == "dlr_targeted":
            # Run i aims at the (i + 2)-th most likely class.
            order = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
            n_runs = min(self.n_target_classes, int(logits.shape[-1]) - 1)
        else:
            n_runs = self.restarts

        def one_run(i, best, correct):
            if seed is not None:
                run_seed = fold_seed(seed, i)
            else:
                run_seed = None if self.seed is None else self.seed + i
            extra = () if self.loss != "dlr_targeted" else (tf.gather(order, i + 1, axis=1),)

            def attack(xs, ys, *t):
                return self.run(model_fn, xs, ys, t[0] if t else None, run_seed)

            # Each run attacks only the images no earlier run has broken (AutoAttack's order).
            best, ok = on_subset(correct, attack, best, labels, *extra)
            return best, tf.logical_and(correct, ok)

        # An op-level seed (self.seed + i) must be a Python int: then unrolled.
        best, _ = over_runs(n_runs, one_run, (x, correct),
                            loop=seed is not None or self.seed is None)
        return tf.stop_gradient(best)
