"""Square Attack (Andriushchenko et al., ECCV 2020), L-inf and L2: gradient-free.

Random search over square-shaped updates, accepted when they lower the
margin ``logit_y - max_other``. L-inf: each update sets a square window to
a corner of the ball. L2: each update moves mass between two windows of the
current perturbation, in the shape of the paper's centred "pseudo-Gaussian"
pattern, keeping the whole on the sphere of radius epsilon. It uses only
the model's outputs, so a model that masks its gradients does not fool it:
evaluation runs it beside the white-box attacks as a gradient-masking check.

As in the reference, the area of the window follows a fixed schedule
rescaled to the query budget. Unlike the reference, which draws one window
position per iteration for the whole batch, each image draws its own
(stateless draws keyed by the seed and the iteration: repeatable).
"""

import numpy as np
import tensorflow as tf

from tf_advscale.attacks.base import (NORMS, Attack, _check_number, _expand, _per_example_norm,
                                      fold_seed, register_attack, true_and_best_other)

# The published schedule of the square's area fraction, for 10,000 queries.
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _margin(logits, labels):
    own, other = true_and_best_other(logits, labels)
    return own - other


def _rectangles(rows, cols):
    """The paper's centred pattern on a ``rows`` x ``cols`` grid: nested
    rectangles around the centre cell ``(rows // 2, cols // 2)``, the k-th
    (k = 0, 1, ...) adding 1 / (k + 1)^2 to every cell within Chebyshev
    distance k of the centre; unit L2 norm."""
    k_max = max(rows // 2, cols // 2) + 1
    tail = np.cumsum((1.0 / np.arange(1, k_max + 1) ** 2)[::-1])[::-1]  # tail[d] = sum_{k>=d}
    i = np.abs(np.arange(rows) - rows // 2)[:, None]
    j = np.abs(np.arange(cols) - cols // 2)[None, :]
    out = tail[np.maximum(i, j)]
    return out / np.sqrt((out ** 2).sum())


def pseudo_gaussian(s):
    """The L2 update's s x s pattern: the centred pattern on the top half
    rows, its negative on the bottom half, unit L2 norm (float64 numpy)."""
    top = s // 2
    out = np.concatenate([_rectangles(top, s) if top else np.zeros((0, s)),
                          -_rectangles(s - top, s)])
    return out / np.sqrt((out ** 2).sum())


@register_attack
class Square(Attack):
    """Square Attack, untargeted, L-inf or L2.

    Args:
        epsilon: radius, in [0, 1] pixel units (L2: of the whole image's
            perturbation, e.g. 0.5 on CIFAR-10).
        queries: model queries per example, at most (AutoAttack: 5000).
        p_init: initial fraction of pixels in the square (0.8).
        seed: random seed (None: TF's global seed).
        norm: ``"linf"`` or ``"l2"``.

    The search stops once no image of the batch has a positive margin (true
    logit minus the largest other): such an image never moves again, so the
    result is the same with fewer queries.
    """

    # Stop once no margin is positive (the same result, fewer queries); the
    # same switch as APGD's: a test turns it off to compare with the full search.
    _stop_when_all_broken = True

    def __init__(self, epsilon=8 / 255, queries=1000, p_init=0.8, seed=None,
                 clip_min=0.0, clip_max=1.0, norm="linf"):
        _check_number("epsilon", epsilon, 0.0, None)
        _check_number("p_init", p_init, 0.0, 1.0, inclusive_low=False)
        if not isinstance(queries, int) or queries < 1:
            raise ValueError(f"queries must be an int >= 1. Received: queries={queries!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}. Received: norm={norm!r}")
        self.epsilon = float(epsilon)
        self.queries = queries
        self.p_init = float(p_init)
        self.seed = seed
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.norm = norm

    def get_config(self):
        config = {"epsilon": self.epsilon, "queries": self.queries, "p_init": self.p_init,
                  "seed": self.seed, "clip_min": self.clip_min, "clip_max": self.clip_max}
        # The L-inf attack's config (hence its repr, which saved evaluations
        # fingerprint) is as it was before L2 existed.
        if self.norm != "linf":
            config["norm"] = self.norm
        return config

    def _halvings(self, i):
        it = tf.cast(tf.cast(i, tf.float32) / self.queries * 10000.0, tf.int32)
        return tf.add_n([tf.cast(it > b, tf.int32) for b in _P_BOUNDS])

    def _p(self, i):
        return self.p_init / tf.pow(2.0, tf.cast(self._halvings(i), tf.float32))

    def _draws(self, seed, uses=4):
        """(uniform(shape, i, k), signs(shape, i, k)): stateless draws keyed by
        (seed, iteration i, use k < uses): graph-safe, repeatable."""
        if seed is not None:
            base = tf.cast(fold_seed(seed, 0)[0] % (2**31 - 1), tf.int32)
        elif self.seed is not None:
            base = tf.constant(self.seed, tf.int32)
        else:
            base = tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int32)

        def uniform(shape, i, k):
            return tf.random.stateless_uniform(shape, tf.stack([base, i * uses + k]))

        def signs(shape, i, k):
            return tf.where(uniform(shape, i, k) < 0.5, -1.0, 1.0)

        return uniform, signs

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        if self.norm == "l2":
            return self._perturb_l2(model_fn, images, labels, seed)
        x = images
        n = tf.shape(x)[0]
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        uniform, signs = self._draws(seed)

        # Initialisation: vertical stripes of +-epsilon.
        adv = tf.clip_by_value(x + self.epsilon * signs([n, 1, w, c], -1, 0),
                               self.clip_min, self.clip_max)
        rows = tf.range(h)[None, :]
        cols = tf.range(w)[None, :]

        def propose(i, adv):
            p = self._p(i)
            s = tf.maximum(tf.cast(tf.round(tf.sqrt(p * h * w)), tf.int32), 1)
            s = tf.minimum(s, min(h, w))
            top = tf.cast(uniform([n], i, 1) * tf.cast(h - s + 1, tf.float32), tf.int32)[:, None]
            left = tf.cast(uniform([n], i, 2) * tf.cast(w - s + 1, tf.float32), tf.int32)[:, None]
            in_h = tf.logical_and(rows >= top, rows < top + s)
            in_w = tf.logical_and(cols >= left, cols < left + s)
            window = tf.logical_and(in_h[:, :, None, None], in_w[:, None, :, None])
            delta = tf.where(window, self.epsilon * signs([n, 1, 1, c], i, 3), adv - x)
            return tf.clip_by_value(x + delta, self.clip_min, self.clip_max)

        return self._search(model_fn, x, labels, adv, propose)

    def _search(self, model_fn, x, labels, adv, propose):
        """The random search from ``adv``: ``propose(i, adv)`` is iteration i's
        candidate; only images not yet fooled move, and a candidate is kept
        when it lowers the margin."""
        margin = _margin(model_fn(adv), labels)

        def body(i, adv, margin):
            cand = propose(i, adv)
            cand_margin = _margin(model_fn(cand), labels)
            accept = tf.logical_and(margin > 0, cand_margin < margin)
            adv = tf.where(_expand(accept, x), cand, adv)
            margin = tf.where(accept, cand_margin, margin)
            return i + 1, adv, margin

        def more(i, adv, margin):
            # Once no image is left unfooled nothing moves again: stop there.
            if not self._stop_when_all_broken:
                return i < self.queries - 1
            return tf.logical_and(i < self.queries - 1, tf.reduce_any(margin > 0))

        _, adv, _ = tf.while_loop(more, body, (tf.constant(0), adv, margin))
        return tf.stop_gradient(adv)

    def _l2_windows(self, h, w):
        """The L2 update's window side per schedule step (the reference's
        ``max(round(sqrt(p h w)), 3)``, made odd, at most the image side) and
        each side's pattern, zero-padded to the largest side."""
        sides = []
        for m in range(len(_P_BOUNDS) + 1):
            s = max(int(round(np.sqrt(self.p_init / 2**m * h * w))), 3)
            sides.append(min(s + 1 - s % 2, h, w))
        big = max(sides)
        pads = np.zeros((len(sides), big, big), np.float32)
        for m, s in enumerate(sides):
            pads[m, :s, :s] = pseudo_gaussian(s)
        return tf.constant(sides, tf.int32), tf.constant(pads.reshape(len(sides), -1)), big

    def _l2_start(self, x, signs, uniform):
        """The reference's L2 start: a grid of (h // 5)-sided windows, each the
        pattern with a random sign per image and channel (and a random
        orientation), scaled to the sphere of radius epsilon."""
        n = tf.shape(x)[0]
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        side = max(h // 5, 1)
        start = max((h - side * 5) // 2, 0)
        pattern = tf.constant(pseudo_gaussian(side).reshape(-1), tf.float32)

        def axis(length):
            r = tf.range(length) - start
            count = length // side
            inside = tf.logical_and(r >= 0, r < count * side)
            return tf.clip_by_value(r // side, 0, count - 1), r % side, inside, count

        cell_r, li, in_r, count_r = axis(h)
        cell_c, lj, in_c, count_c = axis(w)
        sign = signs([n, count_r, count_c, c], -1, 0)
        flip = uniform([n, count_r, count_c], -1, 1) < 0.5
        sign = tf.gather(tf.gather(sign, cell_r, axis=1), cell_c, axis=2)
        flip = tf.gather(tf.gather(flip, cell_r, axis=1), cell_c, axis=2)
        idx = tf.where(flip, lj[None, None, :] * side + li[None, :, None],
                       li[None, :, None] * side + lj[None, None, :])
        inside = tf.cast(tf.logical_and(in_r[:, None], in_c[None, :]), tf.float32)
        delta = (tf.gather(pattern, idx) * inside)[..., None] * sign
        return self._on_sphere(x, delta)

    def _on_sphere(self, x, delta):
        norm = _expand(_per_example_norm(delta, "l2"), x)
        return tf.clip_by_value(x + delta / (norm + 1e-12) * self.epsilon,
                                self.clip_min, self.clip_max)

    def _perturb_l2(self, model_fn, images, labels, seed):
        x = images
        n = tf.shape(x)[0]
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        uniform, signs = self._draws(seed, uses=8)
        sides, patterns, big = self._l2_windows(h, w)
        adv = self._l2_start(x, signs, uniform)
        rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]

        def window(s, i, k):
            """Per image: the window's mask [n, h, w, 1] and local (row, col)."""
            top = tf.cast(uniform([n], i, k) * tf.cast(h - s + 1, tf.float32), tf.int32)
            left = tf.cast(uniform([n], i, k + 1) * tf.cast(w - s + 1, tf.float32), tf.int32)
            li, lj = rows - top[:, None], cols - left[:, None]
            in_r, in_c = tf.logical_and(li >= 0, li < s), tf.logical_and(lj >= 0, lj < s)
            mask = tf.cast(tf.logical_and(in_r[:, :, None], in_c[:, None, :]), tf.float32)
            return mask[..., None], tf.clip_by_value(li, 0, s - 1), tf.clip_by_value(lj, 0, s - 1)

        def propose(i, adv):
            m = self._halvings(i)
            s = sides[m]
            delta = adv - x
            m1, li, lj = window(s, i, 0)
            m2, _, _ = window(s, i, 2)
            # The pattern in window 1, in a random orientation per image.
            flip = (uniform([n], i, 4) < 0.5)[:, None, None]
            idx = tf.where(flip, lj[:, None, :] * big + li[:, :, None],
                           li[:, :, None] * big + lj[:, None, :])
            fresh = tf.gather(patterns[m], idx)[..., None] * m1 * signs([n, 1, 1, c], i, 5)
            # Window 1's old content, unit norm per channel, plus the pattern;
            # rescaled so that windows 1 and 2 together keep their mass plus
            # whatever the image's budget has left (window 2 is emptied).
            sq = tf.square(delta)
            old = delta * m1 / (tf.sqrt(tf.reduce_sum(sq * m1, [1, 2], keepdims=True)) + 1e-12)
            new = fresh + old
            budget = (tf.maximum(self.epsilon**2 - tf.reduce_sum(sq, [1, 2, 3], keepdims=True), 0.0)
                      / c + tf.reduce_sum(sq * tf.maximum(m1, m2), [1, 2, 3], keepdims=True))
            new = new / (tf.sqrt(tf.reduce_sum(tf.square(new), [1, 2], keepdims=True)) + 1e-12)
            new = new * tf.sqrt(budget)
            delta = tf.where(m1 > 0, new, delta * (1.0 - m2))
            return self._on_sphere(x, delta)

        return self._search(model_fn, x, labels, adv, propose)
