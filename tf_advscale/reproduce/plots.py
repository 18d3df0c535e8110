"""Plot specs of the experiments that run at more than one scale, built from
their results (as the experiment returns them or as ``results.json`` holds
them, whose keys are strings), so that the report can draw two scales in one
figure (``combine``); ``draw`` draws a spec."""

from tf_advscale.reproduce.paper import PAPER


def _at(d, k):
    """``d[k]`` for an int key that JSON may have turned into a string."""
    return d[k] if k in d else d[str(k)]


def clean_portion(rows, attack):
    return {"clean_portion": {
        "kind": "lines", "xlabel": "clean portion (%)", "ylabel": "accuracy (%)",
        "series": {f"ours, {attack}": [(100 * r["clean_portion"], r["robust"]) for r in rows],
                   **_autoattack_series(rows, "clean_portion", "autoattack", 100),
                   "ours, clean": [(100 * r["clean_portion"], r["clean"]) for r in rows],
                   "paper, PGD-2000 (ImageNet)": [(100 * float(p), {"mean": v, "sd": 0})
                                                  for p, v in PAPER["clean_portion"].items()]}}}


def _autoattack_series(rows, x, key, scale=1):
    """``{"ours, AutoAttack": points}`` where the rows carry AutoAttack, else {}."""
    if not all(r.get(key) for r in rows):
        return {}
    return {"ours, AutoAttack": [(scale * r[x], r[key]) for r in rows]}


def attack_strength(curves):
    plots = {}
    for family, c in curves.items():
        steps = sorted(int(k) for k in c["adv_only"])
        plots[f"attack_strength_{family.replace('-', '_')}"] = {
            "kind": "lines", "xlabel": "attack steps", "ylabel": "accuracy (%)", "logx": True,
            "series": {**{f"ours, {n}": [(k, _at(c[n], k)) for k in steps] for n in c},
                       **{f"paper, {n}": [(k, {"mean": v, "sd": 0}) for k, v in p.items()]
                          for n, p in PAPER["attack_strength"].items()}}}
    return plots


def mixbn(rows, attack):
    return {"mixbn": {
        "kind": "bars", "ylabel": "accuracy (%)",
        "groups": {k: {"clean": v["clean"], **({attack: v["robust"]} if "robust" in v else {}),
                       **({"AutoAttack": v["autoattack"]} if v.get("autoattack") else {})}
                   for k, v in rows.items()}}}


def depth(rows, attack):
    return {"depth": {
        "kind": "lines", "xlabel": "depth", "ylabel": "accuracy (%)",
        "series": {f"adversarial training, {attack}": [(r["depth"], r["adv_robust"])
                                                       for r in rows],
                   **{k.replace("ours", "adversarial training"): v for k, v in
                      _autoattack_series(rows, "depth", "adv_autoattack").items()},
                   "standard training, clean": [(r["depth"], r["standard_clean"])
                                                for r in rows]}}}


def of_result(name, result):
    """The plot specs of ``results.json`` of experiment ``name``; None for an
    experiment drawn at one scale only."""
    attack = result["setup"]["eval_attack"]
    if name == "attack_strength":
        return attack_strength(result["curves"])
    builder = {"clean_portion": clean_portion, "mixbn": mixbn, "depth": depth}.get(name)
    return builder(result["rows"], attack) if builder else None


def combine(specs):
    """One spec drawing the same plot of several scales (``{scale: spec}``):
    each scale's series (or bars) labelled with the scale; the paper's once."""
    first = next(iter(specs.values()))
    out = {k: v for k, v in first.items() if k not in ("series", "groups")}
    if first["kind"] == "lines":
        out["series"] = {}
        for scale, spec in specs.items():
            for label, points in spec["series"].items():
                if label.startswith("paper"):
                    out["series"].setdefault(label, points)
                else:
                    out["series"][f"{scale}: {label.removeprefix('ours, ')}"] = points
    else:
        out["groups"] = {}
        for scale, spec in specs.items():
            for group, bars in spec["groups"].items():
                out["groups"].setdefault(group, {}).update(
                    {f"{scale}: {metric}": v for metric, v in bars.items()})
    return out


def draw(spec, path, title):
    """Draws ``spec`` (lines, bars or points) into the PNG file ``path``."""
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
        metrics = list(dict.fromkeys(m for g in spec["groups"].values() for m in g))
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
