"""Square Attack (Andriushchenko et al., ECCV 2020), L-inf: gradient-free.

Random search over square-shaped updates at the corners of the L-inf ball,
accepted when they lower the margin ``logit_y - max_other``. It uses only
the model's outputs, so a model that masks its gradients does not fool it:
evaluation runs it beside the white-box attacks as a gradient-masking check.
"""

import tensorflow as tf

from tf_advscale.attacks.base import (Attack, _check_number, _expand, fold_seed, register_attack,
                                      true_and_best_other)

# The published schedule of the square's area fraction, for 10,000 queries.
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _margin(logits, labels):
    own, other = true_and_best_other(logits, labels)
    return own - other


@register_attack
class Square(Attack):
    """Square Attack, untargeted, L-inf.

    Args:
        epsilon: radius, in [0, 1] pixel units.
        queries: model queries per example (AutoAttack: 5000).
        p_init: initial fraction of pixels in the square (0.8).
        seed: random seed (None: TF's global seed).
    """

    def __init__(self, epsilon=8 / 255, queries=1000, p_init=0.8, seed=None,
                 clip_min=0.0, clip_max=1.0):
        _check_number("epsilon", epsilon, 0.0, None)
        _check_number("p_init", p_init, 0.0, 1.0, inclusive_low=False)
        if not isinstance(queries, int) or queries < 1:
            raise ValueError(f"queries must be an int >= 1. Received: queries={queries!r}")
        self.epsilon = float(epsilon)
        self.queries = queries
        self.p_init = float(p_init)
        self.seed = seed
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def get_config(self):
        return {"epsilon": self.epsilon, "queries": self.queries, "p_init": self.p_init,
                "seed": self.seed, "clip_min": self.clip_min, "clip_max": self.clip_max}

    def _p(self, i):
        it = tf.cast(tf.cast(i, tf.float32) / self.queries * 10000.0, tf.int32)
        halvings = tf.add_n([tf.cast(it > b, tf.float32) for b in _P_BOUNDS])
        return self.p_init / tf.pow(2.0, halvings)

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        x = images
        n = tf.shape(x)[0]
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        if seed is not None:
            base = tf.cast(fold_seed(seed, 0)[0] % (2**31 - 1), tf.int32)
        elif self.seed is not None:
            base = tf.constant(self.seed, tf.int32)
        else:
            base = tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int32)

        def uniform(shape, i, k):
            # Stateless draws keyed by (seed, iteration, use): graph-safe, repeatable.
            return tf.random.stateless_uniform(shape, tf.stack([base, i * 4 + k]))

        def signs(shape, i, k):
            return tf.where(uniform(shape, i, k) < 0.5, -1.0, 1.0)

        # Initialisation: vertical stripes of +-epsilon.
        adv = tf.clip_by_value(x + self.epsilon * signs([n, 1, w, c], -1, 0),
                               self.clip_min, self.clip_max)
        margin = _margin(model_fn(adv), labels)
        rows = tf.range(h)[None, :]
        cols = tf.range(w)[None, :]

        def body(i, adv, margin):
            p = self._p(i)
            s = tf.maximum(tf.cast(tf.round(tf.sqrt(p * h * w)), tf.int32), 1)
            s = tf.minimum(s, min(h, w))
            top = tf.cast(uniform([n], i, 1) * tf.cast(h - s + 1, tf.float32), tf.int32)[:, None]
            left = tf.cast(uniform([n], i, 2) * tf.cast(w - s + 1, tf.float32), tf.int32)[:, None]
            in_h = tf.logical_and(rows >= top, rows < top + s)
            in_w = tf.logical_and(cols >= left, cols < left + s)
            window = tf.logical_and(in_h[:, :, None, None], in_w[:, None, :, None])
            delta = tf.where(window, self.epsilon * signs([n, 1, 1, c], i, 3), adv - x)
            cand = tf.clip_by_value(x + delta, self.clip_min, self.clip_max)
            cand_margin = _margin(model_fn(cand), labels)
            # Only examples not yet fooled move; an update is kept if it helps.
            accept = tf.logical_and(margin > 0, cand_margin < margin)
            adv = tf.where(_expand(accept, x), cand, adv)
            margin = tf.where(accept, cand_margin, margin)
            return i + 1, adv, margin

        _, adv, _ = tf.while_loop(lambda i, *_: i < self.queries - 1, body,
                                  (tf.constant(0), adv, margin))
        return tf.stop_gradient(adv)
