"""Attacks behind one interface: ``attack(model_fn, images, labels, target=None, seed=None)``."""

from tf_advscale.attacks.base import (FGSM, PGD, Attack, NoAttack, fgsm_rs, fold_seed, from_spec,
                                      n_fgsm, paper_pgd, random_targets, register_attack)
from tf_advscale.attacks.apgd import APGD, dlr_loss, dlr_targeted_loss
from tf_advscale.attacks.square import Square
