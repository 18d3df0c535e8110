"""The one registry of attacks: every attack name is defined here, once.

Two ways to ask for an attack, both answered by this table:

* a **name at an epsilon** -- ``get("pgd-20", epsilon=8/255)`` -- as
  evaluation, the zoo, ``advscale eval --attacks`` and ``reproduce`` use;
* a **spec** -- ``get({"name": "pgd", "epsilon": 0.1, "steps": 7})`` -- a
  constructor and its arguments, as a training config writes its attacker.

Names (epsilon in [0, 1] pixel units, L-inf unless the name ends in -l2):

=================  ==========================================================
``pgd-K[-rR]``      untargeted PGD, K steps of 2.5 epsilon / K, random start,
                    R restarts (Madry et al.; the step makes K steps able to
                    cross the ball 2.5 times)
``paper-pgd-K``     the paper's targeted PGD toward a random wrong class, step
                    1/255 scaled by epsilon / (16/255), 1.6/255 for K = 10;
                    ``paper-pgd-K1-K2-...`` (no K = 10: its step differs): one
                    trajectory of the longest, read at each K (an evaluation's
                    ``after_each``, keys ``step-K``), each what ``paper-pgd-K``
                    given the same seed gives
``fgsm``            one signed step of epsilon from the image
``apgd-ce``         APGD, cross-entropy, 100 iterations (``apgd-ce-l2``)
``apgd-dlr``        APGD, DLR loss, 100 iterations (``apgd-dlr-l2``)
``apgd-t``          APGD-T, targeted DLR, 9 targets x 100 iterations (``apgd-t-l2``)
``fab-t``           FAB-T, 9 targets x 100 iterations (``fab-t-l2``)
``square[-Q]``      Square, Q queries (1,000 by default; ``square-Q-l2``)
``autoattack``      AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square-5000;
                    ``autoattack-l2``)
``noise``           random signs of size epsilon (the baseline any attack must beat;
                    ``noise-l2``: a random direction of L2 norm epsilon)
=================  ==========================================================
"""

import difflib

from tf_advscale.attacks.apgd import APGD
from tf_advscale.attacks.autoattack import AutoAttack
from tf_advscale.attacks.base import FGSM, PGD, Attack, NoAttack, UniformNoise, fgsm_rs, n_fgsm, paper_pgd
from tf_advscale.attacks.fab import FAB
from tf_advscale.attacks.square import Square

# name -> (maker(args, epsilon, num_classes), the form of the name). ``args``:
# the name's dash-separated parts after the name, with a trailing "l2" removed.
NAMES = {}
# spec name -> constructor taking keyword arguments (training configs).
SPECS = {"none": NoAttack, "pgd": PGD, "fgsm": FGSM, "fgsm_rs": fgsm_rs, "n_fgsm": n_fgsm,
         "paper_pgd": paper_pgd, "apgd": APGD, "fab": FAB, "square": Square,
         "autoattack": AutoAttack, "noise": UniformNoise}


def register_name(name, form):
    """Decorator: ``fn(args, epsilon, num_classes, norm) -> Attack`` answers ``name``."""

    def wrap(fn):
        if name in NAMES:
            raise ValueError(f"attack name {name!r} is already registered")
        NAMES[name] = (fn, form)
        return fn

    return wrap


def _no_args(args, name):
    if args:
        raise ValueError(f"{name} takes no arguments")


@register_name("pgd", "pgd-K[-rR]")
def _pgd(args, epsilon, num_classes, norm):
    steps = int(args[0])
    restarts = int(args[1][1:]) if len(args) > 1 and args[1].startswith("r") else 1
    if len(args) > 2 or (len(args) == 2 and not args[1].startswith("r")):
        raise ValueError("expected pgd-K or pgd-K-rR")
    return PGD(epsilon, pgd_step(epsilon, steps), steps, restarts=restarts, norm=norm)


def pgd_step(epsilon, steps):
    """The step size of ``pgd-K`` at ``epsilon`` (reports print it beside the name)."""
    return 2.5 * epsilon / steps


@register_name("paper-pgd", "paper-pgd-K[-K2-...]")
def _paper_pgd(args, epsilon, num_classes, norm):
    ks = [int(a) for a in args]
    *checkpoints, steps = ks
    if checkpoints and 10 in ks:
        raise ValueError("paper-pgd-10 steps by 1.6/255, the others by 1/255, so it cannot "
                         "share their trajectory; name it on its own")
    if ks != sorted(set(ks)):
        raise ValueError(f"the step counts must increase, got {ks}")
    base = (1.6 if steps == 10 else 1.0) / 255 * epsilon / (16 / 255)
    return PGD(epsilon, base, steps, targeted=True, num_classes=num_classes, norm=norm,
               checkpoints=tuple(checkpoints))


@register_name("fgsm", "fgsm")
def _fgsm(args, epsilon, num_classes, norm):
    _no_args(args, "fgsm")
    return FGSM(epsilon, norm=norm)


def _apgd(loss):
    def make(args, epsilon, num_classes, norm):
        _no_args(args, f"apgd-{loss}")
        kind = {"ce": "ce", "dlr": "dlr", "t": "dlr_targeted"}[loss]
        return APGD(epsilon, 100, norm=norm, loss=kind)
    return make


for _loss in ("ce", "dlr", "t"):
    register_name(f"apgd-{_loss}", f"apgd-{_loss}[-l2]")(_apgd(_loss))


@register_name("fab-t", "fab-t[-l2]")
def _fab(args, epsilon, num_classes, norm):
    _no_args(args, "fab-t")
    return FAB(epsilon, 100, norm=norm)


@register_name("square", "square[-Q][-l2]")
def _square(args, epsilon, num_classes, norm):
    if len(args) > 1:
        raise ValueError(f"square takes at most one argument (queries), got {args}")
    return Square(epsilon, int(args[0]) if args else 1000, norm=norm)


@register_name("autoattack", "autoattack[-l2]")
def _autoattack(args, epsilon, num_classes, norm):
    _no_args(args, "autoattack")
    k = 9 if num_classes is None else min(9, num_classes - 1)
    return AutoAttack(epsilon, norm=norm, n_target_classes=k)


@register_name("noise", "noise[-l2]")
def _noise(args, epsilon, num_classes, norm):
    _no_args(args, "noise")
    return UniformNoise(epsilon, norm=norm)


def _split(name):
    """``"apgd-t-l2"`` -> ("apgd-t", [], "l2"); ``"pgd-20-r3"`` -> ("pgd", ["20", "r3"], "linf")."""
    parts = str(name).lower().split("-")
    norm = "linf"
    if len(parts) > 1 and parts[-1] == "l2":
        parts, norm = parts[:-1], "l2"
    for n in (3, 2, 1):  # the longest registered prefix wins ("paper-pgd" over "pgd")
        key = "-".join(parts[:n])
        if len(parts) >= n and key in NAMES:
            return key, parts[n:], norm
    return None, parts, norm


def make(name, epsilon, num_classes=None):
    """The attack called ``name`` at ``epsilon`` (see the module docstring)."""
    if isinstance(name, Attack):
        return name
    key, args, norm = _split(name)
    known = ", ".join(form for _, form in NAMES.values())
    if key is None:
        close = difflib.get_close_matches(str(name).lower(), [f for _, f in NAMES.values()], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown attack name {name!r}.{hint} Known: {known}")
    fn, form = NAMES[key]
    try:
        return fn(args, epsilon, num_classes, norm)
    except (IndexError, TypeError) as e:
        raise ValueError(f"Bad attack name {name!r}: expected {form} ({e})") from None
    except ValueError as e:
        # An attack's own check (an epsilon of 8 meant as 8/255) is the message to show.
        if "Received" in str(e):
            raise
        raise ValueError(f"Bad attack name {name!r}: expected {form} ({e})") from None


def from_spec(spec):
    """An attack from a spec dict ``{"name": "pgd", ...}``, a name with an
    epsilon (``{"name": "pgd-20", "epsilon": 8/255}``), an Attack, or None
    (no attack)."""
    if spec is None:
        return NoAttack()
    if isinstance(spec, Attack):
        return spec
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"An attack spec is a dict with a 'name'. Received: {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    if name not in SPECS and _split(name)[0] is not None:
        extra = set(spec) - {"epsilon", "num_classes"}
        if "epsilon" not in spec or extra:
            raise ValueError(f"An attack given by the name {name!r} takes only 'epsilon' "
                             f"(required) and 'num_classes'. Received: {spec}")
        return make(name, spec["epsilon"], spec.get("num_classes"))
    if name not in SPECS:
        raise ValueError(f"Unknown attack: expected one of {sorted(SPECS)} or a name such as "
                         f"'pgd-20'. Received: name={name!r}")
    try:
        return SPECS[name](**spec)
    except TypeError as e:
        raise ValueError(f"Bad arguments for attack {name!r}: {e}. Received: {spec}") from None


def get(name_or_spec, epsilon=None, num_classes=None):
    """``make`` for a name, ``from_spec`` for a spec, None, or an Attack."""
    if isinstance(name_or_spec, str):
        if epsilon is None:
            raise ValueError(f"Attack {name_or_spec!r} needs an epsilon")
        return make(name_or_spec, epsilon, num_classes)
    return from_spec(name_or_spec)
