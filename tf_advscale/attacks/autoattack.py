"""AutoAttack, standard version (Croce & Hein, ICML 2020), in TensorFlow.

Four attacks in order, each run only on the images that every earlier one
left correctly classified, as the reference implementation does:

1. APGD-CE, 100 iterations, 1 run;
2. APGD-T (targeted DLR), the 9 most likely wrong classes, 100 iterations each;
3. FAB-T, the same 9 targets, 100 iterations each;
4. Square, 5,000 queries.

Threat models L-inf and L2 (every attack in its version for the norm).

An image is robust if it survives all four: the per-example worst case.
``stages`` also reports which images were still robust after each attack,
which is how AutoAttack's log reads (robust accuracy after APGD-CE, after
APGD-T, ...).
"""

import tensorflow as tf

from tf_advscale.attacks.apgd import APGD
from tf_advscale.attacks.base import (NORMS, Attack, _check_number, fold_seed, on_subset,
                                      register_attack)
from tf_advscale.attacks.fab import FAB
from tf_advscale.attacks.square import Square

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")


@register_attack
class AutoAttack(Attack):
    """AutoAttack's standard version at ``epsilon`` (see ``stages``).

    Args:
        epsilon: threat radius in [0, 1] pixel units (L2: of the whole
            image's perturbation, 0.5 on CIFAR-10 in RobustBench).
        norm: ``"linf"`` or ``"l2"``.
        n_target_classes: targets of APGD-T and FAB-T (9; fewer when the
            model has fewer than 10 classes).
        seed: seed of the random draws when the call passes none.
    """

    def __init__(self, epsilon=8 / 255, norm="linf", n_target_classes=9, seed=None):
        _check_number("epsilon", epsilon, 0.0, None, inclusive_low=False)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}. Received: norm={norm!r}")
        self.epsilon = float(epsilon)
        self.norm = norm
        self.n_target_classes = n_target_classes
        self.seed = seed

    def get_config(self):
        return {"epsilon": self.epsilon, "norm": self.norm,
                "n_target_classes": self.n_target_classes, "seed": self.seed}

    def attacks(self):
        """(name, attack) in AutoAttack's order, with its published settings."""
        eps, norm, k = self.epsilon, self.norm, self.n_target_classes
        return [
            ("apgd-ce", APGD(eps, 100, norm=norm, loss="ce", restarts=1, seed=self.seed)),
            ("apgd-t", APGD(eps, 100, norm=norm, loss="dlr_targeted", n_target_classes=k,
                            seed=self.seed)),
            ("fab-t", FAB(eps, 100, norm=norm, n_target_classes=k, seed=self.seed)),
            ("square", Square(eps, 5000, p_init=0.8, seed=self.seed, norm=norm)),
        ]

    def stage_names(self):
        return tuple(name for name, _ in self.attacks())

    def stages(self, model_fn, images, labels, seed=None):
        """Runs the four attacks; returns (adversarial images, {name: robust
        after that attack}), the masks cumulative and in AutoAttack's order."""
        x = images
        robust = tf.equal(tf.argmax(model_fn(x), -1, output_type=tf.int32), labels)
        adv = x
        after = {}
        for i, (name, attack) in enumerate(self.attacks()):
            sub_seed = None if seed is None else fold_seed(seed, i)

            def run(xs, ys, attack=attack, sub_seed=sub_seed):
                found = attack(model_fn, xs, ys, seed=sub_seed)
                return found, tf.equal(tf.argmax(model_fn(found), -1, output_type=tf.int32), ys)

            adv, ok = on_subset(robust, run, adv, labels)
            robust = tf.logical_and(robust, ok)
            after[name] = robust
        return tf.stop_gradient(adv), after

    def perturb(self, model_fn, images, labels, target=None, seed=None):
        return self.stages(model_fn, images, labels, seed)[0]
