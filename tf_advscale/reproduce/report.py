"""Output: ``run_experiment`` writes one experiment's ``results.json``,
``table.md`` and plots; ``write_report`` gathers every experiment's results
into REPRODUCTION.md."""

import json
import os

from tf_advscale.reproduce import share
from tf_advscale.reproduce.experiments import EXPERIMENTS
from tf_advscale.reproduce.plots import draw


def experiments_of(config):
    """The experiments a scale runs (``all``), in ``EXPERIMENTS`` order."""
    names = config.get("experiments") or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"Unknown experiments {unknown} in the {config['scale']} scale's "
                         f"config: expected some of {list(EXPERIMENTS)}")
    return [n for n in EXPERIMENTS if n in names]


def check_experiment(config, name):
    """Refuses ``name`` unless the config's scale runs it."""
    if name not in EXPERIMENTS:
        raise ValueError(f"Unknown experiment {name!r}: expected one of {list(EXPERIMENTS)}")
    available = experiments_of(config)
    if name not in available:
        raise ValueError(f"Experiment {name!r} does not run at the {config['scale']} scale: "
                         f"expected one of {available} (or all)")


def run_experiment(plan, name):
    """Runs (or resumes) one experiment and writes its results; returns them."""
    check_experiment(plan.config, name)
    plan.used_runs, plan.used_evals = set(), set()
    with plan.seeds_of(name):
        result = EXPERIMENTS[name](plan)
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
        draw(spec, path, f"{name} ({plan.dataset}, {plan.config['scale']} scale, "
                          f"{n_seeds} seed{'s' if n_seeds > 1 else ''})")
        result["plot_files"].append(os.path.basename(path))
    result["compute"] = compute_cost(plan, result)
    from tf_advscale.files import write_json
    write_json(os.path.join(out, "results.json"), result)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(f"## {name} ({plan.dataset})\n\n{result['table']}\n")
    return result


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
        "curve_n": e["curve_n"], "seeds": plan.seeds,
        **({"curve_one_trajectory": True} if e.get("curve_one_trajectory") else {})}


def compute_cost(plan, result):
    """What the experiment's results cost to compute, whenever that was done
    (a rerun that reuses everything reports the same): the training seconds
    of each run it used (keyed ``KEY/seedS``; ``shared``: the runs that are a
    zoo entry's, by entry name, trained elsewhere), the seconds of each evaluation
    (keyed by file: each run's own end-of-training test, ``KEY/seedS/test``,
    and the experiment's; ``shared_evals``: those read from a zoo entry's
    record, by entry name), and the depth search's trials. Runs and
    evaluations are shared by experiments; the report counts each once."""
    runs_root = os.path.join(plan.root, "runs")
    runs, evals, shared = {}, {}, {}
    for path in sorted(plan.used_runs):
        metrics = os.path.join(path, "metrics.json")
        key = os.path.relpath(path, runs_root)
        if os.path.exists(metrics):
            m = json.load(open(metrics))
            runs[key] = m["train_seconds"]
            evals[f"{key}/test"] = m.get("eval_seconds", 0.0)
        elif share.record(path):
            shared[key] = share.record(path)["entry"]
    shared_evals = {}
    for path in sorted(plan.used_evals):
        if os.path.exists(path):
            e = json.load(open(path))
            if e.get("entry"):  # a zoo entry's own evaluation (share.autoattack)
                shared_evals[os.path.relpath(path, runs_root)] = e["entry"]
            else:
                evals[os.path.relpath(path, runs_root)] = e.get("seconds", 0.0)
    trials = round(sum(t["train_seconds"] or 0.0 for t in result.get("trials", [])), 1)
    return {"runs": runs, "shared": shared, "evals": evals, "shared_evals": shared_evals,
            "search_seconds": trials,
            "train_seconds": round(sum(runs.values()), 1),
            "eval_seconds": round(sum(evals.values()), 1)}


# -- REPRODUCTION.md ----------------------------------------------------------------------

def write_report(workdir, out_path, datasets=(), scales=None):
    """REPRODUCTION.md from every ``results.json`` under ``workdir`` (the
    results directory of ``run_experiment``). ``datasets``: those the
    config describes; the report lists the experiments not run yet.
    ``scales``: ``{scale: config}`` of other scales, whose results (under
    ``workdir/FOLDER``, FOLDER the config's ``folder``) the report shows
    beside these claim by claim, saying where they are not run yet."""
    found = _load_results(workdir)
    others = {s: (c, _load_results(scale_dir(workdir, c), required=False))
              for s, c in (scales or {}).items()}
    out_dir = os.path.dirname(os.path.abspath(out_path))
    lines = _introduction(os.path.relpath(workdir, out_dir), found[0][2]["setup"]["scale"],
                          list(others))
    setups = {}
    for dataset, _, r in found:
        setups.setdefault(dataset, r["setup"])
    lines += ["## Scale", ""]
    lines += [_scale_line(dataset, s, found, datasets) for dataset, s in setups.items()]
    lines += [_other_scale_line(d, c, f) for c, f in others.values() for d in c["datasets"]]
    lines += _not_run_yet(found, datasets)
    lines += _findings_table(found)
    lines += _side_by_side(workdir, found, others, out_dir)
    for dataset, name, r in found:
        rel = os.path.relpath(os.path.join(workdir, dataset, name), out_dir)
        lines += _section(name, dataset, r, rel)
    for scale, (c, f) in others.items():
        for dataset, name, r in f:
            rel = os.path.relpath(os.path.join(scale_dir(workdir, c), dataset, name), out_dir)
            lines += _section(name, f"{dataset}, {scale} scale", r, rel)
    with open(out_path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(out_path + ".tmp", out_path)
    return out_path


def scale_dir(results, config):
    """Where a scale that keeps its results apart (its ``folder``) has them."""
    if not config.get("folder"):
        raise ValueError(f"The {config['scale']} scale has no folder of its own, so its "
                         "results cannot be told from the base scale's")
    return os.path.join(results, config["folder"])


def _load_results(workdir, required=True):
    """``(dataset, experiment, results)`` of every experiment run under
    ``workdir``: data sets in name order, experiments in ``EXPERIMENTS`` order."""
    found = []
    for dataset in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
        for name in EXPERIMENTS:
            path = os.path.join(workdir, dataset, name, "results.json")
            if os.path.exists(path):
                found.append((dataset, name, json.load(open(path))))
    if not found and required:
        raise ValueError(f"No experiment results under {workdir}: run "
                         "`advscale reproduce EXPERIMENT` first")
    return found


def _introduction(results_path, base, others=()):
    ours = "Ours are small-scale runs on this machine"
    if others:
        ours = (f"Ours are runs on this machine at {base} scale and at {' and '.join(others)} "
                "scale, shown side by side")
    return ["# Reproduction of \"Intriguing Properties of Adversarial Training at Scale\"",
            "", "Generated by `advscale reproduce report` from the results under "
            f"`{results_path}`; do not edit by hand.", "",
            "The paper's numbers are ResNet-152 on ImageNet under targeted PGD-2000 "
            f"(`../shared/docs/PAPER.md`). {ours}, so we compare directions and relative sizes, not absolute accuracies.", "",
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


def _dataset_cost(found, dataset):
    """Trained runs, training seconds, and evaluation and search seconds of
    ``dataset``'s experiments. Runs and evaluations are shared by
    experiments: each is counted once."""
    runs, evals, search = {}, {}, 0.0
    for d, _, r in found:
        if d == dataset and "compute" in r:
            runs.update(r["compute"]["runs"])
            evals.update(r["compute"]["evals"])
            search += r["compute"]["search_seconds"]
    return len(runs), sum(runs.values()), sum(evals.values()) + search


def _scale_line(dataset, s, found, datasets):
    """The "Scale" bullet of ``dataset``, whose results' setup is ``s``."""
    n_runs, train_s, other = _dataset_cost(found, dataset)
    return (f"{_setup_text(dataset, s, datasets)}; {n_runs} trained runs, "
            f"{_hours(train_s)} of training and {_hours(other)} of "
            f"evaluation and search on this machine{_shared_text(found, dataset)}.")


def _other_scale_line(dataset, config, found):
    """The "Scale" bullet of ``dataset`` at a scale shown beside the base:
    from its results, or from its config when none exist yet."""
    from tf_advscale.reproduce.plan import Plan
    few = "".join(f"; {n} runs {k} seed{'s' if k > 1 else ''}"
                  for n, k in (config.get("experiment_seeds") or {}).items())
    setups = [r["setup"] for d, _, r in found if d == dataset]
    if setups:
        return _scale_line(dataset, setups[0], found, config["datasets"])[:-1] + few + "."
    s = scale_summary(Plan(config, dataset, "."))
    return (f"{_setup_text(dataset, s, config['datasets'])}{few}; experiments "
            f"{', '.join(experiments_of(config))}: not run yet.")


def _shared_text(found, dataset):
    shared = {}
    for d, _, r in found:
        if d == dataset:
            shared.update(r.get("compute", {}).get("shared", {}))
    if not shared:
        return ""
    return (f"; {len(shared)} runs shared with the zoo, not trained: "
            + ", ".join(f"{k} = `{v}`" for k, v in sorted(shared.items())))


def _setup_text(dataset, s, datasets):
    """The "Scale" bullet of ``dataset`` up to its seeds."""
    d = s["data"]
    data = d["dataset"] + (f" ({d['source']})" if d.get("source") else "")
    label = datasets[dataset].get("label") if isinstance(datasets, dict) \
        and dataset in datasets else None
    data = f"{label} (`{data}`)" if label else data
    if d.get("train_subset"):
        data += f", {d['train_subset']:,} training images"
    elif label and datasets[dataset].get("train_images"):
        data += f", all {datasets[dataset]['train_images']:,} training images"
    attack = s["train_attack"]
    if "train_attack_spec" in s:  # results written before it have the text only
        a = s["train_attack_spec"]
        attack = (f"PGD-{a['steps']}, step {_number(a['step_size'])}, "
                  f"{'targeted' if a['targeted'] else 'untargeted'}")
    return (f"- **{dataset}** ({s['scale']} scale): {data}, {s['model']}, "
            f"{s['epochs']} epochs, batch {s['batch_size']}, training attack "
            f"{attack}, epsilon {_number(s['epsilon'])}; evaluation on "
            f"{s['eval_n']:,} test images with {s['eval_attack']} (curves on "
            f"{s['curve_n']:,}{ONE_TRAJECTORY if s.get('curve_one_trajectory') else ''}); "
            f"seeds {s['seeds']}")


# How a scale with ``curve_one_trajectory`` measured its curves.
ONE_TRAJECTORY = "; the targeted PGD-K of equal step size: one trajectory per image, read at each K"


def _number(v):
    """An epsilon or step as people write it: a short decimal (``0.1``, ``0.2``)
    when it is one, else ``8/255`` when it is one, else the decimal."""
    text, k = f"{v:g}", v * 255
    if len(text) <= 5 and float(text) == v:
        return text
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else text


def _hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _not_run_yet(found, datasets):
    done = {d: [] for d in datasets}
    for dataset, name, _ in found:
        done.setdefault(dataset, []).append(name)
    missing = [f"{d}: {', '.join(n for n in EXPERIMENTS if n not in names) if names else 'all'}"
               for d, names in done.items() if len(names) < len(EXPERIMENTS)]
    if not missing:
        return []
    return ["", "Not run yet (this report covers the finished experiments only): "
            + "; ".join(missing) + "."]


def _side_by_side(workdir, found, others, out_dir):
    """``compare.section`` of every data set of every other scale."""
    from tf_advscale.reproduce import compare, estimate
    from tf_advscale.reproduce.plan import Plan
    if not others:
        return []
    base = found[0][2]["setup"]["scale"]
    lines = []
    for scale, (config, f) in others.items():
        for dataset in config["datasets"]:
            mine = {n: r for d, n, r in f if d == dataset}
            # The claims of experiments not run yet, listed by planning them.
            _, claims = estimate.planned_work(Plan(config, dataset, workdir),
                                              [n for n in experiments_of(config) if n not in mine])
            mine.update({n: {"findings": c, "pending": True} for n, c in claims.items()})
            by_scale = {base: {n: r for d, n, r in found if d == dataset}, scale: mine}
            runs = {base: list(EXPERIMENTS), scale: experiments_of(config)}
            plot_dirs = {n: os.path.join(scale_dir(workdir, config), dataset, n)
                         for n in EXPERIMENTS}
            lines += compare.section(dataset, by_scale, runs, plot_dirs, out_dir)
    return lines


def _findings_table(found):
    lines = ["", "## Findings", "",
             "| experiment | data | seeds | claim | paper | ours | verdict |",
             "|---|---|---|---|---|---|---|"]
    for dataset, name, r in found:
        seeds = ", ".join(str(x) for x in r["setup"]["seeds"])
        for f in r["findings"]:
            lines.append(f"| {name} | {dataset} | {seeds} | {f['claim']} | {f['paper']} "
                         f"| {f['ours']} | {f['verdict']} |")
    return lines + [""]


def _section(name, dataset, r, rel):
    """One experiment's table, compute cost and plots (``rel``: its results
    folder, relative to the report)."""
    lines = [f"## {name} ({dataset})", "", r["table"], ""]
    c = r.get("compute")
    if c:  # results written before cost accounting have none
        parts = []
        if c["runs"]:
            parts.append(f"{len(c['runs'])} trained runs ({c['train_seconds'] / 60:.0f} min "
                         "of training, some shared with other experiments)")
        if c.get("shared"):
            parts.append(f"{len(c['shared'])} runs shared with the zoo (trained there: "
                         f"{', '.join(f'`{e}`' for e in sorted(set(c['shared'].values())))})")
        if c.get("shared_evals"):
            parts.append(f"{len(c['shared_evals'])} AutoAttack evaluations read from the zoo's "
                         "records (the same attack settings on the same images, made there: "
                         f"{', '.join(f'`{e}`' for e in sorted(set(c['shared_evals'].values())))})")
        if c["search_seconds"]:
            parts.append(f"{c['search_seconds'] / 60:.0f} min of search trials")
        parts.append(f"{c['eval_seconds'] / 60:.0f} min of evaluation")
        lines += ["Compute: " + ", ".join(parts) + ".", ""]
    return lines + [f"![{name}]({rel}/{p})" for p in r["plot_files"]] + [""]
