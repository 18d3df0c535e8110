"""The curves and gradient-masking checks of an evaluation, and its threat
model: what ``evaluate.evaluate`` runs after the attacks (see its module doc).

The functions here build their attacks by name from the one registry and
take ``acc_under({name: attack}, sub) -> {name: accuracy}`` to run them, so
they hold no evaluation loop of their own.
"""

import numpy as np

from tf_advscale import attacks as attacks_lib
from tf_advscale import data as data_lib


def sanity_checks(attack_acc, steps_curve=None, restarts=None, large_eps_acc=None,
                  noise_acc=None, tolerance=0.01, large_eps_max=0.05, free_margin=0.02,
                  gradient_free=("square",)):
    """The gradient-masking checks; each is ``{check, passed, detail}``.

    ``passed`` is None ("n/a") where the check cannot fail on these numbers:
    an attack at 0% accuracy cannot rise with more steps or restarts, a
    large epsilon cannot push 0% lower, and a gradient-free attack cannot
    beat 0%. A check that cannot fail says nothing, so it is not a pass.
    """
    checks = []

    def check(name, passed, detail, moot):
        checks.append({"check": name, "passed": None if moot else bool(passed),
                       "detail": detail,
                       **({"n/a": "the attacked accuracy is already 0"} if moot else {})})

    if steps_curve:
        steps = sorted(steps_curve)
        rises = [(a, b) for a, b in zip(steps, steps[1:])
                 if steps_curve[b] > steps_curve[a] + tolerance]
        check("accuracy does not rise with more steps", not rises,
              {str(k): steps_curve[k] for k in steps}, max(steps_curve.values()) == 0)
    if restarts:
        one, many = restarts
        check("accuracy does not rise with more restarts", many <= one + tolerance,
              {"1 restart": one, "more restarts": many}, one == 0 and many == 0)
    # Composite attacks (AutoAttack) contain the gradient-free one: they are neither side.
    composite = ("autoattack",)
    white = {k: v for k, v in attack_acc.items()
             if not any(k.startswith(g) for g in gradient_free + composite + ("noise",))}
    free = {k: v for k, v in attack_acc.items() if any(k.startswith(g) for g in gradient_free)}
    if large_eps_acc is not None:
        eps, acc = large_eps_acc
        check("a very large epsilon drives accuracy to about 0", acc <= large_eps_max,
              {"epsilon": eps, "accuracy": acc, "max": large_eps_max},
              bool(white) and min(white.values()) == 0)
    if white and free:
        best_white, best_free = min(white.values()), min(free.values())
        check("the gradient-free attack does not beat the white-box ones",
              best_free >= best_white - free_margin,
              {"best white-box": best_white, "best gradient-free": best_free,
               "margin": free_margin}, best_white == 0)
    if noise_acc is not None and white:
        best_white = min(white.values())
        check("random noise is weaker than PGD", noise_acc > best_white + tolerance,
              {"noise": noise_acc, "best white-box": best_white}, False)
    return checks


def _curve_subset(n, curve_n, seed):
    """``(ids, description)`` of the ``curve_n`` of ``n`` images the curves and
    the masking checks run on, drawn with the seed: test sets stored by class
    would give one class as the first ones."""
    m = min(n, curve_n or n)
    if m < n:  # the seeded draw of ``n=``
        return data_lib._select(n, m, seed), f"drawn with seed {seed}"
    return np.arange(m), "all"


def threat_norm(built, norm=None):
    """The threat model of the attacks ``{name: Attack}``: ``norm`` if given
    (checked against them), else theirs; L-inf and L2 attacks together are
    refused."""
    norms = {getattr(a, "norm", None) for a in built.values()} - {None}
    for a in built.values():  # AutoAttack's stages carry the norm too
        norms |= {getattr(b, "norm", None) for _, b in getattr(a, "attacks", lambda: [])()} - {None}
    if len(norms) > 1:
        raise ValueError(f"One evaluation has one threat model; these attacks mix L-inf and "
                         f"L2: {sorted(built)}")
    if norm is not None:
        if norm not in attacks_lib.NORMS:
            raise ValueError(f"norm must be one of {attacks_lib.NORMS}. Received: norm={norm!r}")
        if norms and norms != {norm}:
            raise ValueError(f"norm={norm!r} but the attacks are {norms.pop()}: {sorted(built)}")
        return norm
    return norms.pop() if norms else "linf"


def _suffix(norm):
    return "-l2" if norm == "l2" else ""


def _curves(acc_under, steps_curve, eps_curve, epsilon, m, subset, norm="linf"):
    """``(curves, steps accuracies)``: the report's accuracy over PGD steps and
    over epsilon, each where asked for (steps accuracies: None if not)."""
    curves = {}
    steps_acc = None
    sfx = _suffix(norm)
    if steps_curve:
        raw = acc_under({str(s): attacks_lib.make(f"pgd-{s}{sfx}", epsilon) for s in steps_curve},
                        "steps")
        steps_acc = {int(k): v for k, v in raw.items()}
        curves["steps"] = {"attack": f"pgd-K{sfx} (step 2.5 eps / K)", "epsilon": epsilon,
                           "n": m, "subset": subset,
                           "accuracy": {str(k): v for k, v in steps_acc.items()}}
    if eps_curve:
        eps_acc = acc_under({str(e): attacks_lib.make(f"pgd-20{sfx}", e) for e in eps_curve}, "eps")
        curves["epsilon"] = {"attack": f"pgd-20{sfx}", "n": m, "subset": subset,
                             "accuracy": {str(k): v for k, v in eps_acc.items()}}
    return curves, steps_acc


def _masking_checks(acc_under, attack_acc, steps_acc, epsilon, large_epsilon, norm="linf"):
    """The ``sanity_checks`` of these accuracies, after the restarts, large-epsilon
    and noise attacks they compare with."""
    sfx = _suffix(norm)
    extra = acc_under({"restarts-1": attacks_lib.make(f"pgd-20{sfx}", epsilon),
                       "restarts-3": attacks_lib.make(f"pgd-20-r3{sfx}", epsilon),
                       "large-eps": attacks_lib.make(f"pgd-20{sfx}", large_epsilon),
                       "noise": attacks_lib.make(f"noise{sfx}", epsilon)}, "checks")
    return sanity_checks(attack_acc, steps_acc, (extra["restarts-1"], extra["restarts-3"]),
                         (large_epsilon, extra["large-eps"]), extra["noise"])
