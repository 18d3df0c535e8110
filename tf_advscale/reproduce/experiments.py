"""The experiments: each a function of a ``Plan`` that trains and evaluates
the runs it needs and returns its rows, findings, table and plot specs.
``experiment`` registers them in ``EXPERIMENTS``, in the order
``advscale reproduce all`` runs them and the report lists them."""

import json
import os

import numpy as np

from tf_advscale.reproduce import plots
from tf_advscale.reproduce.diagnosis import ROUTES, _layers_of_seed
from tf_advscale.reproduce.paper import PAPER
from tf_advscale.reproduce.plan import Eval, Run, accuracies, over_seeds
from tf_advscale.reproduce.stats import (_crossing_verdict, _num, _percent, _spread, _table,
                                         fmt, stat, verdict)


# name -> function(plan) -> result, in the order of definition below.
EXPERIMENTS = {}
# Experiments whose work does not all go through ``plan.evaluate_run``, so
# that ``advscale reproduce plan`` cannot list it: name -> what they do.
UNPLANNED = {}


def experiment(name, unplanned=None):
    """Registers the decorated function as the experiment ``name``;
    ``unplanned``: what it computes outside ``evaluate_run``, if anything."""
    def register(fn):
        if name in EXPERIMENTS:
            raise ValueError(f"Experiment {name!r} is already registered "
                             f"(by {EXPERIMENTS[name].__name__})")
        EXPERIMENTS[name] = fn
        if unplanned:
            UNPLANNED[name] = unplanned
        return fn
    return register


def _main_eval(plan, route=None, bn="moving"):
    return Eval(attacks=(plan.eval["attack"],), route=route, bn=bn)


def _autoattack(plan, run, route=None):
    """AutoAttack accuracy (%) of ``run`` over seeds, on the scale's
    ``eval.autoattack_n`` seeded test images; None where the scale does not
    run it."""
    n = plan.eval.get("autoattack_n")
    if not n:
        return None
    return stat(over_seeds(plan, run, Eval(attacks=("autoattack",), route=route, n=n),
                           "autoattack"))


def _autoattack_finding(claim, first, second, n):
    """A claim on ``first`` minus ``second`` under AutoAttack (stats in %),
    which the paper (2020) predates."""
    effect = first["mean"] - second["mean"]
    return {"claim": claim, "paper": "not in the paper (AutoAttack came later)",
            "ours": f"{effect:+.1f} ({fmt(first)} vs {fmt(second)}, AutoAttack, {n:,} images)",
            "verdict": verdict(effect, _spread(first, second))}


def _aa_header(plan):
    return f"AutoAttack ({plan.eval['autoattack_n']:,} images)"


@experiment("clean_portion")
def exp_clean_portion(plan):
    a = plan.eval["attack"]
    rows = []
    for p in plan.config["clean_portions"]:
        run = Run(clean_portion=p)
        rows.append({"clean_portion": p, **accuracies(plan, run, _main_eval(plan)),
                     "autoattack": _autoattack(plan, run),
                     "paper_pgd2000": PAPER["clean_portion"].get(p)})
    first, last = rows[0], rows[-1]
    effect = first["robust"]["mean"] - last["robust"]["mean"]
    paper = PAPER["clean_portion"][0.0] - PAPER["clean_portion"][1.0]
    finding = {
        "claim": "Removing the clean images from a one-BN mixture raises robustness "
                 f"(robust accuracy at {100 * first['clean_portion']:.0f}% clean minus at "
                 f"{100 * last['clean_portion']:.0f}% clean)",
        "paper": f"+{paper:.1f} (39.2 vs 20.9, targeted PGD-2000)",
        "ours": f"{effect:+.1f} ({fmt(first['robust'])} vs {fmt(last['robust'])}, {a})",
        "verdict": verdict(effect, _spread(first["robust"], last["robust"]), paper,
                           PAPER["clean_portion"][1.0], last["robust"]["mean"])}
    findings, aa = [finding], first["autoattack"] is not None
    if aa:
        findings.append(_autoattack_finding(
            "Under AutoAttack too, removing the clean images from a one-BN mixture raises "
            f"robustness (at {100 * first['clean_portion']:.0f}% clean minus at "
            f"{100 * last['clean_portion']:.0f}% clean)",
            first["autoattack"], last["autoattack"], plan.eval["autoattack_n"]))
    table = _table(["clean portion", "clean", f"{a}"] + ([_aa_header(plan)] if aa else [])
                   + ["paper PGD-2000"],
                   [[f"{100 * r['clean_portion']:.0f}%", fmt(r["clean"]), fmt(r["robust"])]
                    + ([fmt(r["autoattack"])] if aa else []) + [_num(r["paper_pgd2000"])]
                    for r in rows])
    return {"rows": rows, "findings": findings, "table": table,
            "plots": plots.clean_portion(rows, a)}


def curve_attacks(family, steps, epsilon, one_trajectory=False):
    """``{K: (attack name, result key)}`` that measure ``family-K`` for each K
    of ``steps``: one attack per K; or, with ``one_trajectory``, one run of
    the longest for the K whose attacks differ in their step count alone,
    read at each K (``paper-pgd-20-50-...-1000``; paper-pgd-10 steps by
    1.6/255 and untargeted pgd-K by 2.5 epsilon / K, so those run apart)."""
    from tf_advscale.attacks import make
    from tf_advscale.evaluate import stage_key
    groups = {}
    for k in sorted(steps):
        key = k
        if one_trajectory:
            config = make(f"{family}-{k}", epsilon).get_config()
            config.pop("steps", None)
            key = json.dumps(config, sort_keys=True)
        groups.setdefault(key, []).append(k)
    out = {}
    for ks in groups.values():
        name = f"{family}-" + "-".join(str(k) for k in ks)
        if len(ks) == 1:
            out[ks[0]] = (name, name)
        else:
            out.update({k: (name, stage_key(name, st))
                        for k, st in zip(ks, make(name, epsilon).stage_names())})
    return out


@experiment("attack_strength")
def exp_attack_strength(plan):
    e = plan.eval
    steps = list(e["curve_steps"])
    runs = {"adv_only": Run(clean_portion=0.0), "mixed_bn": Run(clean_portion=1.0)}
    curves, findings, lines = {}, [], []
    for family in e["curve_attacks"]:
        measured = curve_attacks(family, steps, plan.epsilon, e.get("curve_one_trajectory", False))
        ev = Eval(attacks=tuple(dict.fromkeys(name for name, _ in measured.values())),
                  n=e["curve_n"])
        curves[family] = {name: {k: stat(over_seeds(plan, run, ev, measured[k][1]))
                                 for k in steps} for name, run in runs.items()}
        c = curves[family]
        lo, hi = steps[0], steps[-1]
        d_lo = c["mixed_bn"][lo]["mean"] - c["adv_only"][lo]["mean"]
        d_hi = c["mixed_bn"][hi]["mean"] - c["adv_only"][hi]["mean"]
        spread_hi = _spread(c["mixed_bn"][hi], c["adv_only"][hi])
        spread_lo = _spread(c["mixed_bn"][lo], c["adv_only"][lo])
        findings.append({
            "claim": f"Under a strong attack ({family}-{hi}), adversarial-only training is "
                     "more robust than 100%-clean mixed training with one BN "
                     "(adversarial-only minus mixed)",
            "paper": "+18.3 at PGD-2000 (39.2 vs 20.9)",
            "ours": f"{-d_hi:+.1f} ({fmt(c['adv_only'][hi])} vs {fmt(c['mixed_bn'][hi])})",
            "verdict": verdict(-d_hi, spread_hi, 18.3, 20.9, c["mixed_bn"][hi]["mean"])})
        findings.append({
            "claim": f"The curves cross ({family}): the mixed model looks more robust at "
                     f"{lo} steps and less at {hi}",
            "paper": "+3.7 at PGD-10, -18.3 at PGD-2000 (mixed minus adversarial-only)",
            "ours": f"{d_lo:+.1f} at {lo} steps, {d_hi:+.1f} at {hi}",
            "verdict": _crossing_verdict(d_lo, spread_lo, d_hi, spread_hi)})
        for name in runs:
            lines.append([f"{name}, {family}"] + [fmt(c[name][k]) for k in steps])
    for name, p in PAPER["attack_strength"].items():
        lines.append([f"paper {name} (PGD-K at {sorted(p)})"] + [_num(p.get(k)) for k in steps])
    table = _table(["training, attack"] + [f"K={k}" for k in steps], lines)
    return {"curves": curves, "findings": findings, "table": table,
            "plots": plots.attack_strength(curves)}


@experiment("mixbn")
def exp_mixbn(plan):
    a = plan.eval["attack"]
    runs = {"one BN": Run(clean_portion=1.0), "MixBN": Run("mixbn", 1.0)}
    if plan.config.get("mixbn_ablations", True):  # off at a scale where they do not fit
        runs.update({"MixBN, separate statistics only": Run("mixbn", 1.0, separate_affine=False),
                     "MixBN, separate affine only": Run("mixbn", 1.0, separate_stats=False)})
    runs.update({"adversarial only": Run(clean_portion=0.0),
                 "standard training": Run(standard=True)})
    rows = {}
    for name, run in runs.items():
        routes = ["adversarial", "clean"] if run.norm == "mixbn" else [None]
        for route in routes:
            label = f"{name}" + (f", {route} route" if route else "")
            if run.standard:
                rows[label] = {"clean": stat(over_seeds(plan, run, Eval(), "clean"))}
            else:
                rows[label] = accuracies(plan, run, _main_eval(plan, route=route))
                rows[label]["autoattack"] = _autoattack(plan, run, route)
    findings, recovered = _mixbn_findings(rows)
    aa = rows["one BN"]["autoattack"] is not None
    if aa:
        findings.append(_autoattack_finding(
            "Under AutoAttack too, MixBN (adversarial route) is more robust than one BN on "
            "the same 100%-clean mixture (MixBN minus one BN)",
            rows["MixBN, adversarial route"]["autoattack"], rows["one BN"]["autoattack"],
            plan.eval["autoattack_n"]))
    table = _table(["model", "clean", a] + ([_aa_header(plan)] if aa else []),
                   [[k, fmt(v["clean"]), fmt(v["robust"]) if "robust" in v else "-"]
                    + ([fmt(v["autoattack"]) if v.get("autoattack") else "-"] if aa else [])
                    for k, v in rows.items()])
    return {"rows": rows, "recovered_fraction": recovered, "findings": findings,
            "table": table, "plots": plots.mixbn(rows, a)}


def _mixbn_findings(rows):
    """The findings of ``exp_mixbn`` from its rows, and the fraction of the
    gap from one BN to adversarial-only training that MixBN recovers."""
    mbn, one, adv = (rows["MixBN, adversarial route"]["robust"], rows["one BN"]["robust"],
                     rows["adversarial only"]["robust"])
    gap = adv["mean"] - one["mean"]
    recovered = (mbn["mean"] - one["mean"]) / gap if abs(gap) > 1e-9 else float("nan")
    p = PAPER["mixbn"]
    paper_recovered = ((p["mbn_adv_robust"] - p["one_bn_robust"])
                       / (p["adv_only_robust"] - p["one_bn_robust"]))
    findings = [{
        "claim": "MixBN (adversarial route) is more robust than one BN on the same "
                 "100%-clean mixture (MixBN minus one BN)",
        "paper": f"+{p['mbn_adv_robust'] - p['one_bn_robust']:.1f} (38.3 vs 20.9); recovers "
                 f"{paper_recovered:.0%} of the gap to adversarial-only",
        "ours": f"{mbn['mean'] - one['mean']:+.1f} ({fmt(mbn)} vs {fmt(one)}); recovers "
                f"{recovered:.0%} of the gap to adversarial-only ({fmt(adv)})",
        "verdict": verdict(mbn["mean"] - one["mean"], _spread(mbn, one),
                           p["mbn_adv_robust"] - p["one_bn_robust"], p["one_bn_robust"],
                           one["mean"])}]
    mclean, std = rows["MixBN, clean route"]["clean"], rows["standard training"]["clean"]
    findings.append({
        "claim": "MixBN's clean route keeps the clean accuracy of standard training "
                 "(clean route minus standard training)",
        "paper": f"{p['mbn_clean_clean'] - p['standard_clean']:+.1f} (79.3 vs 78.9)",
        "ours": f"{mclean['mean'] - std['mean']:+.1f} ({fmt(mclean)} vs {fmt(std)})",
        "verdict": ("reproduced in direction"
                    if mclean["mean"] - std["mean"] >= -_spread(mclean, std) - 1.0
                    else "not reproduced") + " (rule: within 1 point plus the spread)"})
    if "MixBN, separate affine only, adversarial route" not in rows:  # no ablations
        return findings, recovered
    s_only = rows["MixBN, separate statistics only, adversarial route"]["robust"]
    a_only = rows["MixBN, separate affine only, adversarial route"]["robust"]
    findings.append({
        "claim": "Later work (Zhang et al. 2024; Rebuffi et al. 2023): separate affine "
                 "parameters matter more than separate statistics (affine-only minus "
                 "statistics-only robustness)",
        "paper": "not in the paper",
        "ours": f"{a_only['mean'] - s_only['mean']:+.1f} ({fmt(a_only)} vs {fmt(s_only)})",
        "verdict": verdict(a_only["mean"] - s_only["mean"], _spread(a_only, s_only))})
    return findings, recovered


@experiment("consistent_bn")
def exp_consistent_bn(plan):
    a = plan.eval["attack"]
    runs = {"mixed 100%, one BN": Run(clean_portion=1.0),
            "mixed 100%, one BN, attack with training-mode BN": Run(clean_portion=1.0,
                                                                   attack_bn="train"),
            "adversarial only": Run(clean_portion=0.0),
            "adversarial only, attack with training-mode BN": Run(clean_portion=0.0,
                                                                 attack_bn="train")}
    rows = {}
    for name, run in runs.items():
        for bn in ("moving", "batch"):
            rows[f"{name}; test BN: {bn} statistics"] = accuracies(plan, run,
                                                                   _main_eval(plan, bn=bn))
    key = "mixed 100%, one BN; test BN: {} statistics"
    moving, batch = rows[key.format("moving")]["robust"], rows[key.format("batch")]["robust"]
    train_mode = rows["mixed 100%, one BN, attack with training-mode BN; test BN: moving "
                      "statistics"]["robust"]
    findings = [{
        "claim": "Batch statistics at test time (BN consistent between training and "
                 "testing) raise the robustness of the one-BN mixed model (batch minus moving)",
        "paper": "direction only; no number published",
        "ours": f"{batch['mean'] - moving['mean']:+.1f} ({fmt(batch)} vs {fmt(moving)})",
        "verdict": verdict(batch["mean"] - moving["mean"], _spread(batch, moving))}, {
        "claim": "Generating the training attack with BN in training mode (the same mode as "
                 "the weight update) raises the robustness of the one-BN mixed model",
        "paper": "direction only; no number published",
        "ours": f"{train_mode['mean'] - moving['mean']:+.1f} ({fmt(train_mode)} vs "
                f"{fmt(moving)})",
        "verdict": verdict(train_mode["mean"] - moving["mean"], _spread(train_mode, moving))}]
    table = _table(["model; test-time BN", "clean", a],
                   [[k, fmt(v["clean"]), fmt(v["robust"])] for k, v in rows.items()])
    plot = {"kind": "bars", "ylabel": "accuracy (%)",
            "groups": {k: {"clean": v["clean"], a: v["robust"]} for k, v in rows.items()}}
    return {"rows": rows, "findings": findings, "table": table,
            "plots": {"consistent_bn": plot}}


@experiment("norms")
def exp_norms(plan):
    a = plan.eval["attack"]
    rows, gaps = {}, {}
    for norm in ("bn", "gn", "ln"):
        for p in (0.0, 1.0):
            run = Run(norm, p)
            rows[f"{norm}, {100 * p:.0f}% clean"] = accuracies(plan, run, _main_eval(plan))
        r0, r1 = rows[f"{norm}, 0% clean"]["robust"], rows[f"{norm}, 100% clean"]["robust"]
        gaps[norm] = {"gap": round(r0["mean"] - r1["mean"], 2), "spread": _spread(r0, r1)}
    findings = []
    for norm, name in (("gn", "group norm"), ("ln", "layer norm")):
        d = gaps["bn"]["gap"] - gaps[norm]["gap"]
        findings.append({
            "claim": f"{name} loses less robustness than BN when clean images are mixed in "
                     f"(BN's loss minus {name}'s; loss = robust at 0% minus at 100% clean)",
            "paper": "direction only for group norm (no number recovered); layer norm not "
                     "in the paper",
            "ours": f"{d:+.1f} (BN loses {gaps['bn']['gap']:+.1f}, {name} "
                    f"{gaps[norm]['gap']:+.1f})",
            "verdict": verdict(d, gaps["bn"]["spread"] + gaps[norm]["spread"])})
    table = _table(["norm, clean portion", "clean", a],
                   [[k, fmt(v["clean"]), fmt(v["robust"])] for k, v in rows.items()])
    plot = {"kind": "bars", "ylabel": "accuracy (%)",
            "groups": {k: {"clean": v["clean"], a: v["robust"]} for k, v in rows.items()}}
    return {"rows": rows, "gaps": gaps, "findings": findings, "table": table,
            "plots": {"norms": plot}}


@experiment("alp")
def exp_alp(plan):
    a = plan.eval["attack"]
    runs = {"one BN": Run(clean_portion=1.0), "one BN + ALP": Run(clean_portion=1.0, alp=True),
            "MixBN": Run("mixbn", 1.0), "MixBN + ALP": Run("mixbn", 1.0, alp=True)}
    rows = {}
    for name, run in runs.items():
        rows[name] = accuracies(plan, run, _main_eval(
            plan, route="adversarial" if run.norm == "mixbn" else None))
    p = PAPER["alp"]
    findings = []
    for base, paper_base, paper_alp in (("one BN", p["one_bn"], p["one_bn_alp"]),
                                        ("MixBN", p["mbn"], p["mbn_alp"])):
        r0, r1 = rows[base]["robust"], rows[f"{base} + ALP"]["robust"]
        findings.append({
            "claim": f"ALP (weight {plan.config['alp_weight']}) with {base}: robustness change",
            "paper": f"{paper_alp - paper_base:+.1f} ({paper_alp} vs {paper_base})",
            "ours": f"{r1['mean'] - r0['mean']:+.1f} ({fmt(r1)} vs {fmt(r0)})",
            "verdict": verdict(r1["mean"] - r0["mean"], _spread(r0, r1),
                               paper_alp - paper_base, paper_base, r0["mean"])})
    table = _table(["model (100% clean)", "clean", a],
                   [[k, fmt(v["clean"]), fmt(v["robust"])] for k, v in rows.items()])
    plot = {"kind": "bars", "ylabel": "accuracy (%)",
            "groups": {k: {"clean": v["clean"], a: v["robust"]} for k, v in rows.items()}}
    return {"rows": rows, "findings": findings, "table": table, "plots": {"alp": plot}}


@experiment("depth")
def exp_depth(plan):
    a = plan.eval["attack"]
    depths = list(plan.config["depths"])
    rows = []
    for d in depths:
        adv, std = Run(clean_portion=0.0, depth=d), Run(standard=True, depth=d)
        acc = accuracies(plan, adv, _main_eval(plan))
        rows.append({"depth": d, "adv_robust": acc["robust"], "adv_clean": acc["clean"],
                     "adv_autoattack": _autoattack(plan, adv),
                     "standard_clean": stat(over_seeds(plan, std, Eval(), "clean"))})
    first, last = rows[0], rows[-1]
    gain_r = last["adv_robust"]["mean"] - first["adv_robust"]["mean"]
    gain_c = last["standard_clean"]["mean"] - first["standard_clean"]["mean"]
    p = PAPER["depth"]
    findings = [{
        "claim": f"Robustness of adversarial training rises with depth (depth {depths[-1]} "
                 f"minus depth {depths[0]})",
        "paper": f"+{p['robust'][-1] - p['robust'][0]:.1f} (ResNet-638 vs ResNet-152)",
        "ours": f"{gain_r:+.1f} ({fmt(last['adv_robust'])} vs {fmt(first['adv_robust'])})",
        "verdict": verdict(gain_r, _spread(first["adv_robust"], last["adv_robust"]),
                           p["robust"][-1] - p["robust"][0], p["robust"][0],
                           first["adv_robust"]["mean"])}, {
        "claim": "Adversarial learning gains more from depth than clean learning (robust "
                 "gain minus standard training's clean gain)",
        "paper": f"+{(p['robust'][-1] - p['robust'][0]) - (p['clean'][-1] - p['clean'][0]):.1f}"
                 " (+4.5 robust vs +0.7 clean)",
        "ours": f"{gain_r - gain_c:+.1f} ({gain_r:+.1f} robust vs {gain_c:+.1f} clean)",
        "verdict": verdict(gain_r - gain_c, _spread(first["adv_robust"], last["adv_robust"],
                                                    first["standard_clean"],
                                                    last["standard_clean"]))}]
    aa = first["adv_autoattack"] is not None
    if aa:
        findings.append(_autoattack_finding(
            f"Under AutoAttack too, robustness rises with depth (depth {depths[-1]} minus "
            f"depth {depths[0]})", last["adv_autoattack"], first["adv_autoattack"],
            plan.eval["autoattack_n"]))
    table = _table(["depth", f"adversarial, {a}"]
                   + ([f"adversarial, {_aa_header(plan)}"] if aa else [])
                   + ["adversarial, clean", "standard, clean"],
                   [[r["depth"], fmt(r["adv_robust"])] + ([fmt(r["adv_autoattack"])] if aa else [])
                    + [fmt(r["adv_clean"]), fmt(r["standard_clean"])] for r in rows])
    return {"rows": rows, "findings": findings, "table": table, "plots": plots.depth(rows, a)}


@experiment("diagnosis", unplanned="per-layer statistics of the MixBN runs it trains "
                                   "(the mixbn experiment's)")
def exp_diagnosis(plan):
    n = plan.eval["diagnosis_n"]
    run = Run("mixbn", 1.0)
    per_seed = []
    for seed in plan.seeds:
        per_seed.append(_layers_of_seed(plan, run, seed, n))
    keys = ["moving"] + [f"{r}_route_{k}" for r in ROUTES
                         for k in ("clean_vs_adv", "clean_vs_clean")]
    rows = []
    for i, layer in enumerate(per_seed[0]):
        row = {"index": i, "name": layer["name"]}
        for key in keys:
            row[key] = {"mean_diff": stat([s[i][key][0] for s in per_seed], 4),
                        "log_var_ratio": stat([s[i][key][1] for s in per_seed], 4)}
        rows.append(row)
    findings = []
    for r in ROUTES:
        # Per seed, the average over layers; the effect is over seeds.
        adv = stat([np.mean([l[f"{r}_route_clean_vs_adv"][0] for l in s]) for s in per_seed], 4)
        noise = stat([np.mean([l[f"{r}_route_clean_vs_clean"][0] for l in s]) for s in per_seed],
                     4)
        above = sum(row[f"{r}_route_clean_vs_adv"]["mean_diff"]["mean"]
                    > 2 * row[f"{r}_route_clean_vs_clean"]["mean_diff"]["mean"] for row in rows)
        findings.append({
            "claim": "Two-domain hypothesis: clean and adversarial images have different "
                     f"BN-input statistics ({r} route of a MixBN model: standardized mean "
                     "difference of clean vs adversarial activations minus that of clean vs "
                     "other clean images, averaged over layers)",
            "paper": "qualitative (the hypothesis behind MBN); no number",
            "ours": f"{adv['mean'] - noise['mean']:+.3f} ({adv['mean']:.3f} vs noise floor "
                    f"{noise['mean']:.3f}); above twice the floor in {above} of {len(rows)} "
                    "layers",
            "verdict": verdict(adv["mean"] - noise["mean"], _spread(adv, noise))})
    table = _table(["layer", "moving stats: mean diff", "moving stats: abs log var ratio"]
                   + [f"{r} route: {k}" for r in ROUTES
                      for k in ("clean vs adv", "clean vs clean")],
                   [[f"{r['index']} {r['name']}", fmt(r["moving"]["mean_diff"], 3),
                     fmt(r["moving"]["log_var_ratio"], 3)]
                    + [fmt(r[k]["mean_diff"], 3) for k in keys[1:]] for r in rows])
    plot = {"kind": "lines", "xlabel": "MixBN layer", "ylabel": "standardized mean difference",
            "series": {"moving statistics, clean vs adversarial BN":
                           [(r["index"], r["moving"]["mean_diff"]) for r in rows],
                       **{f"{k.replace('_', ' ')}": [(r["index"], r[k]["mean_diff"])
                                                     for r in rows] for k in keys[1:]}}}
    return {"rows": rows, "findings": findings, "table": table, "plots": {"diagnosis": plot}}


def _depth_search_recipe(t, info):
    """The recipe every depth-search trial trains with, as the published
    search ran it: the training config's attacks, family and learning rate,
    at a constant rate with Nesterov momentum 0.9, one BN, no clean images,
    weight decay 5e-4 and the other trainer keys at their defaults (not the
    training config's schedule, label smoothing or weight decay), so that
    its results reproduce. It is written out here, where it is chosen."""
    import keras

    from tf_advscale import config as config_lib
    return config_lib.merge({
        "attack": t["attack"], "eval_attack": t["eval_attack"], "seed": 0,
        "model": {"family": t["model"].get("family", "cifar"), "norm": "bn"},
        "trainer": {"clean_portion": 0.0, "mixing": "joint", "weight_decay": 5e-4,
                    "jit_compile": "auto", "precision": keras.config.dtype_policy().name},
        "optimizer": {"learning_rate": t["optimizer"]["learning_rate"], "momentum": 0.9,
                      "nesterov": True, "schedule": "constant", "warmup_epochs": 0}})


@experiment("depth_search", unplanned="a keras-tuner search (max_trials x epochs of "
                                      "depth_search), trained outside the runs")
def exp_depth_search(plan):
    from tf_advscale import data as data_lib
    from tf_advscale import tuning
    s = plan.config["depth_search"]
    t = plan.train
    d = t["data"]
    common = dict(source=d.get("source"), path=d.get("path"), batch_size=d["batch_size"])
    # Trials are scored on held-out training images, not on the test set.
    n = data_lib.split_size(d["dataset"], "train", d.get("source"), d.get("path"))
    train_ids, val_ids = data_lib.holdout_ids(n, t["eval"]["val_subset"], s["train_subset"])
    train_ds, info = data_lib.load(d["dataset"], "train", subset=train_ids, seed=0, **common)
    val_ds, _ = data_lib.load(d["dataset"], "train", subset=val_ids,
                              shuffle=False, augment=False, drop_remainder=False, **common)
    import keras
    keras.utils.set_random_seed(0)  # the same trials and initial weights on every run
    hypermodel = tuning.DepthSearch(_depth_search_recipe(t, info), info, depths=s["depths"],
                                    widths=s["widths"])
    tuner = tuning.make_tuner(s["tuner"], hypermodel, max_trials=s["max_trials"],
                              max_epochs=s["epochs"], directory=os.path.join(plan.root, "tuner"),
                              project_name="depth_search")
    tuner.search(train_ds, validation_data=val_ds, epochs=s["epochs"], verbose=2)
    trials = tuning.summarize(tuner)
    best = trials[0] if trials else None
    table = _table(["trial", "depth", "width", "val robust (%)", "val clean (%)", "train s",
                    "params", "img/s"],
                   [[r["trial"], r["depth"], r["width"], _num(_percent(r["val_adv_accuracy"])),
                     _num(_percent(r["val_clean_accuracy"])), _num(r["train_seconds"]),
                     f"{r['params']:,}" if r["params"] is not None else "-",
                     _num(r["images_per_second"])] for r in trials])
    findings = [{
        "claim": f"keras-tuner {s['tuner']} search over depth and width with the robust "
                 f"objective ({s['max_trials']} trials, {s['epochs']} epochs each)",
        "paper": "deeper is more robust (ResNet-638 best)",
        "ours": (f"best: depth {best['depth']}, width {best['width']}, val robust "
                 f"{100 * best['val_adv_accuracy']:.1f}%") if best else "no finished trial",
        "verdict": "search ran (not a test of the paper's claim)"}]
    plot = {"kind": "scatter", "xlabel": "depth", "ylabel": "validation robust accuracy (%)",
            "points": [(r["depth"], 100 * (r["val_adv_accuracy"] or 0), f"w{r['width']}")
                       for r in trials]}
    return {"trials": trials, "findings": findings, "table": table,
            "plots": {"depth_search": plot}, "search": s, "seeds": [0]}
