"""Output: ``run_experiment`` writes one experiment's ``results.json``,
``table.md`` and plots; ``write_report`` gathers every experiment's results
into REPRODUCTION.md."""

import json
import os

from tf_advscale.reproduce.experiments import EXPERIMENTS


def run_experiment(plan, name):
    """Runs (or resumes) one experiment and writes its results; returns them."""
    if name not in EXPERIMENTS:
        raise ValueError(f"Unknown experiment {name!r}: expected one of {list(EXPERIMENTS)}")
    plan.used_runs, plan.used_evals = set(), set()
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
        _plot(spec, path, f"{name} ({plan.dataset}, {plan.config['scale']} scale, "
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
        "curve_n": e["curve_n"], "seeds": plan.seeds}


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


# -- REPRODUCTION.md ----------------------------------------------------------------------

def write_report(workdir, out_path, datasets=()):
    """REPRODUCTION.md from every ``results.json`` under ``workdir`` (the
    results directory of ``run_experiment``). ``datasets``: those the
    config describes; the report lists the experiments not run yet."""
    found = _load_results(workdir)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    lines = _introduction(os.path.relpath(workdir, out_dir))
    setups = {}
    for dataset, _, r in found:
        setups.setdefault(dataset, r["setup"])
    lines += ["## Scale", ""]
    lines += [_scale_line(dataset, s, found, datasets) for dataset, s in setups.items()]
    lines += _not_run_yet(found, datasets)
    lines += _findings_table(found)
    for dataset, name, r in found:
        rel = os.path.relpath(os.path.join(workdir, dataset, name), out_dir)
        lines += _section(name, dataset, r, rel)
    with open(out_path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(out_path + ".tmp", out_path)
    return out_path


def _load_results(workdir):
    """``(dataset, experiment, results)`` of every experiment run under
    ``workdir``: data sets in name order, experiments in ``EXPERIMENTS`` order."""
    found = []
    for dataset in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
        for name in EXPERIMENTS:
            path = os.path.join(workdir, dataset, name, "results.json")
            if os.path.exists(path):
                found.append((dataset, name, json.load(open(path))))
    if not found:
        raise ValueError(f"No experiment results under {workdir}: run "
                         "`advscale reproduce EXPERIMENT` first")
    return found


def _introduction(results_path):
    return ["# Reproduction of \"Intriguing Properties of Adversarial Training at Scale\"",
            "", "Generated by `advscale reproduce report` from the results under "
            f"`{results_path}`; do not edit by hand.", "",
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
    return (f"- **{dataset}** ({s['scale']} scale): {data}, {s['model']}, "
            f"{s['epochs']} epochs, batch {s['batch_size']}, training attack "
            f"{attack}, epsilon {_number(s['epsilon'])}; evaluation on "
            f"{s['eval_n']:,} test images with {s['eval_attack']} (curves on "
            f"{s['curve_n']:,}); seeds {s['seeds']}; {n_runs} trained runs, "
            f"{_hours(train_s)} of training and {_hours(other)} of "
            f"evaluation and search on this machine.")


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
        if c["search_seconds"]:
            parts.append(f"{c['search_seconds'] / 60:.0f} min of search trials")
        parts.append(f"{c['eval_seconds'] / 60:.0f} min of evaluation")
        lines += ["Compute: " + ", ".join(parts) + ".", ""]
    return lines + [f"![{name}]({rel}/{p})" for p in r["plot_files"]] + [""]
