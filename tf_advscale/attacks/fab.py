"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020b).

FAB looks for the smallest perturbation that changes the decision. At each
iteration it linearises the margin between the true class y and a target
class t around the current point, projects both the current point and the
original image onto that linearised decision boundary (a minimum-norm
projection inside the image box [0, 1]), takes a convex combination of
the two projections biased toward the original image (weight alpha, capped
at ``alpha_max``), overshoots by ``eta``, and, once a point is adversarial,
keeps it if it is the closest so far and steps back toward the image by
``beta``. As in AutoAttack's FAB-T, the targets are the 2nd ... (k+1)-th most
likely classes of the clean image, one run each, every run on the images
still unbroken; an adversarial point counts only if it lies within epsilon.

Everything is TensorFlow graph code: the projections are a closed-form
"water-filling" solution over sorted breakpoints, vectorised per example.
"""

import tensorflow as tf

from tf_advscale.attacks.base import (NORMS, Attack, _check_number, _expand, _per_example_norm,
                                      fold_seed, normal, on_subset, over_runs, register_attack,
                                      uniform)


def _water_fill(v, r, target):
    """Per row: the smallest lam >= 0 with sum_i v_i * min(lam, r_i) >= target.

    ``v`` (weights, >= 0) and ``r`` (breakpoints, >= 0) are [n, d], ``target``
    is [n]. Returns ``lam`` [n], +inf where even lam = max(r) falls short (the
    target lies outside the box: every coordinate saturates).
    """
    order = tf.argsort(r, axis=1)
    rs = tf.gather(r, order, batch_dims=1)
    vs = tf.gather(v, order, batch_dims=1)
    cum_v = tf.cumsum(vs, axis=1)
    cum_vr = tf.cumsum(vs * rs, axis=1)
    total_v = cum_v[:, -1:]
    # The sum at each breakpoint lam = rs[j]: coordinates up to j saturated.
    at_break = cum_vr + rs * (total_v - cum_v)
    k = tf.reduce_sum(tf.cast(at_break < target[:, None], tf.int32), axis=1)
    d = tf.shape(r)[1]
    prev = tf.maximum(k - 1, 0)[:, None]
    done_v = tf.where(k > 0, tf.gather(cum_v, prev, batch_dims=1)[:, 0], 0.0)
    done_vr = tf.where(k > 0, tf.gather(cum_vr, prev, batch_dims=1)[:, 0], 0.0)
    lam = (target - done_vr) / tf.maximum(total_v[:, 0] - done_v, 1e-30)
    return tf.where(k >= d, tf.fill(tf.shape(lam), float("inf")), tf.maximum(lam, 0.0))


def project_to_hyperplane(points, w, b, norm):
    """Minimal-norm ``d`` with ``<w, points + d> = b`` and ``points + d`` in
    [0, 1]^d (the box corner nearest the plane when the plane is out of
    reach). ``points``, ``w``: [n, d]; ``b``: [n]. L-inf or L2."""
    c = tf.reduce_sum(w * points, axis=1) - b
    # Orient every row so that the plane lies in the direction of decreasing <w, x>.
    w = w * _expand(tf.where(c >= 0, 1.0, -1.0), w)
    c = tf.abs(c)
    if norm == "linf":
        # Moving coordinate i by lam toward its box face lowers <w, x> by |w_i| lam,
        # until the face (room r_i) is reached.
        room = tf.where(w < 0, 1.0 - points, points)
        lam = _water_fill(tf.abs(w), room, c)
        step = tf.minimum(lam[:, None], room)
        return tf.where(w != 0, -tf.sign(w) * step, 0.0)
    # L2: d = -lam w, coordinate i saturating at lam = r_i.
    safe = tf.where(tf.abs(w) > 1e-8, w, 1.0)
    r = tf.where(tf.abs(w) > 1e-8, tf.maximum(points / safe, (points - 1.0) / safe), 0.0)
    lam = _water_fill(tf.square(w), r, c)
    return tf.where(tf.abs(w) > 1e-8, -w * tf.minimum(lam[:, None], r), 0.0)


@register_attack
class FAB(Attack):
    """Targeted FAB (FAB-T), L-inf or L2, AutoAttack's settings by default.

    Args:
        epsilon: the threat radius: a point found farther away does not count.
        steps: iterations per target (AutoAttack: 100).
        norm: ``"linf"`` or ``"l2"``.
        n_target_classes: runs toward the 2nd ... (n+1)-th most likely class.
        restarts: runs per target; runs after the first start at a random
            point at half the radius (AutoAttack's standard version: 1).
        alpha_max, eta, beta: the published step constants (0.1, 1.05, 0.9).
        seed: seed of the random starts (restarts > 1 only).
    """

    def __init__(self, epsilon=8 / 255, steps=100, norm="linf", n_target_classes=9,
                 restarts=1, alpha_max=0.1, eta=1.05, beta=0.9, seed=None):
        _check_number("epsilon", epsilon, 0.0, None, inclusive_low=False)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}. Received: norm={norm!r}")
        for name, value in (("steps", steps), ("n_target_classes", n_target_classes),
                            ("restarts", restarts)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1. Received: {name}={value!r}")
        _check_number("alpha_max", alpha_max, 0.0, 1.0)
        _check_number("eta", eta, 1.0, None)
        _check_number("beta", beta, 0.0, 1.0)
        self.epsilon = float(epsilon)
        self.steps = steps
        self.norm = norm
        self.n_target_classes = n_target_classes
        self.restarts = restarts
        self.alpha_max = float(alpha_max)
        self.eta = float(eta)
        self.beta = float(beta)
        self.seed = seed

    def get_config(self):
        return {"epsilon": self.epsilon, "steps": self.steps, "norm": self.norm,
                "n_target_classes": self.n_target_classes, "restarts": self.restarts,
                "alpha_max": self.alpha_max, "eta": self.eta, "beta": self.beta,
                "seed": self.seed}

    def _flat_norm(self, d):
        return _per_example_norm(d, self.norm)

    def run(self, model_fn, x, labels, target, seed=None):
        """One FAB-T run on ``x`` (classified correctly) toward ``target``:
        (closest adversarial image found, its distance; +inf where none)."""
        n = tf.shape(x)[0]
        flat = lambda t: tf.reshape(t, [n, -1])  # noqa: E731
        x1 = x
        if seed is not None:
            # A random start at half the radius (restarts after the first).
            if self.norm == "linf":
                t = uniform(tf.shape(x), seed, -1.0, 1.0)
            else:
                t = normal(tf.shape(x), seed)
            t = t / _expand(tf.maximum(self._flat_norm(t), 1e-12), t)
            x1 = tf.clip_by_value(x + 0.5 * self.epsilon * t, 0.0, 1.0)
        x0 = flat(x)

        def body(i, x1, best, dist):
            with tf.GradientTape() as tape:
                tape.watch(x1)
                logits = tf.cast(model_fn(x1), tf.float32)
                k = tf.shape(logits)[-1]
                # Margin of the target over the true class: adversarial where > 0.
                diff = (tf.reduce_sum(logits * tf.one_hot(target, k), -1)
                        - tf.reduce_sum(logits * tf.one_hot(labels, k), -1))
            grad = tape.gradient(diff, x1)
            w = flat(grad)
            b = -diff + tf.reduce_sum(w * flat(x1), axis=1)
            d = project_to_hyperplane(tf.concat([flat(x1), x0], 0), tf.concat([w, w], 0),
                                      tf.concat([b, b], 0), self.norm)
            size = tf.maximum(_per_example_norm(d, self.norm), 1e-8)
            a1, a2 = size[:n], size[n:]
            alpha = tf.clip_by_value(a1 / (a1 + a2), 0.0, self.alpha_max)
            d1 = tf.reshape(d[:n], tf.shape(x))
            d2 = tf.reshape(d[n:], tf.shape(x))
            alpha = _expand(alpha, x)
            x1 = tf.clip_by_value((x1 + self.eta * d1) * (1.0 - alpha)
                                  + (x + self.eta * d2) * alpha, 0.0, 1.0)
            fooled = tf.not_equal(tf.argmax(model_fn(x1), -1, output_type=tf.int32), labels)
            t = self._flat_norm(x1 - x)
            closer = tf.logical_and(fooled, t < dist)
            best = tf.where(_expand(closer, x), x1, best)
            dist = tf.where(closer, t, dist)
            # Once adversarial: back toward the image, to look for a closer point.
            x1 = tf.where(_expand(fooled, x), x + (x1 - x) * self.beta, x1)
            return i + 1, tf.stop_gradient(x1), best, dist

        _, _, best, dist = tf.while_loop(
            lambda i, *_: i < self.steps, body,
            (tf.constant(0), x1, x, tf.fill([n], float("inf"))))
        return tf.stop_gradient(best), dist

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        x = images
        logits = model_fn(x)
        robust = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        order = tf.argsort(logits, axis=-1, direction="DESCENDING", stable=True)
        k = min(self.n_target_classes, int(logits.shape[-1]) - 1)

        def one_target(i, adv, robust):
            # Target i: the (i + 2)-th most likely class, with self.restarts runs.
            for restart in range(self.restarts):
                run = i * self.restarts + restart
                run_seed = None
                if restart > 0:
                    run_seed = (fold_seed(seed, run) if seed is not None else
                                tf.stack([tf.constant(self.seed or 0, tf.int64),
                                          tf.cast(run, tf.int64)]))

                def attack(xs, ys, ts, run_seed=run_seed):
                    found, dist = self.run(model_fn, xs, ys, ts, run_seed)
                    return found, dist > self.epsilon  # farther than epsilon: no success

                # Only the images still unbroken are attacked (AutoAttack's order).
                adv, ok = on_subset(robust, attack, adv, labels,
                                    tf.gather(order, i + 1, axis=1))
                robust = tf.logical_and(robust, ok)
            return adv, robust

        adv, _ = over_runs(k, one_target, (x, robust))
        return tf.stop_gradient(adv)
