"""The paper's experiments as configs: ``advscale reproduce EXPERIMENT``.

    advscale reproduce clean_portion --dataset fmnist
    advscale reproduce report                  # writes REPRODUCTION.md

Each experiment needs some trained models ("runs": norm, clean portion,
depth, ALP, ...; one per seed) and some evaluations of them. A run is
trained with ``tf_advscale.runner`` into ``WORKDIR/DATASET/runs/KEY/seedS``
and is shared by every experiment that needs it; an evaluation is written
batch by batch into that run's ``evals/`` folder. Both resume when the
command is rerun after being killed, and give the same numbers (runs are
trained with ``deterministic=True``; attack draws are keyed by seed, attack
and batch). Each experiment then writes ``results.json``, ``table.md`` and
plots into ``RESULTS/DATASET/EXPERIMENT/`` (RESULTS defaults to WORKDIR);
``report`` gathers them into REPRODUCTION.md with the paper's numbers and a
verdict for each finding.

Verdicts (the rule is printed in the report): a finding is *reproduced in
direction* when our effect has the paper's sign and is larger than the
seed spread (sum of the two standard deviations), *in magnitude* when in
addition its relative size is within a factor of two of the paper's,
*not reproduced* when it has the opposite sign beyond the spread, and
*inconclusive* when it is within the spread.
"""

import dataclasses
import json
import os
import time

import numpy as np

EXPERIMENTS = ("clean_portion", "attack_strength", "mixbn", "consistent_bn", "norms", "alp",
               "depth", "diagnosis", "depth_search")

# The paper's numbers (ResNet-152 on ImageNet, targeted PGD-2000; PAPER.md).
PAPER = {
    "clean_portion": {0.0: 39.2, 0.2: 32.1, 0.4: 29.1, 0.6: 15.3, 0.8: 20.3, 1.0: 20.9},
    "attack_strength": {"adv_only": {10: 52.5, 100: 41.7, 500: 39.6, 1000: 38.9, 2000: 39.2},
                        "mixed_bn": {10: 56.2, 100: 35.4, 500: 26.6, 1000: 23.5, 2000: 20.9}},
    "mixbn": {"mbn_adv_robust": 38.3, "adv_only_robust": 39.2, "one_bn_robust": 20.9,
              "mbn_clean_clean": 79.3, "standard_clean": 78.9},
    "alp": {"one_bn": 20.9, "one_bn_alp": 23.0, "mbn": 38.3, "mbn_alp": 35.3},
    "depth": {"depths": [152, 200, 338, 518, 638], "robust": [42.2, 43.8, 44.6, 46.2, 46.7],
              "clean": [79.0, 79.3, 79.5, 79.8, 79.7]},
}


# -- plan -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
    """One training recipe (trained once per seed)."""
    norm: str = "bn"
    clean_portion: float = 0.0
    depth: int = 0                    # 0: the plan's base depth
    standard: bool = False            # no attack: standard training
    alp: bool = False
    attack_bn: str = "inference"
    separate_stats: bool = True       # MixBN ablations
    separate_affine: bool = True

    def key(self, base_depth):
        depth = self.depth or base_depth
        if self.standard:
            return f"standard-d{depth}"
        norm = self.norm
        if norm == "mixbn" and not (self.separate_stats and self.separate_affine):
            norm += "_stats" if self.separate_stats else "_affine"
        key = f"{norm}-c{round(100 * self.clean_portion)}-d{depth}"
        if self.alp:
            key += "-alp"
        if self.attack_bn != "inference":
            key += f"-atkbn_{self.attack_bn}"
        return key


@dataclasses.dataclass(frozen=True)
class Eval:
    """One evaluation of a run: clean accuracy and the listed attacks."""
    attacks: tuple = ()
    route: str = None                 # MixBN route; None for other norms
    bn: str = "moving"                # "moving": inference BN; "batch": batch statistics
    n: int = None                     # test images (None: the plan's n)

    def key(self):
        parts = [self.route or "single", self.bn, f"n{self.n}"] + list(self.attacks)
        return "_".join(parts)


class Plan:
    """The reproduce config for one data set: runs, evaluations, seeds."""

    def __init__(self, config, dataset, workdir, seeds=None, results=None):
        datasets = config["datasets"]
        if dataset not in datasets:
            raise ValueError(f"Unknown dataset {dataset!r} for scale {config['scale']!r}: "
                             f"expected one of {sorted(datasets)}")
        self.config, self.dataset = config, dataset
        d = datasets[dataset]
        self.train, self.epsilon, self.eval = d["train"], float(d["epsilon"]), d["eval"]
        self.split = d["train"]["data"].get("eval_split", "test")  # imagenet2012: validation
        self.seeds = list(seeds if seeds is not None else config["seeds"])
        if not self.seeds:
            raise ValueError(f"seeds must not be empty. Received: {self.seeds}")
        self.base_depth = int(self.train["model"]["depth"])
        self.root = os.path.join(workdir, dataset)  # trained runs
        self.results = os.path.join(results or workdir, dataset)  # tables and plots
        self._data = {}
        # What the current experiment used: run directories and evaluation
        # files, for its compute cost (see ``compute_cost``).
        self.used_runs, self.used_evals = set(), set()

    def run_dir(self, run, seed):
        return os.path.join(self.root, "runs", run.key(self.base_depth), f"seed{seed}")

    def train_config(self, run, seed):
        import copy

        from tf_advscale import config as config_lib
        c = copy.deepcopy(self.train)
        c["seed"] = int(seed)
        c["model"]["depth"] = run.depth or self.base_depth
        c["model"]["norm"] = run.norm
        if run.norm == "mixbn":
            c["model"]["norm_kwargs"] = {"separate_stats": run.separate_stats,
                                         "separate_affine": run.separate_affine}
        t = c.setdefault("trainer", {})
        t.update(clean_portion=run.clean_portion, attack_bn=run.attack_bn,
                 mixing="mixbn" if run.norm == "mixbn" else "joint",
                 alp_weight=self.config["alp_weight"] if run.alp else 0.0)
        if run.standard:
            c["attack"] = None
            c["eval_attack"] = None
            t["clean_portion"] = 0.0
        return config_lib.merge(c)

    def eval_tag(self):
        """A short hash of what every evaluation shares (epsilon, split,
        batch size): evaluations saved under other settings are not reused."""
        import hashlib
        key = json.dumps([self.epsilon, self.split, self.eval["batch_size"]])
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def test_data(self, n):
        from tf_advscale import data as data_lib
        if n not in self._data:
            d = self.train["data"]
            x, y, _ = data_lib.as_numpy(d["dataset"], self.split, source=d.get("source"),
                                        path=d.get("path"), subset=n, seed=0)
            self._data[n] = (x, y)
        return self._data[n]


# -- training and evaluation -------------------------------------------------------------

def train(plan, run, seed):
    """Trains (or resumes, or reuses) one run; returns its run directory."""
    from tf_advscale import runner
    path = plan.run_dir(run, seed)
    plan.used_runs.add(path)
    config = plan.train_config(run, seed)
    if os.path.exists(os.path.join(path, "metrics.json")):
        # A finished run is reused only if it was trained with this config.
        runner.check_workdir(path, config)
    else:
        print(f"[reproduce] training {os.path.relpath(path, plan.root)}", flush=True)
        import keras
        # Layer names (hence checkpoint variable paths) as in a fresh process,
        # so that a run resumed by another command finds its checkpoint.
        keras.backend.clear_session()
        runner.run(config, path, verbose=2)
    return path


class BatchStatistics:
    """Calls a Keras model with BN in training mode (batch statistics)
    without updating its moving statistics: the "consistent BN" test-time
    mode."""

    def __init__(self, model):
        self.model = model

    def __call__(self, images, training=False):
        m = self.model
        logits, _ = m.stateless_call([v.value for v in m.trainable_variables],
                                     [v.value for v in m.non_trainable_variables],
                                     images, training=True)
        return logits


def evaluate_run(plan, run, seed, ev):
    """Clean and attacked accuracy of one run (resumable); a dict of floats."""
    from tf_advscale import evaluate as ev_lib
    path = train(plan, run, seed)
    n = ev.n or plan.eval["n"]
    ev = dataclasses.replace(ev, n=n)
    key = f"{ev.key()}_{plan.eval_tag()}"
    out_path = os.path.join(path, "evals", key + ".json")
    plan.used_evals.add(out_path)
    if os.path.exists(out_path):
        return json.load(open(out_path))
    import keras

    from tf_advscale import attacks as attacks_lib
    keras.backend.clear_session()  # graphs of earlier evaluations are not kept
    model = ev_lib.resolve_model(os.path.join(path, "final.keras"), ev.route)
    x, y = plan.test_data(n)
    num_classes = int(model.output.shape[-1])
    attacks = {a: attacks_lib.make(a, plan.epsilon, num_classes) for a in ev.attacks}
    fn_model = BatchStatistics(model) if ev.bn == "batch" else model
    settings = {"eval": dataclasses.asdict(ev), "epsilon": plan.epsilon, "seed": seed,
                "attacks": {k: repr(v) for k, v in attacks.items()}}
    correct, seconds = ev_lib.run_attacks(fn_model, x, y, attacks, plan.eval["batch_size"],
                                          seed=seed, workdir=os.path.join(path, "evals", key),
                                          settings=settings, verbose=False,
                                          correct_only=ev.bn != "batch")
    result = {k: float(v.mean()) for k, v in correct.items()}
    # The attacks' time, with batches an interrupted call saved.
    result.update(n=int(len(y)), seconds=round(sum(seconds.values()), 1))
    from tf_advscale.files import write_json
    write_json(out_path, result)
    return result


def over_seeds(plan, run, ev, metric):
    """``metric`` (in %) of ``run`` under ``ev`` for every seed, trained and
    evaluated as needed."""
    return [100 * evaluate_run(plan, run, s, ev)[metric] for s in plan.seeds]


def accuracies(plan, run, ev):
    """Clean and robust accuracy (%) of ``run`` under ``ev``'s one attack,
    over seeds."""
    a, = ev.attacks
    return {"clean": stat(over_seeds(plan, run, ev, "clean")),
            "robust": stat(over_seeds(plan, run, ev, a))}


def stat(values, digits=2):
    """Mean, sample standard deviation and the values, rounded."""
    v = np.asarray(values, np.float64)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": round(float(v.mean()), digits), "sd": round(sd, digits),
            "values": [round(float(x), digits) for x in v]}


def fmt(s, digits=1):
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def verdict(ours, ours_spread, paper=None, paper_ref=None, ours_ref=None):
    """The verdict of one effect (see the module doc). ``ours``/``paper`` are
    differences in points; ``paper_ref``/``ours_ref`` the baselines for the
    relative size."""
    if abs(ours) <= ours_spread:
        return "inconclusive (within the seed spread)"
    if paper is None:
        return "reproduced in direction" if ours > 0 else "not reproduced"
    if (ours > 0) != (paper > 0):
        return "not reproduced"
    if paper_ref and ours_ref:
        rel_ours, rel_paper = abs(ours) / abs(ours_ref), abs(paper) / abs(paper_ref)
        if rel_paper / 2 <= rel_ours <= rel_paper * 2:
            return "reproduced in magnitude"
    return "reproduced in direction"


def _crossing_verdict(d_lo, spread_lo, d_hi, spread_hi):
    """Mixed minus adversarial-only: above 0 at the weak attack and below 0
    at the strong one, each beyond its spread, is a crossing."""
    if d_lo < -spread_lo or d_hi > spread_hi:
        return "not reproduced"
    if d_lo > spread_lo and d_hi < -spread_hi:
        return "reproduced in direction"
    return "inconclusive (within the seed spread)"


def _spread(*stats):
    return sum(s["sd"] for s in stats)


# -- experiments ------------------------------------------------------------------------

def _main_eval(plan, route=None, bn="moving"):
    return Eval(attacks=(plan.eval["attack"],), route=route, bn=bn)


def exp_clean_portion(plan):
    a = plan.eval["attack"]
    rows = []
    for p in plan.config["clean_portions"]:
        run = Run(clean_portion=p)
        rows.append({"clean_portion": p, **accuracies(plan, run, _main_eval(plan)),
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
    table = _table(["clean portion", "clean", f"{a}", "paper PGD-2000"],
                   [[f"{100 * r['clean_portion']:.0f}%", fmt(r["clean"]), fmt(r["robust"]),
                     _num(r["paper_pgd2000"])] for r in rows])
    plot = {"kind": "lines", "xlabel": "clean portion (%)", "ylabel": "accuracy (%)",
            "series": {f"ours, {a}": [(100 * r["clean_portion"], r["robust"]) for r in rows],
                       "ours, clean": [(100 * r["clean_portion"], r["clean"]) for r in rows],
                       "paper, PGD-2000 (ImageNet)": [(100 * p, {"mean": v, "sd": 0})
                                                      for p, v in PAPER["clean_portion"].items()]}}
    return {"rows": rows, "findings": [finding], "table": table, "plots": {"clean_portion": plot}}


def exp_attack_strength(plan):
    e = plan.eval
    steps = list(e["curve_steps"])
    runs = {"adv_only": Run(clean_portion=0.0), "mixed_bn": Run(clean_portion=1.0)}
    curves, findings, plots, lines = {}, [], {}, []
    for family in e["curve_attacks"]:
        ev = Eval(attacks=tuple(f"{family}-{k}" for k in steps), n=e["curve_n"])
        curves[family] = {name: {k: stat(over_seeds(plan, run, ev, f"{family}-{k}"))
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
        plots[f"attack_strength_{family.replace('-', '_')}"] = {
            "kind": "lines", "xlabel": "attack steps", "ylabel": "accuracy (%)", "logx": True,
            "series": {**{f"ours, {n}": [(k, c[n][k]) for k in steps] for n in runs},
                       **{f"paper, {n}": [(k, {"mean": v, "sd": 0}) for k, v in p.items()]
                          for n, p in PAPER["attack_strength"].items()}}}
    for name, p in PAPER["attack_strength"].items():
        lines.append([f"paper {name} (PGD-K at {sorted(p)})"] + [_num(p.get(k)) for k in steps])
    table = _table(["training, attack"] + [f"K={k}" for k in steps], lines)
    return {"curves": curves, "findings": findings, "table": table, "plots": plots}


def exp_mixbn(plan):
    a = plan.eval["attack"]
    runs = {"one BN": Run(clean_portion=1.0), "MixBN": Run("mixbn", 1.0),
            "MixBN, separate statistics only": Run("mixbn", 1.0, separate_affine=False),
            "MixBN, separate affine only": Run("mixbn", 1.0, separate_stats=False),
            "adversarial only": Run(clean_portion=0.0),
            "standard training": Run(standard=True)}
    rows = {}
    for name, run in runs.items():
        routes = ["adversarial", "clean"] if run.norm == "mixbn" else [None]
        for route in routes:
            label = f"{name}" + (f", {route} route" if route else "")
            if run.standard:
                rows[label] = {"clean": stat(over_seeds(plan, run, Eval(), "clean"))}
            else:
                rows[label] = accuracies(plan, run, _main_eval(plan, route=route))
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
    s_only = rows["MixBN, separate statistics only, adversarial route"]["robust"]
    a_only = rows["MixBN, separate affine only, adversarial route"]["robust"]
    findings.append({
        "claim": "Later work (Zhang et al. 2024; Rebuffi et al. 2023): separate affine "
                 "parameters matter more than separate statistics (affine-only minus "
                 "statistics-only robustness)",
        "paper": "not in the paper",
        "ours": f"{a_only['mean'] - s_only['mean']:+.1f} ({fmt(a_only)} vs {fmt(s_only)})",
        "verdict": verdict(a_only["mean"] - s_only["mean"], _spread(a_only, s_only))})
    table = _table(["model", "clean", a],
                   [[k, fmt(v["clean"]), fmt(v["robust"]) if "robust" in v else "-"]
                    for k, v in rows.items()])
    plot = {"kind": "bars", "ylabel": "accuracy (%)",
            "groups": {k: {"clean": v["clean"], **({a: v["robust"]} if "robust" in v else {})}
                       for k, v in rows.items()}}
    return {"rows": rows, "recovered_fraction": recovered, "findings": findings,
            "table": table, "plots": {"mixbn": plot}}


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


def exp_depth(plan):
    a = plan.eval["attack"]
    depths = list(plan.config["depths"])
    rows = []
    for d in depths:
        adv, std = Run(clean_portion=0.0, depth=d), Run(standard=True, depth=d)
        acc = accuracies(plan, adv, _main_eval(plan))
        rows.append({"depth": d, "adv_robust": acc["robust"], "adv_clean": acc["clean"],
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
    table = _table(["depth", f"adversarial, {a}", "adversarial, clean", "standard, clean"],
                   [[r["depth"], fmt(r["adv_robust"]), fmt(r["adv_clean"]),
                     fmt(r["standard_clean"])] for r in rows])
    plot = {"kind": "lines", "xlabel": "depth", "ylabel": "accuracy (%)",
            "series": {f"adversarial training, {a}": [(r["depth"], r["adv_robust"]) for r in rows],
                       "standard training, clean": [(r["depth"], r["standard_clean"])
                                                    for r in rows]}}
    return {"rows": rows, "findings": findings, "table": table, "plots": {"depth": plot}}


def _activation_stats(model, images, route, chunk=250):
    """Per-layer, per-channel mean and variance of the inputs of every MixBN
    layer of ``model`` on ``images`` through ``route``, in network order."""
    from tf_advscale.layers import mixbn
    layers = mixbn.mixbn_layers(model)
    sums = {}
    originals = {}

    def wrap(layer):
        call = layer.call

        def recording(x, *args, **kwargs):
            v = np.asarray(x, np.float64)
            flat = v.reshape(-1, v.shape[-1])
            s = sums.setdefault(layer.name, [0.0, 0.0, 0])  # first call: network order
            s[0] = s[0] + flat.sum(0)
            s[1] = s[1] + (flat ** 2).sum(0)
            s[2] += flat.shape[0]
            return call(x, *args, **kwargs)
        return recording

    mixbn.set_route(model, route)
    for l in layers:
        originals[l] = l.__dict__.get("call")
        object.__setattr__(l, "call", wrap(l))
    try:
        for i in range(0, len(images), chunk):
            model(images[i:i + chunk], training=False)
    finally:
        for l in layers:
            object.__delattr__(l, "call")
    out = {}
    for name, (s1, s2, n) in sums.items():
        mean = s1 / n
        out[name] = (mean, np.maximum(s2 / n - mean ** 2, 1e-12))
    return out


def _distance(m1, v1, m2, v2):
    """Mean over channels of the standardized mean difference and of the
    absolute log variance ratio."""
    smd = np.abs(m1 - m2) / np.sqrt((v1 + v2) / 2 + 1e-12)
    return float(smd.mean()), float(np.abs(np.log((v1 + 1e-12) / (v2 + 1e-12))).mean())


ROUTES = ("adversarial", "clean")


def _diagnose(plan, model, seed, n):
    """Per MixBN layer: the distance between the two domains' moving
    statistics, and, through each route, between the activations of clean
    and adversarial test images and between two sets of clean images (the
    noise floor). Clean and adversarial images go through the same route, so
    that the difference is the inputs', not the routes'."""
    import tensorflow as tf

    from tf_advscale import attacks as attacks_lib
    from tf_advscale import evaluate as ev_lib
    from tf_advscale.layers import mixbn
    x, y = plan.test_data(2 * n)
    xa, xb, ya = x[:n], x[n:2 * n], y[:n]
    attack = attacks_lib.make(plan.eval["attack"], plan.epsilon)
    mixbn.set_route(model, "adversarial")  # the attack targets the adversarial route
    adv = np.concatenate([
        attack(lambda i: model(i, training=False), tf.constant(xa[i:i + 250]),
               tf.constant(ya[i:i + 250]), seed=tf.constant([seed, i], tf.int64)).numpy()
        for i in range(0, n, 250)])
    acts = {r: {"clean_a": _activation_stats(model, xa, r),
                "clean_b": _activation_stats(model, xb, r),
                "adv": _activation_stats(model, adv, r)} for r in ROUTES}
    by_name = {l.name: l for l in mixbn.mixbn_layers(model)}
    layers = []
    for i, name in enumerate(acts["adversarial"]["clean_a"]):  # network order
        layer = by_name[name]
        c, d = layer.domain_index("clean"), layer.domain_index("adversarial")
        mm, mv = np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)
        row = {"index": i, "name": name, "moving": _distance(mm[c], mv[c], mm[d], mv[d])}
        for r in ROUTES:
            a = acts[r]
            row[f"{r}_route_clean_vs_adv"] = _distance(*a["clean_a"][name], *a["adv"][name])
            row[f"{r}_route_clean_vs_clean"] = _distance(*a["clean_a"][name],
                                                         *a["clean_b"][name])
        layers.append(row)
    return layers


def exp_diagnosis(plan):
    from tf_advscale import evaluate as ev_lib
    n = plan.eval["diagnosis_n"]
    run = Run("mixbn", 1.0)
    per_seed = []
    for seed in plan.seeds:
        run_path = train(plan, run, seed)
        path = os.path.join(run_path, "evals", f"diagnosis_n{n}_{plan.eval_tag()}.json")
        plan.used_evals.add(path)
        if not os.path.exists(path):
            import keras
            keras.backend.clear_session()
            start = time.time()
            model = ev_lib.resolve_model(os.path.join(run_path, "final.keras"))
            layers = _diagnose(plan, model, seed, n)
            from tf_advscale.files import write_json
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json(path, {"layers": layers, "n": n,
                              "seconds": round(time.time() - start, 1)})
        per_seed.append(json.load(open(path))["layers"])
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


def exp_depth_search(plan):
    from tf_advscale import attacks as attacks_lib
    from tf_advscale import data as data_lib
    from tf_advscale import tuning
    s = plan.config["depth_search"]
    t = plan.train
    d = t["data"]
    common = dict(source=d.get("source"), path=d.get("path"), batch_size=d["batch_size"])
    # Trials are scored on held-out training images, not on the test set.
    _, full = data_lib.load(d["dataset"], "train", **common)
    val_n = t["eval"]["val_subset"]
    order = np.random.default_rng(0).permutation(full["num_examples"])
    train_n = s["train_subset"] or full["num_examples"] - val_n
    if train_n + val_n > full["num_examples"]:
        raise ValueError(f"depth_search.train_subset={train_n} plus {val_n} validation images "
                         f"exceed the {full['num_examples']} training images")
    train_ds, info = data_lib.load(d["dataset"], "train", subset=sorted(order[:train_n]),
                                   seed=0, **common)
    val_ds, _ = data_lib.load(d["dataset"], "train", subset=sorted(order[-val_n:]),
                              shuffle=False, augment=False, drop_remainder=False, **common)
    import keras
    keras.utils.set_random_seed(0)  # the same trials and initial weights on every run
    hypermodel = tuning.DepthSearch(
        info["shape"], info["num_classes"], attack=attacks_lib.from_spec(t["attack"]),
        eval_attack=attacks_lib.from_spec(t["eval_attack"]), depths=s["depths"],
        widths=s["widths"], seed=0, family=t["model"].get("family", "cifar"),
        learning_rate=t["optimizer"]["learning_rate"])
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


# -- output ---------------------------------------------------------------------------------

def _percent(v):
    return None if v is None else 100 * v


def _num(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header, rows):
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plot(spec, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if spec["kind"] == "lines":
        for label, pts in spec["series"].items():
            xs = [p[0] for p in pts]
            ys = [p[1]["mean"] for p in pts]
            es = [p[1]["sd"] for p in pts]
            style = "--" if label.startswith("paper") else "-"
            ax.errorbar(xs, ys, yerr=es, marker="o", linestyle=style, capsize=3, label=label)
        if spec.get("logx"):
            ax.set_xscale("log")
        ax.set_xlabel(spec["xlabel"])
    elif spec["kind"] == "bars":
        groups = list(spec["groups"])
        metrics = sorted({m for g in spec["groups"].values() for m in g})
        width = 0.8 / len(metrics)
        for j, m in enumerate(metrics):
            xs = [i + j * width for i, g in enumerate(groups) if m in spec["groups"][g]]
            vals = [spec["groups"][g][m] for g in groups if m in spec["groups"][g]]
            ax.bar(xs, [v["mean"] for v in vals], width, yerr=[v["sd"] for v in vals],
                   capsize=3, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups, rotation=30,
                      ha="right", fontsize=7)
    else:
        for x, y, label in spec["points"]:
            ax.scatter([x], [y])
            ax.annotate(label, (x, y), fontsize=7)
        ax.set_xlabel(spec["xlabel"])
    ax.set_ylabel(spec["ylabel"])
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a scatter is annotated, not labelled
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FUNCTIONS = {name: globals()[f"exp_{name}"] for name in EXPERIMENTS}


def scale_summary(plan):
    t, e = plan.train, plan.eval
    atk = t["attack"]
    return {
        "scale": plan.config["scale"], "dataset": plan.dataset,
        "data": {k: v for k, v in t["data"].items() if k in ("dataset", "source", "train_subset")},
        "model": f"{t['model'].get('family', 'cifar')} ResNet-{plan.base_depth}",
        "epochs": t["optimizer"]["epochs"], "batch_size": t["data"]["batch_size"],
        "train_attack": f"PGD-{atk['steps']}, step {atk['step_size']:.4g}"
                        + (", targeted" if atk.get("targeted") else ", untargeted"),
        "train_attack_spec": {k: atk[k] for k in ("name", "steps", "step_size", "epsilon")
                              if k in atk} | {"targeted": bool(atk.get("targeted"))},
        "epsilon": plan.epsilon, "eval_n": e["n"], "eval_attack": e["attack"],
        "curve_n": e["curve_n"], "seeds": plan.seeds}


def run_experiment(plan, name):
    """Runs (or resumes) one experiment and writes its results; returns them."""
    if name not in FUNCTIONS:
        raise ValueError(f"Unknown experiment {name!r}: expected one of {list(EXPERIMENTS)}")
    plan.used_runs, plan.used_evals = set(), set()
    result = FUNCTIONS[name](plan)
    out = os.path.join(plan.results, name)
    os.makedirs(out, exist_ok=True)
    if len(plan.seeds) < 2:  # no spread to judge an effect against
        for f in result["findings"]:
            f["verdict"] += " (1 seed: no spread)"
    setup = scale_summary(plan)
    if "seeds" in result:  # an experiment that does not run every seed says which it ran
        setup["seeds"] = result.pop("seeds")
    result = {"experiment": name, "setup": setup, **result}
    plots = result.pop("plots")
    result["plot_files"] = []
    for key, spec in plots.items():
        path = os.path.join(out, f"{key}.png")
        n_seeds = len(setup["seeds"])
        _plot(spec, path, f"{name} ({plan.dataset}, {plan.config['scale']} scale, "
                          f"{n_seeds} seed{'s' if n_seeds > 1 else ''})")
        result["plot_files"].append(os.path.basename(path))
    result["compute"] = compute_cost(plan, result)
    from tf_advscale.files import write_json
    write_json(os.path.join(out, "results.json"), result)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(f"## {name} ({plan.dataset})\n\n{result['table']}\n")
    return result


def compute_cost(plan, result):
    """What the experiment's results cost to compute, whenever that was done
    (a rerun that reuses everything reports the same): the training seconds
    of each run it used (keyed ``KEY/seedS``), the seconds of each evaluation
    (keyed by file: each run's own end-of-training test, ``KEY/seedS/test``,
    and the experiment's), and the depth search's trials. Runs and
    evaluations are shared by experiments; the report counts each once."""
    runs_root = os.path.join(plan.root, "runs")
    runs, evals = {}, {}
    for path in sorted(plan.used_runs):
        metrics = os.path.join(path, "metrics.json")
        if os.path.exists(metrics):
            m = json.load(open(metrics))
            key = os.path.relpath(path, runs_root)
            runs[key] = m["train_seconds"]
            evals[f"{key}/test"] = m.get("eval_seconds", 0.0)
    for path in sorted(plan.used_evals):
        if os.path.exists(path):
            evals[os.path.relpath(path, runs_root)] = json.load(open(path)).get("seconds", 0.0)
    trials = round(sum(t["train_seconds"] or 0.0 for t in result.get("trials", [])), 1)
    return {"runs": runs, "evals": evals, "search_seconds": trials,
            "train_seconds": round(sum(runs.values()), 1),
            "eval_seconds": round(sum(evals.values()), 1)}


def _number(v):
    """An epsilon or step as people write it: a short decimal (``0.1``, ``0.2``)
    when it is one, else ``8/255`` when it is one, else the decimal."""
    text, k = f"{v:g}", v * 255
    if len(text) <= 5 and float(text) == v:
        return text
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else text


def _hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def write_report(workdir, out_path, datasets=()):
    """REPRODUCTION.md from every ``results.json`` under ``workdir`` (the
    results directory of ``run_experiment``). ``datasets``: those the
    config describes; the report lists the experiments not run yet."""
    found = []
    for dataset in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
        for name in EXPERIMENTS:
            path = os.path.join(workdir, dataset, name, "results.json")
            if os.path.exists(path):
                found.append((dataset, name, json.load(open(path))))
    if not found:
        raise ValueError(f"No experiment results under {workdir}: run "
                         "`advscale reproduce EXPERIMENT` first")
    lines = ["# Reproduction of \"Intriguing Properties of Adversarial Training at Scale\"",
             "", "Generated by `advscale reproduce report` from the results under "
             f"`{os.path.relpath(workdir, os.path.dirname(os.path.abspath(out_path)))}`; "
             "do not edit by hand.", "",
             "The paper's numbers are ResNet-152 on ImageNet under targeted PGD-2000 "
             "(`../shared/docs/PAPER.md`). Ours are small-scale runs on this machine, so "
             "we compare directions and relative sizes, not absolute accuracies.", "",
             "Verdict rule: *reproduced in direction* when our effect has the paper's sign "
             "and exceeds the seed spread (sum of the standard deviations involved); *in "
             "magnitude* when, in addition, its size relative to the baseline is within a "
             "factor of two of the paper's; *not reproduced* when its sign is opposite "
             "beyond the spread; *inconclusive* when within the spread. Numbers are "
             "mean ± standard deviation over seeds, in %. Two findings have their own "
             "rule: the attack-strength *crossing* is reproduced when the mixed model is "
             "ahead at the weakest attack and behind at the strongest, each beyond the "
             "spread (not reproduced when either end has the wrong sign beyond it); "
             "MixBN's clean route *keeps* standard training's clean accuracy when it is "
             "at most 1 point plus the spread below it. With one seed there is no spread, "
             "and the verdict says so.", ""]
    setups = {}
    for dataset, _, r in found:
        setups.setdefault(dataset, r["setup"])
    lines += ["## Scale", ""]
    for dataset, s in setups.items():
        # Runs and evaluations are shared by experiments: each is counted once.
        runs, evals, search = {}, {}, 0.0
        for d, _, r in found:
            if d == dataset and "compute" in r:
                runs.update(r["compute"]["runs"])
                evals.update(r["compute"]["evals"])
                search += r["compute"]["search_seconds"]
        train_s, other = sum(runs.values()), sum(evals.values()) + search
        d = s["data"]
        data = d["dataset"] + (f" ({d['source']})" if d.get("source") else "")
        label = datasets[dataset].get("label") if isinstance(datasets, dict) \
            and dataset in datasets else None
        data = f"{label} (`{data}`)" if label else data
        if d.get("train_subset"):
            data += f", {d['train_subset']:,} training images"
        attack = s["train_attack"]
        if "train_attack_spec" in s:  # results written before it have the text only
            a = s["train_attack_spec"]
            attack = (f"PGD-{a['steps']}, step {_number(a['step_size'])}, "
                      f"{'targeted' if a['targeted'] else 'untargeted'}")
        lines.append(f"- **{dataset}** ({s['scale']} scale): {data}, {s['model']}, "
                     f"{s['epochs']} epochs, batch {s['batch_size']}, training attack "
                     f"{attack}, epsilon {_number(s['epsilon'])}; evaluation on "
                     f"{s['eval_n']:,} test images with {s['eval_attack']} (curves on "
                     f"{s['curve_n']:,}); seeds {s['seeds']}; {len(runs)} trained runs, "
                     f"{_hours(train_s)} of training and {_hours(other)} of "
                     f"evaluation and search on this machine.")
    done = {d: [] for d in datasets}
    for dataset, name, _ in found:
        done.setdefault(dataset, []).append(name)
    missing = [f"{d}: {', '.join(n for n in EXPERIMENTS if n not in names) if names else 'all'}"
               for d, names in done.items() if len(names) < len(EXPERIMENTS)]
    if missing:
        lines += ["", "Not run yet (this report covers the finished experiments only): "
                  + "; ".join(missing) + "."]
    lines += ["", "## Findings", "",
              "| experiment | data | seeds | claim | paper | ours | verdict |",
              "|---|---|---|---|---|---|---|"]
    for dataset, name, r in found:
        seeds = ", ".join(str(x) for x in r["setup"]["seeds"])
        for f in r["findings"]:
            lines.append(f"| {name} | {dataset} | {seeds} | {f['claim']} | {f['paper']} "
                         f"| {f['ours']} | {f['verdict']} |")
    lines.append("")
    for dataset, name, r in found:
        rel = os.path.relpath(os.path.join(workdir, dataset, name),
                              os.path.dirname(os.path.abspath(out_path)))
        lines += [f"## {name} ({dataset})", "", r["table"], ""]
        c = r.get("compute")
        if c:  # results written before cost accounting have none
            parts = []
            if c["runs"]:
                parts.append(f"{len(c['runs'])} trained runs ({c['train_seconds'] / 60:.0f} min "
                             "of training, some shared with other experiments)")
            if c["search_seconds"]:
                parts.append(f"{c['search_seconds'] / 60:.0f} min of search trials")
            parts.append(f"{c['eval_seconds'] / 60:.0f} min of evaluation")
            lines += ["Compute: " + ", ".join(parts) + ".", ""]
        lines += [f"![{name}]({rel}/{p})" for p in r["plot_files"]] + [""]
    with open(out_path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(out_path + ".tmp", out_path)
    return out_path
