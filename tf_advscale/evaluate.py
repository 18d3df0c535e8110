"""Robustness evaluation: attacks, per-example worst case, curves, sanity checks.

    report = evaluate(model, dataset="fashion_mnist", n=1000, epsilon=0.1,
                      attacks=["pgd-20", "pgd-100", "apgd-ce", "apgd-t", "square"],
                      workdir="eval/")

* Robust accuracy under an attack counts an example as robust when it is
  classified correctly both clean and under the attack; the **worst case**
  counts it robust only if it survives every attack (per example, not an
  average over attacks), so it is at most the minimum of the attacks.
* Batches are written to ``workdir`` as they finish (atomically); rerunning
  the same evaluation there continues from the saved batches. The random
  seed of each batch depends only on (seed, batch index), so a resumed
  evaluation gives the same numbers as an uninterrupted one.
* Sanity checks flag gradient masking (Carlini et al. 2019; Croce & Hein
  2020): accuracy must not rise with more steps or restarts, a very large
  epsilon must drive accuracy to about 0, the gradient-free attack must not
  beat the white-box ones by a margin, and random noise must be weaker than
  PGD.
"""

import datetime
import fractions
import functools
import hashlib
import json
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

import tf_advscale
from tf_advscale import attacks as attacks_lib
from tf_advscale import data as data_lib
from tf_advscale.files import package_tree, write_json, write_npz
from tf_advscale.layers import mixbn
from tf_advscale.masking import _curve_subset, _curves, _masking_checks, threat_norm
from tf_advscale.models import count_params

DEFAULT_ATTACKS = ("pgd-20", "pgd-100", "apgd-ce", "apgd-t", "square")
STEPS_CURVE = (10, 20, 50, 100, 200, 500, 1000, 2000)


def summary(report):
    """The headline numbers of a report: clean, each attack, worst case, n."""
    return {"clean": report["clean_accuracy"], "worst_case": report["worst_case_accuracy"],
            **{k: v["accuracy"] for k, v in report["attacks"].items()},
            "n": report["data"]["n"]}


def epsilon_fraction(eps):
    """``0.0313725...`` -> ``"8/255"``: epsilons are reported exactly."""
    f = fractions.Fraction(eps).limit_denominator(1000)
    return f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)


def resolve_model(model, route=None):
    """A classifier from a path, an in-memory model or an AdversarialModel."""
    if isinstance(model, str):
        if not os.path.exists(model):
            raise ValueError(f"Model file not found: {model}")
        model = keras.saving.load_model(model, safe_mode=True)
    if hasattr(model, "eval_model_fn") and hasattr(model, "model"):
        model = model.model
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a path or a keras.Model. Received: {model!r}")
    if route is not None and mixbn.mixbn_layers(model):
        mixbn.set_route(model, route)
    return model


# RobustBench's names of the threat models.
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}


def _fingerprint(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _predict(fn, images):
    return tf.argmax(fn(images), -1, output_type=tf.int32)


def _attack_images(attack, fn, images, labels, seed):
    return attack(fn, images, labels, seed=seed)


def _attack_stages(attack, fn, images, labels, seed):
    adv, after = attack.stages(fn, images, labels, seed=seed)
    return adv, [after[k] for k in _stage_names(attack)]


def _stage_names(attack):
    """The stages an attack reports apart (AutoAttack's attacks, a PGD's
    checkpoints; ``Attack.stage_names``), else ()."""
    names = getattr(attack, "stage_names", None)
    return tuple(names()) if names else ()


def stage_key(name, stage):
    """Result key of one stage of an attack: ``"autoattack/apgd-t"``,
    ``"paper-pgd-20-100/step-20"``."""
    return f"{name}/{stage}"


def result_keys(attacks):
    """The per-example results ``run_attacks`` returns for ``{name: attack}``
    besides "clean": each attack's, then each stage's (``stage_key``)."""
    return list(attacks) + [stage_key(name, st) for name, atk in attacks.items()
                            for st in _stage_names(atk)]


@functools.lru_cache(maxsize=None)
def code_identity():
    """The code that computes a result: ``"tf_advscale 0.1.0"``, and in a git
    checkout of the package its source tree (``files.package_tree``). Asked
    of git once per process, at its first evaluation with a work directory:
    the source a process runs is, but for edits made before then, what it
    imported."""
    tree = package_tree()
    return f"tf_advscale {tf_advscale.__version__}" + (f", {tree}" if tree else "")


class _SavedBatches:
    """The finished batches of one evaluation, in ``WORKDIR/batches``; a work
    directory holding another evaluation's batches is refused. Each batch
    records the code that computed it (``code_identity``): a resume by other
    code warns, since the settings' fingerprint cannot see a code change."""

    def __init__(self, workdir, settings, correct_only):
        self.workdir, self.code, self.codes = workdir, code_identity(), set()
        self.dir = os.path.join(workdir, "batches")
        os.makedirs(self.dir, exist_ok=True)
        state_path = os.path.join(workdir, "state.json")
        # Attacking every image or only the clean-correct ones differs where
        # the output depends on the batch; the default keeps older fingerprints.
        fp = _fingerprint({**(settings or {}), **({} if correct_only else {"correct_only": False})})
        if os.path.exists(state_path):
            old = json.load(open(state_path))["fingerprint"]
            if old != fp:
                raise ValueError(f"{workdir} holds batches of a different evaluation "
                                 f"(fingerprint {old}, this one {fp}); use another workdir")
        else:
            with open(state_path + ".tmp", "w") as f:
                json.dump({"fingerprint": fp, "settings": settings}, f, default=str)
            os.replace(state_path + ".tmp", state_path)

    def _path(self, b):
        return os.path.join(self.dir, f"batch_{b:05d}.npz")

    def load(self, b, names, attacks):
        """Batch ``b``'s results and the seconds each attack took then, or None."""
        if not os.path.exists(self._path(b)):
            return None
        with np.load(self._path(b)) as saved:
            result = {k: saved[k] for k in names}
            seconds = {k: float(saved[f"seconds__{k}"]) for k in attacks  # older files: not saved
                       if f"seconds__{k}" in saved.files}
            code = str(saved["code__"]) if "code__" in saved.files else None
        self.codes.add(code)
        return result, seconds

    def save(self, b, result, seconds):
        write_npz(self._path(b), **result, code__=np.str_(self.code),
                  **{f"seconds__{k}": np.float64(v) for k, v in seconds.items()})
        self.codes.add(self.code)

    def warn_if_mixed(self):
        """Warns if the batches of this result were computed by more than one
        version of the package's code."""
        versions = {c or "a version from before batches recorded it" for c in self.codes}
        if len(versions) > 1:
            warnings.warn(f"{self.workdir}: its batches were computed by {len(versions)} versions "
                          f"of the code ({'; '.join(sorted(versions))}) and the result mixes "
                          "them; a fresh workdir gives one version's", stacklevel=3)


class _AnyBatch:
    """``py_fn`` as a ``tf.function`` traced once for every batch size: its
    first ``batch_args`` arguments get a batch dimension of None, the others
    (a seed) keep their shape. The attacks see only the images classified
    correctly, so their batch size changes from batch to batch; with
    ``reduce_retracing`` that cost two traces (the first size, then a relaxed
    one), and tracing AutoAttack takes seconds of CPU (about 11 s for a
    ResNet-20 here). An attack therefore never sees a static batch size."""

    def __init__(self, py_fn, batch_args):
        self.py_fn, self.batch_args, self.traced = py_fn, batch_args, {}

    def __call__(self, *args):
        args = [tf.convert_to_tensor(a) for a in args]
        spec = tuple(tf.TensorSpec(tf.TensorShape([None]).concatenate(a.shape[1:])
                                   if i < self.batch_args else a.shape,
                                   a.dtype) for i, a in enumerate(args))
        if spec not in self.traced:
            self.traced[spec] = tf.function(self.py_fn, input_signature=spec)
        return self.traced[spec](*args)


def _compile(fn, attacks):
    """One function per attack, each traced once (``_AnyBatch``). TensorFlow
    counts traces per code object, and lambdas made in a loop share one, so
    each attack gets its own ``functools.partial``: tracing each once used to
    read as "excessive retracing"."""
    return {name: _AnyBatch(functools.partial(
        _attack_stages if _stage_names(atk) else _attack_images, atk, fn), 2)
        for name, atk in attacks.items()}


def _attack_batch(compiled, stages, predict, xb, yb, seed, b, correct_only):
    """Per-example correctness of one batch, clean and under each attack (and
    after each stage of a composite attack), and each attack's seconds."""
    clean = (predict(xb).numpy() == yb.numpy())
    result = {"clean": clean}
    if correct_only:
        keep = np.flatnonzero(clean)
        xa, ya = tf.gather(xb, keep), tf.gather(yb, keep)
    else:
        keep, xa, ya = slice(None), xb, yb
    seconds = {}
    for i, (name, attack_fn) in enumerate(compiled.items()):
        start = time.time()
        result[name] = np.zeros_like(clean)
        for st in stages[name]:
            result[stage_key(name, st)] = np.zeros_like(clean)
        if len(ya):
            # Stateless draws keyed by (seed, attack, batch): a batch's result
            # does not depend on which batches ran before it in this process.
            adv = attack_fn(xa, ya, tf.constant([seed * 1009 + i, b], tf.int64))
            if stages[name]:
                adv, masks = adv
                for st, mask in zip(stages[name], masks):
                    result[stage_key(name, st)][keep] = clean[keep] & mask.numpy()
            result[name][keep] = clean[keep] & (predict(adv).numpy() == ya.numpy())
        seconds[name] = time.time() - start
    return result, seconds


def _batches(x, y, batch_size):
    """``(images, labels)`` batches of arrays, or of an iterable of batches
    when ``y`` is None; and how many there are (None if unknown)."""
    if y is not None:
        n = (len(x) + batch_size - 1) // batch_size
        return ((x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size])
                for b in range(n)), n
    try:
        n = len(x)
    except TypeError:
        n = None
    return (keras.utils.unpack_x_y_sample_weight(batch)[:2] for batch in x), n


def run_attacks(model, x, y, attacks, batch_size=250, seed=0, workdir=None, settings=None,
                verbose=True, correct_only=True):
    """Per-example correctness: ``{"clean": bool[n], name: bool[n], ...}``, and
    the seconds each attack took.

    The one evaluation function: ``evaluate``, the zoo, ``reproduce`` and the
    final evaluation of ``advscale train`` all count through it. ``x``, ``y``:
    arrays, batched here by ``batch_size``; or ``x`` an iterable of
    ``(images, labels)`` batches (a ``tf.data.Dataset``) and ``y`` None.
    ``model``: a classifier, or an ``AdversarialModel`` (its evaluation
    logits, with float16's gradient scaling).

    An image counts as robust when it is classified correctly both clean and
    attacked, so with ``correct_only`` (the default, as in AutoAttack) the
    attacks run only on the images classified correctly clean: the same
    result for less work. Pass ``correct_only=False`` when the model's output
    for an image depends on the rest of the batch (batch statistics at test
    time).

    With ``workdir``, each finished batch is saved and reused on rerun. The
    returned seconds per attack include the time of batches saved by an
    earlier, interrupted call.
    """
    if hasattr(model, "eval_model_fn"):
        fn = model.eval_model_fn
    else:
        fn = lambda images: model(images, training=False)  # noqa: E731
    compiled = _compile(fn, attacks)
    stages = {name: _stage_names(atk) for name, atk in attacks.items()}
    predict = _AnyBatch(functools.partial(_predict, fn), 1)
    store = _SavedBatches(workdir, settings, correct_only) if workdir else None
    names = ["clean"] + result_keys(attacks)
    out = {k: [] for k in names}
    seconds = {k: 0.0 for k in attacks}
    batches, n_batches = _batches(x, y, batch_size)
    for b, (xb, yb) in enumerate(batches):
        saved = store.load(b, names, attacks) if store else None
        if saved is None:
            xb = tf.cast(xb, tf.float32)
            yb = tf.reshape(tf.cast(yb, tf.int32), [-1])
            result, seconds_b = _attack_batch(compiled, stages, predict, xb, yb, seed, b,
                                              correct_only)
            if store:
                store.save(b, result, seconds_b)
        else:
            result, seconds_b = saved
        for k in names:
            out[k].append(result[k])
        for k, v in seconds_b.items():
            seconds[k] += v
        if verbose:
            accs = ", ".join(f"{k} {np.concatenate(out[k]).mean():.3f}" for k in names)
            print(f"batch {b + 1}/{n_batches or '?'}: {accs}", flush=True)
    if not out["clean"]:
        raise ValueError("run_attacks received no images")
    if store:
        store.warn_if_mixed()
    return {k: np.concatenate(v) for k, v in out.items()}, seconds


def evaluate(model, x=None, y=None, dataset=None, split="test", n=None, ids=None, seed=0,
             source=None, path=None, epsilon=8 / 255, attacks=DEFAULT_ATTACKS,
             steps_curve=None, eps_curve=None, curve_n=None, large_epsilon=None,
             batch_size=250, route="adversarial", workdir=None, name=None, checks=True,
             verbose=True, norm=None):
    """Evaluates ``model`` and returns the report dict (see module doc).

    Data: ``x``/``y`` arrays, or ``dataset``/``split`` with ``n`` images (a
    seeded random subset) or explicit ``ids``.

    ``checks=False`` skips the sanity checks (about 100 PGD steps per image,
    five times a PGD-20 evaluation) for a quick re-measurement of numbers
    already checked; the report then says ``"gradient_masking_suspected":
    None`` (not checked). The attacks' numbers do not depend on it.

    ``norm``: the threat model, ``"linf"`` or ``"l2"``; None: the attacks'
    (names ending in ``-l2`` are L2; L-inf and L2 attacks together are
    refused). The curves and checks use PGD of that norm; the checks' very
    large epsilon (``large_epsilon``) defaults to 0.5 (L-inf) or to the L2 size
    of an L-inf 0.5 perturbation, 0.5 x sqrt(pixels x channels) (L2).
    """
    model_name = name or (os.path.basename(model) if isinstance(model, str) else None)
    model = resolve_model(model, route)
    x, y, data_desc = _evaluation_data(x, y, dataset, split, n, ids, seed, source, path)
    _check_images(x)
    num_classes = int(model.output.shape[-1])
    built = {str(a) if not isinstance(a, attacks_lib.Attack) else repr(a):
             attacks_lib.make(a, epsilon, num_classes) for a in attacks}
    norm = threat_norm(built, norm)
    if large_epsilon is None:
        large_epsilon = 0.5 if norm == "linf" else 0.5 * float(np.sqrt(np.prod(x.shape[1:])))
    settings = {"attacks": {k: repr(v) for k, v in built.items()}, "data": data_desc,
                "epsilon": epsilon, "seed": seed, "batch_size": batch_size, "route": route,
                "seeding": "stateless (seed, attack, batch)"}
    correct, seconds = run_attacks(model, x, y, built, batch_size, seed,
                                   os.path.join(workdir, "main") if workdir else None,
                                   settings, verbose)
    attack_acc = {k: float(correct[k].mean()) for k in built}

    curve_ids, subset = _curve_subset(len(y), curve_n, seed)
    m = len(curve_ids)
    acc_under = functools.partial(_accuracy_under, model, x[curve_ids], y[curve_ids],
                                  batch_size, seed, workdir,
                                  {"data": data_desc, "m": m, "subset": subset, "seed": seed})
    curves, steps_acc = _curves(acc_under, steps_curve, eps_curve, epsilon, m, subset, norm)
    passed = None
    if checks:
        sub_attack_acc = attack_acc if m == len(y) else \
            {k: float(correct[k][curve_ids].mean()) for k in built}
        passed = _masking_checks(acc_under, sub_attack_acc, steps_acc, epsilon, large_epsilon,
                                 norm)

    report = _report(model, model_name, route, data_desc, epsilon, built, correct, seconds,
                     attack_acc, curves, passed, seed, norm)
    if workdir:
        write_report(report, workdir)
    return report


def _evaluation_data(x, y, dataset, split, n, ids, seed, source, path):
    """``(x, y, data description)``: the arrays given, or those read from ``dataset``."""
    if x is None:
        if dataset is None:
            raise ValueError("evaluate needs x and y, or dataset=NAME")
        subset = ids if ids is not None else n
        x, y, info = data_lib.as_numpy(dataset, split, source=source, path=path,
                                       subset=subset, seed=seed)
        data_desc = {"dataset": dataset, "split": split, "source": info["source"],
                     "n": int(len(y)), "ids": info["ids"], "subset_seed": seed}
    else:
        x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
        data_desc = {"dataset": "arrays", "n": int(len(y))}
    return x, y, data_desc


def _accuracy_under(model, x, y, batch_size, seed, workdir, settings, attack_map, sub):
    """``{name: accuracy}`` of ``model`` under each attack of ``attack_map``,
    resumable in ``workdir/sub``."""
    c, _ = run_attacks(model, x, y, attack_map, batch_size, seed,
                       os.path.join(workdir, sub) if workdir else None,
                       {"attacks": {k: repr(v) for k, v in attack_map.items()}, **settings},
                       verbose=False)
    return {k: float(c[k].mean()) for k in attack_map}


def _report(model, model_name, route, data_desc, epsilon, built, correct, seconds, attack_acc,
            curves, passed, seed, norm="linf"):
    """The report dict of an evaluation (see the module doc)."""
    worst = np.logical_and.reduce([correct["clean"]] + [correct[k] for k in built])
    return {
        "model": {"name": model_name or model.name, "route": route if mixbn.mixbn_layers(model) else None,
                  "params": count_params(model)},
        "data": data_desc,
        "threat_model": THREAT_MODELS[norm], "epsilon": epsilon,
        "epsilon_fraction": epsilon_fraction(epsilon),
        "clean_accuracy": float(correct["clean"].mean()),
        "attacks": {k: {"accuracy": attack_acc[k], "config": v.get_config(),
                        "class": type(v).__name__, "seconds": round(seconds.get(k, 0.0), 1),
                        **({"after_each": {st: float(correct[stage_key(k, st)].mean())
                                           for st in _stage_names(v)}}
                           if _stage_names(v) else {})}
                    for k, v in built.items()},
        "worst_case_accuracy": float(worst.mean()),
        "curves": curves,
        "sanity_checks": passed or [],
        "gradient_masking_suspected": None if passed is None else
        any(c["passed"] is False for c in passed),
        "seed": seed,
        "package_version": tf_advscale.__version__,
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "date": datetime.date.today().isoformat(),
        # Fields named as in RobustBench's model info, where they overlap.
        "robustbench": {"name": model_name or model.name, "dataset": data_desc["dataset"],
                        "threat_model": THREAT_MODELS[norm], "eps": epsilon_fraction(epsilon),
                        "clean_acc": f"{100 * float(correct['clean'].mean()):.2f}",
                        "autoattack_acc": next(
                            (f"{100 * attack_acc[k]:.2f}" for k, v in built.items()
                             if isinstance(v, attacks_lib.AutoAttack)), None),
                        "worst_case_acc": f"{100 * float(worst.mean()):.2f}",
                        "n_test_images": data_desc["n"]},
    }


def _check_images(x):
    if x.ndim != 4:
        raise ValueError(f"images must be NHWC (4 dimensions). Received shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or Inf")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"images must be in [0, 1]. Received range [{x.min()}, {x.max()}] "
                         "(0-255 images? divide by 255)")


def markdown(report):
    lines = [f"# Robustness of {report['model']['name']}", "",
             f"{report['data']['dataset']} ({report['data'].get('split', '')}), "
             f"{report['data']['n']} images, "
             f"{'L2' if report.get('threat_model') == 'L2' else 'L-inf'} epsilon "
             f"{report['epsilon_fraction']}"
             + (f", MixBN route {report['model']['route']}" if report['model']['route'] else ""),
             "", "| attack | accuracy (%) |", "|---|---|",
             f"| clean | {100 * report['clean_accuracy']:.2f} |"]
    for k, v in report["attacks"].items():
        lines.append(f"| {k} | {100 * v['accuracy']:.2f} |")
        lines += [f"| {k}: after {st} | {100 * acc:.2f} |"
                  for st, acc in v.get("after_each", {}).items()]
    lines.append(f"| **worst case (per example)** | **{100 * report['worst_case_accuracy']:.2f}** |")
    lines += ["", "## Sanity checks", ""]
    if report["gradient_masking_suspected"] is None:
        lines.append("Not run (`checks=False`): these numbers are not checked for gradient masking.")
    for c in report["sanity_checks"]:
        mark = {True: "x", False: " ", None: "n/a"}[c["passed"]]
        lines.append(f"- [{mark}] {c['check']}: {json.dumps(c['detail'])}")
    if report["gradient_masking_suspected"]:
        lines += ["", "**Warning: a check failed; gradient masking is suspected.**"]
    return "\n".join(lines) + "\n"


def plot_curves(report, workdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for key, xlabel, logx in (("steps", "attack steps", True), ("epsilon", "epsilon", False)):
        curve = report["curves"].get(key)
        if not curve:
            continue
        points = sorted((float(k), 100 * v) for k, v in curve["accuracy"].items())
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(xs, ys, marker="o")
        if logx:
            ax.set_xscale("log")
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{report['model']['name']}: {curve['attack']}, n={curve['n']}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(workdir, f"curve_{key}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(report, workdir):
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "report.json"), report)
    tmp = os.path.join(workdir, "report.md.tmp")
    with open(tmp, "w") as f:
        f.write(markdown(report))
    os.replace(tmp, os.path.join(workdir, "report.md"))
    plot_curves(report, workdir)
