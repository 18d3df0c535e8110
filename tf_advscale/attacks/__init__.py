"""Attacks behind one interface: ``attack(model_fn, images, labels, target=None, seed=None)``.

Every attack name and spec is defined once, in ``registry``: ``make("pgd-20",
epsilon)``, ``from_spec({"name": "pgd", ...})``, ``get(...)`` for either.
"""

from tf_advscale.attacks.base import (FGSM, NORMS, PGD, Attack, NoAttack, UniformNoise, fgsm_rs,
                                      fold_seed, n_fgsm, paper_pgd, random_targets,
                                      register_attack)
from tf_advscale.attacks.apgd import APGD, dlr_loss, dlr_targeted_loss
from tf_advscale.attacks.square import Square
from tf_advscale.attacks.fab import FAB
from tf_advscale.attacks.autoattack import AutoAttack
from tf_advscale.attacks.registry import NAMES, SPECS, from_spec, get, make, pgd_step
