"""``advscale reproduce plan``: what a scale's experiments will compute before
they run. The experiments are run with ``plan.planned`` set, so that
``train`` and ``evaluate_run`` only record what they would do; each run is
then finished, shared with the zoo, partly trained (it resumes) or to train,
and each evaluation done or to do.

Cost is counted in image passes (one forward and backward pass of one
image): a training epoch costs ``steps + 1 + clean_portion`` per training
image under a PGD-``steps`` attack (1 for standard training), plus its
validation; an evaluation ``K`` per image and ``K``-step attack, plus the
clean pass (an upper bound: attacks skip images already misclassified). A
depth-``d`` CIFAR ResNet's pass counts ``(d - 2) / (base - 2)`` of the base
depth's (its convolutions). Hours are at the rate of the runs whose training
time is known (finished, or the zoo's for shared ones) when there are some.
"""

import json
import os
import platform

from tf_advscale.reproduce import share
from tf_advscale.reproduce.experiments import EXPERIMENTS, UNPLANNED


def planned_work(plan, names):
    """``({"runs": {path: config}, "evals": {path: Eval}, "shared_evals":
    {path: source}}, {name: findings})`` of ``names``; the findings are the
    claims each will make, with zeros for numbers. ``shared_evals``: the
    AutoAttack evaluations a zoo entry has made (``share.autoattack``)."""
    plan.planned, findings = {"runs": {}, "evals": {}, "shared_evals": {}}, {}
    try:
        for name in names:
            if name not in UNPLANNED:
                with plan.seeds_of(name):
                    findings[name] = EXPERIMENTS[name](plan)["findings"]
        return plan.planned, findings
    finally:
        plan.planned = None


# AutoAttack per image: APGD-CE's 100 on every image, then about 5,000 pass
# equivalents on each image still robust (APGD-T 9 x 100, FAB-T 9 x 100 with an
# extra forward each, Square 5,000 forwards; measured per image attacked on a
# ResNet-20: 1.09, 1.77 and 2.47 s, results/autoattack_stages_resnet20_pgd3.json),
# counted at the share still robust after APGD-CE that a zoo entry of the same
# recipe but for the seed measured (``_robust_after_apgd_ce``), else at 35% (the
# zoo's robust ResNet-20s: 29-36%).
ROBUST_AFTER_APGD_CE = 0.35


def autoattack_passes(robust_after_apgd_ce=ROBUST_AFTER_APGD_CE):
    return 100 + robust_after_apgd_ce * 5000


def _robust_after_apgd_ce(config, ev):
    """The share of images still robust after AutoAttack's APGD-CE that a zoo
    entry of ``config``'s recipe, or of the same recipe with another seed,
    measured on ``ev.route``; None where no such entry has."""
    from tf_advscale import zoo
    for _, meta, diff in share.compared(config, ignore=("seed",)):
        robust = ((zoo.autoattack_results(meta, ev.route or "default") or {})
                  .get("after_each") or {}).get("apgd-ce")
        if not diff and isinstance(robust, (int, float)):
            return robust
    return None


def _steps(attack, robust=None):
    """Image passes per image of the attack named ``attack``: its steps times
    its runs (restarts, and targets for APGD-T and FAB-T; a trajectory read at
    several K, ``paper-pgd-20-...-1000``, counts its longest); Square's
    queries (forward passes, counted whole); ``autoattack_passes(robust)``
    for AutoAttack."""
    from tf_advscale.attacks import FAB, AutoAttack, Square, make
    a = make(attack, 8 / 255)  # the count does not depend on epsilon
    if isinstance(a, AutoAttack):
        return autoattack_passes(ROBUST_AFTER_APGD_CE if robust is None else robust)
    if isinstance(a, Square):
        return a.queries
    runs = getattr(a, "restarts", 1)
    if isinstance(a, FAB) or getattr(a, "loss", None) == "dlr_targeted":
        runs *= a.n_target_classes
    return getattr(a, "steps", 1) * runs


def train_passes(plan, config):
    """Image passes of one run, in base-depth passes (see the module doc)."""
    d, opt, atk, ev = config["data"], config["optimizer"], config["attack"], config["eval"]
    images = d["train_subset"] or plan.config["datasets"][plan.dataset].get("train_images")
    if not images:
        return None
    per_image = _passes_per_training_image(config)
    check = 1 + (config["eval_attack"] or {}).get("steps", 0)
    validations = -(-opt["epochs"] // ev["val_every"])
    passes = (images * opt["epochs"] * per_image + ev["val_subset"] * check * validations
              + (ev["test_subset"] or d["test_subset"] or 0) * check)
    return passes * _depth_factor(plan, config)


def _depth_factor(plan, config):
    return (config["model"]["depth"] - 2) / (plan.base_depth - 2)


def eval_passes(plan, config, ev):
    """Image passes of one evaluation of a run of ``config``."""
    robust = _robust_after_apgd_ce(config, ev) if "autoattack" in ev.attacks else None
    return ev.n * (1 + sum(_steps(a, robust) for a in ev.attacks)) * _depth_factor(plan, config)


def _status(path, config):
    """(status, training seconds known or None, the hardware they were
    measured on or None) of one run directory."""
    from tf_advscale import zoo
    if os.path.exists(os.path.join(path, "metrics.json")):
        with open(os.path.join(path, "metrics.json")) as f:
            m = json.load(f)
        cpu = f" ({m['cpu']})" if m.get("cpu") else ""
        return "trained", m["train_seconds"], (f"{m['machine']}{cpu}" if m.get("machine")
                                               else None)
    rec = share.record(path)
    if rec:
        return (f"shared with zoo entry {rec['entry']}", rec.get("train_seconds"),
                _entry_hardware(rec["entry"]))
    nearest = share.closest(config)
    name = share.would_link(path, config, nearest)
    if name:
        return (f"will be shared with zoo entry {name}",
                (zoo.info(name).get("training") or {}).get("train_seconds"), _entry_hardware(name))
    name, diff = nearest
    started = os.path.isdir(os.path.join(path, "state"))
    near = f" (closest zoo entry {name} differs at {', '.join(diff[:3])})" if name else ""
    return ("partly trained, resumes" if started else "to train") + near, None, None


def _entry_hardware(name):
    from tf_advscale import zoo
    try:
        return (zoo.info(name).get("training") or {}).get("hardware")
    except zoo.ZooError:
        return None


def measure_rate(plan, steps=3, warmup=1):
    """This machine's image passes/s (the module doc's unit) on the plan's
    base run (``Run()``, its first seed, at the base depth and the config's
    precision): ``steps`` training steps on random images of the data's
    shape, timed after ``warmup`` steps (the first traces the step). Data
    loading is not counted. Runs in a few minutes at most for the small and
    medium scales on a CPU; nothing is written, but the process keeps the
    run's runtime settings (``runner.setup_runtime``: threads, seeds, op
    determinism), as ``advscale reproduce`` would set them anyway."""
    import time

    import numpy as np

    from tf_advscale import config as config_lib
    from tf_advscale import data as data_lib
    from tf_advscale import recipe, runner
    from tf_advscale.reproduce.plan import Run

    if not (isinstance(steps, int) and steps >= 1 and isinstance(warmup, int) and warmup >= 1):
        raise ValueError(f"steps and warmup must be ints >= 1. Received: steps={steps!r}, "
                         f"warmup={warmup!r}")
    config = config_lib.merge(plan.train_config(Run(), plan.seeds[0]))
    dataset = config["data"]["dataset"]
    info = data_lib.dataset_info(dataset) or {}
    if not info.get("classes") or not info.get("shape"):
        raise ValueError(f"Cannot measure a training step of {dataset!r} without reading it: "
                         "its classes and image shape are not known to tf_advscale.data")
    runner.setup_runtime(config)
    batch = config["data"]["batch_size"]
    model = recipe.build(config, {"num_classes": len(info["classes"]), "shape": info["shape"],
                                  "steps_per_epoch": 1000})
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch,) + tuple(info["shape"])).astype("float32")
    y = rng.integers(0, len(info["classes"]), size=(batch,)).astype("int32")
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    return steps * batch * _passes_per_training_image(config) / seconds


def _passes_per_training_image(config):
    """A training step's passes per image: the attack's steps, the weights'
    forward and backward, and the clean images' (``clean_portion``)."""
    atk = config["attack"]
    return atk["steps"] + 1 + config["trainer"]["clean_portion"] if atk else 1


def _amount(passes, rate):
    if passes is None:
        return "size unknown (no train_subset or train_images)"
    text = f"{passes / 1e6:.2f}M passes"
    return text + (f", ~{passes / rate / 3600:.1f} h" if rate else "")


def describe(plan, names, rate_here=None):
    """The lines ``advscale reproduce plan`` prints for experiments ``names``;
    hours at ``rate_here`` (``measure_rate``) when given, else at the rate of
    the runs whose training time is known."""
    work, _ = planned_work(plan, names)
    runs_root = os.path.join(plan.root, "runs")
    runs, timed = [], [0.0, 0.0]  # passes and seconds of runs with a known time
    hardware = []  # where those seconds were measured
    for path, config in sorted(work["runs"].items()):
        status, seconds, where = _status(path, config)
        passes = train_passes(plan, config)
        if seconds and passes:
            timed[0], timed[1] = timed[0] + passes, timed[1] + seconds
            hardware.append(where or "hardware not recorded")
        runs.append((os.path.relpath(path, runs_root), status, passes))
    rate = rate_here or (timed[0] / timed[1] if timed[1] else None)
    todo = [r for r in runs if r[1].startswith(("to train", "partly"))]
    lines = [f"{plan.dataset}, {plan.config['scale']} scale, seeds {plan.seeds}: "
             f"{', '.join(names)}"]
    lines += [f"  ({n} not listed: {UNPLANNED[n]})" for n in names if n in UNPLANNED]
    lines += ["", f"runs ({len(runs)}):"]
    lines += [f"  {key}: {status}" + (f"; {_amount(p, rate)}" if (key, status, p) in todo
                                      else "") for key, status, p in runs]
    evals = []
    for path, ev in sorted(work["evals"].items()):
        config = work["runs"][os.path.dirname(os.path.dirname(path))]
        done = os.path.exists(path)
        evals.append((os.path.relpath(path, runs_root), done, eval_passes(plan, config, ev)))
    lines += ["", f"evaluations ({len(evals) + len(work['shared_evals'])}):"]
    lines += sorted([f"  {key}: " + ("done" if done else f"to do; {_amount(p, rate)}")
                     for key, done, p in evals]
                    + [f"  {os.path.relpath(path, runs_root)}: will be read from {source}"
                       for path, source in work["shared_evals"].items()])
    train_p = sum(p or 0 for _, _, p in todo)
    eval_p = sum(p for _, done, p in evals if not done)
    lines += ["", f"to compute: {len(todo)} runs to train ({_amount(train_p, rate)}), "
              f"{sum(not d for _, d, _ in evals)} evaluations ({_amount(eval_p, rate)})",
              f"at {rate:.0f} image passes/s, measured on this machine "
              f"({platform.machine()} {os.cpu_count()} cpus, {_cpu()}) on the base run's "
              "training step; partly trained runs counted whole, attacks on every image: rough"
              if rate_here else
              f"at {rate:.0f} image passes/s, the rate of the runs whose training time is "
              "known; partly trained runs counted whole, attacks on every image: rough"
              if rate else "no run's training time is known yet: passes only"]
    if rate and not rate_here:
        lines += [f"that rate was measured on {', '.join(sorted(set(hardware)))}; this "
                  f"machine: {platform.machine()} {os.cpu_count()} cpus ({_cpu()}), whose rate "
                  "can differ several-fold (--measure-rate times it here)"]
    return lines


def _cpu():
    from tf_advscale import distribute
    return distribute.describe_cpu()
