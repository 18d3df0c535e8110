"""Publishing a trained run into the zoo (a maintainer's tool).

    advscale zoo publish WORKDIR NAME --train-command "advscale train --config ..."

Takes ``WORKDIR/final.keras`` (an ``AdversarialModel`` written by ``advscale
train``), saves its classifier as ``zoo/NAME/model.keras``, evaluates it with
the evaluation suite -- the full test set under clean, PGD-20 and APGD-CE,
the steps curve on ``curve_n`` images drawn with a seed, and a 500-image check set
that the zoo's tests re-measure -- on every MixBN route, and writes
``metadata.json`` and the model card ``README.md``.

    advscale zoo reevaluate NAME

re-measures a published entry from its verified model file with this
version's evaluation suite (e.g. after the suite changed) and rewrites its
evaluation block and card.
"""

import datetime
import json
import os
import shutil

import keras

import tf_advscale
from tf_advscale import data as data_lib, evaluate, zoo
from tf_advscale.layers import mixbn
from tf_advscale.models import count_params
from tf_advscale.files import save_model_atomic, sha256, source_commit, write_json

ATTACKS = ("pgd-20", "apgd-ce")
CHECK = {"n": 500, "seed": 0, "attacks": ["pgd-20"]}
AA_CHECK_N = 500  # AutoAttack's check set: 500 of its images, spread (check_ids)
STEPS_CURVE = (10, 20, 50, 100, 200)


def publish(workdir, name, train_command, out_dir="zoo", n=None, curve_n=500, epsilon=None,
            dataset_label=None, verbose=True, url=None):
    """Writes ``out_dir/name/`` from ``workdir``; returns the metadata.

    ``epsilon``: the threat model's L-inf radius; default the run's
    evaluation attack's (needed for standard-trained runs, which have none).
    ``dataset_label``: how the card and the zoo table name the data (e.g.
    "CIFAR-10 (JPEG q75)" for a re-encoded copy); default the run's
    "dataset (source)". The loader's own description is kept in
    ``dataset_source``. ``url``: where the model file can be downloaded
    (``source.url``), for installed packages, which leave large model files
    out (see ``tf_advscale.zoo``).
    """
    zoo.check_name(name)
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    init = metrics.get("init")
    if config.get("init_from") and not init:
        raise ValueError(f"{workdir}: the run has init_from={config['init_from']!r} but its "
                         "metrics.json has no record of the weights it started from (init); "
                         "it is not published")
    if config.get("init_from") and not init.get("zoo_entry"):
        raise ValueError(f"{workdir}: the run started from init_from="
                         f"{config['init_from']!r}, not from a zoo entry: a user could not "
                         "redo its training command, so it is not published")
    trained = keras.saving.load_model(os.path.join(workdir, "final.keras"), safe_mode=True)
    classifier = trained.model
    routes = _routes(classifier)
    epsilon = _epsilon(config, workdir, epsilon)

    entry = os.path.join(out_dir, name)
    os.makedirs(entry, exist_ok=True)
    if routes[0]:
        mixbn.set_route(classifier, "adversarial")
    model_file = os.path.join(entry, zoo.MODEL)
    save_model_atomic(classifier, model_file)

    evaluation = _evaluate(classifier, zoo.data_args(config), name, epsilon, n, curve_n,
                           os.path.join(workdir, "zoo_eval"), entry, verbose)
    if routes[0]:
        mixbn.set_route(classifier, "adversarial")

    meta = _metadata(name, classifier, routes, config, metrics, train_command, dataset_label,
                     epsilon, evaluation, model_file)
    if url:
        meta["source"]["url"] = url
    meta["robustbench"] = robustbench_fields(meta)
    write_json(os.path.join(entry, zoo.METADATA), meta)
    _write_card(entry, meta)
    return meta


def _epsilon(config, workdir, epsilon):
    """The threat model's L-inf radius as a float: ``epsilon``, else the run's
    evaluation attack's (else its training attack's)."""
    if epsilon is None:
        spec = config["eval_attack"] or config["attack"]
        if not spec or "epsilon" not in spec:
            raise ValueError(f"{workdir} was trained without an attack: pass epsilon=")
        epsilon = spec["epsilon"]
    return float(epsilon)


def _metadata(name, classifier, routes, config, metrics, train_command, dataset_label,
              epsilon, evaluation, model_file):
    """A published entry's metadata, but for its ``robustbench`` record."""
    m, t = config["model"], config["trainer"]
    return {
        "name": name,
        "architecture": {"family": m["family"], "depth": m["depth"], "width": m["width"],
                         "norm": m["norm"], "preact": m["preact"],
                         "input_shape": list(classifier.input_shape[1:]),
                         "num_classes": int(classifier.output_shape[-1])},
        "params": count_params(classifier),
        "mixbn_routes": routes if routes[0] else None,
        "default_route": routes[0],
        "dataset": dataset_label or metrics["dataset"],
        "dataset_source": metrics["dataset"],
        "threat_model": {"norm": "Linf", "epsilon": evaluate.epsilon_fraction(epsilon),
                         "epsilon_float": epsilon, "targeted": False},
        "recipe": {"train_command": train_command, "config": config,
                   "attack": metrics["train_attack"], "epochs": metrics["epochs"],
                   "clean_portion": t["clean_portion"], "mixing": t["mixing"],
                   "seed": config["seed"],
                   # init_from's record (runner.INIT_RECORD): the weights it started from.
                   **({"init": metrics["init"]} if metrics.get("init") else {})},
        "training": {"package_version": metrics.get("package_version"),
                     "commit": metrics.get("commit"), "tensorflow": metrics.get("tensorflow"),
                     "keras": metrics.get("keras"), "hardware": _hardware(metrics),
                     "train_seconds": metrics.get("train_seconds")},
        "evaluation": evaluation,
        "source": {"file": zoo.MODEL, "sha256": sha256(model_file),
                   "bytes": os.path.getsize(model_file)},
    }


def _hardware(metrics):
    """``"x86_64 2 cpus (CPU model)"``; the CPU models of every segment of a
    resumed run, in order, where the run recorded them."""
    machine = metrics.get("machine")
    return f"{machine} ({metrics['cpu']})" if machine and metrics.get("cpu") else machine


def _routes(classifier):
    return ["adversarial", "clean"] if mixbn.mixbn_layers(classifier) else [None]


def _evaluate(classifier, data, name, epsilon, n, curve_n, scratch, entry, verbose):
    """The zoo's evaluation of ``classifier`` on each of its routes (the full
    test set, or ``n`` images, under clean, PGD-20 and APGD-CE with the
    sanity checks; the steps curve on ``curve_n`` seeded images; the check
    set), resumable in ``scratch``; copies the curves' plots into ``entry``.
    Returns the metadata's ``evaluation`` block."""
    routes = _routes(classifier)
    results, check, curves = {}, {}, {}
    for route in routes:
        key = route or "default"
        if route:
            mixbn.set_route(classifier, route)
        full = evaluate.evaluate(classifier, **data, n=n, epsilon=epsilon,
                                 attacks=list(ATTACKS), steps_curve=list(STEPS_CURVE),
                                 curve_n=curve_n, route=route or "adversarial",
                                 workdir=os.path.join(scratch, key, "full"), name=name,
                                 verbose=verbose)
        small = evaluate.evaluate(classifier, **data, n=CHECK["n"],
                                  seed=CHECK["seed"], epsilon=epsilon, attacks=CHECK["attacks"],
                                  route=route or "adversarial",
                                  workdir=os.path.join(scratch, key, "check"), name=name,
                                  checks=False, verbose=False)
        # None ("n/a"): every check was moot here (a route at 0% robust accuracy).
        moot = all(c["passed"] is None for c in full["sanity_checks"])
        results[key] = {**evaluate.summary(full), "sanity_checks_passed":
                        None if moot else not full["gradient_masking_suspected"]}
        check[key] = evaluate.summary(small)
        curves[key] = full["curves"].get("steps")
        png = os.path.join(scratch, key, "full", "curve_steps.png")
        if os.path.exists(png):
            shutil.copyfile(png, os.path.join(entry,
                                              f"steps_curve{'_' + route if route else ''}.png"))
    return {
        "command": (f"advscale zoo eval {name} --steps-curve "
                    f"{','.join(map(str, STEPS_CURVE))} --curve-n {curve_n}"
                    + (f" --n {n}" if n else "")),
        "test_images": results[routes[0] or "default"]["n"], "attacks": {
            "pgd-20": "untargeted PGD, 20 steps of 2.5*eps/20, random start",
            "apgd-ce": "APGD with cross-entropy, 100 iterations"},
        "results": results, "steps_curve": curves, "check_set": {**CHECK, "results": check},
        "package_version": tf_advscale.__version__, "commit": source_commit(),
        "date": datetime.date.today().isoformat()}


def reevaluate(entry, scratch=None, n=None, curve_n=500, source=None, path=None,
               verbose=True):
    """Re-measures the published entry ``entry`` (its directory) with this
    version's evaluation suite and rewrites its ``evaluation`` block, its
    RobustBench record, its curve plots and its card; the model file is
    verified (size, sha256, parameters, normalisation) and not touched.

    For entries evaluated before the suite drew its curve from a seed, or by
    an older version: afterwards the card's eval command redoes the card.
    ``source``/``path`` point at another copy of the entry's data; the work is
    resumable in ``scratch`` (default ``runs/zoo_reevaluate/NAME-SHA``).
    Returns the metadata.
    """
    classifier, meta = zoo.load_entry(entry)
    name = meta["name"]
    data = zoo.data_args(meta["recipe"]["config"], source=source, path=path)
    scratch = scratch or os.path.join("runs", "zoo_reevaluate",
                                      f"{name}-{meta['source']['sha256'][:12]}")
    meta["evaluation"] = _evaluate(classifier, data, name, meta["threat_model"]["epsilon_float"],
                                   n, curve_n, scratch, entry, verbose)
    meta["robustbench"] = robustbench_fields(meta)
    write_json(os.path.join(entry, zoo.METADATA), meta)
    _write_card(entry, meta)
    return meta


AUTOATTACK_ATTACKS = ("pgd-20", "apgd-ce", "autoattack")


def add_autoattack(entry, n=1000, seed=0, scratch=None, source=None, path=None, verbose=True,
                   batch_size=250, check_n=None):
    """Evaluates the published entry ``entry`` (its directory) with AutoAttack
    (standard version), beside PGD-20 and APGD-CE, on ``n`` test images drawn
    with ``seed`` (None: the full test set), on each of its routes, and writes
    the results into its metadata (``evaluation.autoattack``), its RobustBench
    record (``autoattack_acc``; the worst case over all three attacks on those
    images as ``reported``) and its card.

    The images run in two parts: ``check_n`` (default ``AA_CHECK_N``) of
    them spread evenly in id order (``check_ids``), the check set the zoo's
    tests re-measure, then the rest. Every number is a mean over images, so the whole set's are
    the parts' means weighted by their sizes; the check set's own are kept as
    ``check_set``.

    Resumable in ``scratch`` (default ``runs/zoo_autoattack/NAME-SHA``) batch
    by batch: a smaller ``batch_size`` saves work more often (a batch of a
    PreActResNet-18 takes hours on two CPU cores). The weights are not
    touched. Returns the metadata."""
    classifier, meta = zoo.load_entry(entry)
    name = meta["name"]
    data = zoo.data_args(meta["recipe"]["config"], source=source, path=path)
    ids = subset_ids(data, n, seed)
    check_n = AA_CHECK_N if check_n is None else check_n
    chosen = check_ids(ids, check_n)
    parts = {"check": chosen, "rest": sorted(set(ids) - set(chosen))}
    scratch = scratch or os.path.join("runs", "zoo_autoattack",
                                      f"{name}-{meta['source']['sha256'][:12]}")
    results, check = {}, {}
    for route in _routes(classifier):
        if route:
            mixbn.set_route(classifier, route)
        key = route or "default"
        part = {}
        for which, part_ids in parts.items():
            if not part_ids:
                continue
            if verbose:
                label = "the check set" if which == "check" else "the other images"
                print(f"[zoo autoattack] {name}, route {key}: {label}, "
                      f"{len(part_ids)} of the {len(ids)} images", flush=True)
            report = evaluate.evaluate(
                classifier, **data, ids=part_ids, seed=seed,
                epsilon=meta["threat_model"]["epsilon_float"], attacks=list(AUTOATTACK_ATTACKS),
                route=route or "adversarial", workdir=os.path.join(scratch, key, which),
                name=name, checks=False, verbose=verbose, batch_size=batch_size)
            part[which] = {**evaluate.summary(report),
                           "after_each": report["attacks"]["autoattack"]["after_each"]}
        results[key] = pooled(list(part.values()))
        check[key] = part["check"]
    meta["evaluation"]["autoattack"] = {
        "command": f"advscale zoo autoattack {name}" + (f" --n {n}" if n else " --n all")
                   + (f" --seed {seed}" if seed else "") + f" --batch-size {batch_size}",
        "test_images": len(ids), "subset_seed": seed if n else None,
        # Another copy of the test set than the recipe's (--source/--path).
        "data_override": ({"source": source, "path": path} if (source or path) else None),
        "attacks": "AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square-5000, each on "
                   "the images still unbroken), with PGD-20 and APGD-CE on the same images",
        "results": results,
        "check_set": {"n": len(parts["check"]), "spread": True,
                      "ids": f"{len(parts['check'])} of these images, spread evenly in id order",
                      "seed": seed, "batch_size": batch_size,
                      "attacks": ["autoattack"], "results": check},
        "package_version": tf_advscale.__version__,
        "commit": source_commit(), "date": datetime.date.today().isoformat()}
    meta["robustbench"] = robustbench_fields(meta)
    write_json(os.path.join(entry, zoo.METADATA), meta)
    _write_card(entry, meta)
    return meta


def check_ids(ids, n, spread=True):
    """The check set within ``ids`` (sorted): ``n`` of them spread evenly in
    id order (every other one when ``n`` is half), so that on a source whose
    ids follow the classes (a folder per class) every class is in it; all of
    ``ids`` when ``n`` is not smaller. ``spread=False`` gives the first
    ``n``, the check set of entries whose ``check_set`` has no ``spread``
    (evaluated before it was spread: on CIFAR-10 folders, mostly the first
    five classes)."""
    ids = list(ids)
    if n >= len(ids):
        return ids
    if not spread:
        return ids[:n]
    return [ids[i * len(ids) // n] for i in range(n)]


def subset_ids(data, n, seed):
    """The test-set ids (sorted) that ``evaluate(**data, n=n, seed=seed)``
    draws; every id where ``n`` is None."""
    _, info = data_lib.load(data["dataset"], "test", source=data["source"], path=data["path"],
                            subset=n, seed=seed, cache=False)
    return info["ids"] if info["ids"] is not None else list(range(info["num_examples"]))


def pooled(parts):
    """Summaries (``evaluate.summary``, with ``after_each``) of disjoint image
    sets as one: each accuracy the mean weighted by the parts' ``n``."""
    total = sum(p["n"] for p in parts)

    def mean(get):
        return sum(get(p) * p["n"] for p in parts) / total

    out = {k: mean(lambda p, k=k: p[k]) for k in parts[0] if k not in ("n", "after_each")}
    out["after_each"] = {st: mean(lambda p, st=st: p["after_each"][st])
                         for st in parts[0]["after_each"]}
    return {**out, "n": total}


def robustbench_fields(meta):
    """The entry as a RobustBench model-info record, with its field names and
    types (accuracies as strings of two decimals). Once ``add_autoattack`` has
    run, ``autoattack_acc`` is AutoAttack's accuracy and ``reported`` the
    per-example worst case over PGD-20, APGD-CE and AutoAttack, both on the
    images it ran on; before, ``autoattack_acc`` is null (not run) and
    ``reported`` the worst case over PGD-20 and APGD-CE. The footnote says
    which, and on how many images."""
    route = meta.get("default_route") or "default"
    r = meta["evaluation"]["results"][route]
    a = meta["architecture"]
    aa = zoo.autoattack_results(meta, route)
    if aa:
        note = (f"AutoAttack (standard version, tf_advscale's) {100 * aa['autoattack']:.2f}% on "
                f"{aa['n']:,} test images of {meta['dataset']}"
                + (f" drawn with seed {meta['evaluation']['autoattack']['subset_seed']}"
                   if meta["evaluation"]["autoattack"].get("subset_seed") is not None else "")
                + f"; reported: the per-example worst case over PGD-20, APGD-CE and AutoAttack "
                f"on those images; clean accuracy on {r['n']:,} test images.")
        reported, autoattack = aa["worst_case"], f"{100 * aa['autoattack']:.2f}"
    else:
        note = (f"Robust accuracy {100 * r['worst_case']:.2f}% is the per-example worst case "
                f"over PGD-20 and APGD-CE on {r['n']:,} test images of {meta['dataset']}, not "
                "AutoAttack.")
        reported, autoattack = r["worst_case"], None
    if meta.get("default_route"):
        note += f" MixBN model evaluated on its {route} route."
    return {"name": meta["name"], "dataset": meta["recipe"]["config"]["data"]["dataset"],
            "threat_model": "Linf", "eps": meta["threat_model"]["epsilon"],
            "clean_acc": f"{100 * r['clean']:.2f}", "reported": f"{100 * reported:.2f}",
            "autoattack_acc": autoattack, "additional_data": False, "number_forward_passes": 1,
            "architecture": f"{_arch_name(a, 'ResNet')} ({a['norm']})", "footnote": note}


def _arch_name(a, plain):
    """How a card or record names the architecture ``a`` (metadata's block);
    ``plain``: the name of a plain ResNet of that depth."""
    if a.get("family") == "preact":
        return f"PreActResNet-{a['depth']}"
    if a.get("family") == "wide":
        return f"WideResNet-{a['depth']}-{a['width']:g}"
    return f"{plain}-{a['depth']}"


def relabel(entry, dataset_label):
    """Renames the data of the published entry ``entry`` (its directory) on its
    card and in its metadata; the model file is not touched, so its sha256 holds.
    Returns the metadata."""
    if not dataset_label or not dataset_label.strip():
        raise ValueError(f"relabel needs a non-empty dataset label. Received: {dataset_label!r}")
    path = os.path.join(entry, zoo.METADATA)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{entry} is not a zoo entry: it has no {zoo.METADATA}")
    with open(path) as f:
        meta = json.load(f)
    meta.setdefault("dataset_source", meta["dataset"])
    meta["dataset"] = dataset_label.strip()
    meta["robustbench"] = robustbench_fields(meta)
    write_json(path, meta)
    _write_card(entry, meta)
    return meta


def _check_word(passed):
    return {True: "pass", False: "FAIL", None: "n/a"}[passed]


def _pct_text(x):
    return "-" if x is None else f"{100 * x:.2f}"


def _write_card(entry, meta):
    with open(os.path.join(entry, zoo.CARD), "w") as f:
        f.write(render_card(entry, meta))


def _data_line(meta):
    """Where the card's commands read the data, and how to point them elsewhere."""
    path = meta["recipe"]["config"]["data"].get("path")
    where = ("its default location" if not path else f"`{path}`" if os.path.isabs(path)
             else f"`{path}`, relative to the directory the commands run in")
    return (f"Data: {meta.get('dataset_source', meta['dataset'])}, read from {where}. "
            "`--path DIR` reads another copy; `--source tfds` reads the tensorflow-datasets "
            "release instead, whose pixels can differ from this copy's.")


def render_card(entry, meta):
    """The model card of the entry ``entry`` (its directory), from its metadata."""
    ev = meta["evaluation"]
    return "\n".join(_card_results(meta) + _card_attacks(ev) + _card_autoattack(ev)
                     + ["", "## Attack-strength curve", ""] + _card_curves(entry, ev)
                     + _card_making(meta))


def _card_autoattack(ev):
    """The card's AutoAttack section (``add_autoattack``), or that it has not run."""
    aa = ev.get("autoattack")
    if not aa:
        return ["", "AutoAttack: not run yet (`advscale zoo autoattack NAME`)."]
    on = (f"{aa['test_images']:,} test images drawn with seed {aa['subset_seed']}"
          if aa.get("subset_seed") is not None else f"all {aa['test_images']:,} test images")
    lines = ["", "## AutoAttack", "",
             f"{aa['attacks']}; on {on}; accuracy in % (robust after each of its attacks, "
             f"then the worst case per image over every attack run here). "
             f"Command: `{aa['command']}`.", "",
             "| route | clean | after APGD-CE | after APGD-T | after FAB-T | AutoAttack | "
             "PGD-20 | worst case |", "|---|---|---|---|---|---|---|---|"]
    for route, r in aa["results"].items():
        e = r["after_each"]
        lines.append(f"| {route} | {_pct_text(r['clean'])} | {_pct_text(e['apgd-ce'])} | "
                     f"{_pct_text(e['apgd-t'])} | {_pct_text(e['fab-t'])} | "
                     f"{_pct_text(r['autoattack'])} | {_pct_text(r['pgd-20'])} | "
                     f"{_pct_text(r['worst_case'])} |")
    cs = aa.get("check_set")
    if cs:
        lines += ["", f"Check set: {cs['ids']} (batches of {cs['batch_size']}), AutoAttack "
                  + ", ".join(f"{_pct_text(r['autoattack'])} ({route})"
                              for route, r in cs["results"].items())
                  + "; the zoo's tests re-measure it."]
    return lines


def _card_results(meta):
    """The card's lines from its title to the table of results per route."""
    ev = meta["evaluation"]
    lines = [f"# {meta['name']}", "",
             f"{_arch_name(meta['architecture'], meta['architecture']['family'].upper() + ' ResNet')} "
             f"({meta['architecture']['norm']}), {meta['params']:,} parameters, trained on "
             f"{meta['dataset']}; L-inf epsilon {meta['threat_model']['epsilon']}.", "",
             "## Results", "",
             f"{ev['test_images']:,} test images ({meta['dataset']}); accuracy in %.", "",
             "| route | clean | PGD-20 | APGD-CE | worst case | sanity checks |",
             "|---|---|---|---|---|---|"]
    for route, r in ev["results"].items():
        lines.append(f"| {route} | {_pct_text(r['clean'])} | {_pct_text(r.get('pgd-20'))} | "
                     f"{_pct_text(r.get('apgd-ce'))} | {_pct_text(r['worst_case'])} | "
                     f"{_check_word(r['sanity_checks_passed'])} |")
    return lines


def _card_attacks(ev):
    """The card's lines on the attacks and the check set."""
    # The card is also rewritten from metadata.json, whose keys are sorted: order here.
    attacks = sorted(ev["attacks"], key=lambda k: (k not in ATTACKS, ATTACKS.index(k)
                                                   if k in ATTACKS else 0, k))
    cs = ev["check_set"]
    measured = "; ".join(
        (f"{route}: " if len(cs["results"]) > 1 else "")
        + ", ".join([f"clean {_pct_text(r['clean'])}"] + [f"{k.upper()} {_pct_text(r[k])}"
                                                      for k in cs["attacks"]])
        for route, r in cs["results"].items())
    return ["", "Attacks: " + "; ".join(f"{k}: {ev['attacks'][k]}" for k in attacks) + ".",
            f"Check set (re-measured by the zoo's tests, which allow 2 points): {cs['n']} test "
            f"images drawn with seed {cs['seed']}: {measured}."]


def _card_curves(entry, ev):
    """The card's lines on each route's steps curve: its plot and its points."""
    lines = []
    for route in ev["results"]:
        png = f"steps_curve{'_' + route if route != 'default' else ''}.png"
        if os.path.exists(os.path.join(entry, png)):
            lines.append(f"![PGD steps curve ({route})]({png})")
        curve = ev["steps_curve"].get(route)
        if curve:
            pts = ", ".join(f"{k} steps {_pct_text(v)}" for k, v in
                            sorted(curve["accuracy"].items(), key=lambda kv: int(kv[0])))
            # Entries published before curves used a seeded subset name none.
            subset = curve.get("subset")
            on = (f"the first {curve['n']} test images" if subset is None
                  else f"all {curve['n']} test images" if subset == "all"
                  else f"{curve['n']} test images {subset}")
            lines.append(f"{route}: {pts} (on {on}).")
            if subset is None:
                lines.append("This curve predates curves on a seeded draw of the test set: "
                             "`advscale zoo eval` does not redo it.")
    return lines


def _fine_tuned(recipe):
    """The card's sentence on a run that started from a zoo entry's weights
    (``init_from``; ``recipe["init"]`` is what it read)."""
    init = recipe.get("init")
    if not init:
        return []
    parts = (["each BatchNormalization's weights filling every domain of its MixBN"]
             if init.get("bn_into_mixbn") else
             [f"each MixBN's {init['domain']} domain into a BatchNormalization"]
             if init.get("domain") else [])
    if init.get("skipped"):
        parts.append(f"its layers {init['skipped']} from their initializers")
    filled = f" ({'; '.join(parts)})" if parts else ""
    return ["", f"Fine-tuned: training started from the weights of zoo entry "
                f"`{init['zoo_entry']}` (sha256 `{init['sha256']}`){filled}, not from the "
                "initializers; the epochs and seconds above are the fine-tuning's alone."]


def _card_making(meta):
    """The card's lines on how the model was trained and evaluated, and how to use it."""
    ev, rec, tr = meta["evaluation"], meta["recipe"], meta["training"]
    recipe = ("standard training (no attack)" if str(rec["attack"]).startswith("NoAttack")
              else f"training attack {rec['attack']}, clean portion {rec['clean_portion']}, "
                   f"mixing {rec['mixing']}")
    # Configs from before trainer.precision existed trained in its default.
    precision = rec["config"].get("trainer", {}).get("precision", "float32")
    command = f"`{ev['command']}`"
    if meta.get("mixbn_routes"):
        command = " and ".join(f"`{ev['command']} --route {r}`" for r in meta["mixbn_routes"])
    return ["", "## How it was made", "",
            f"Trained with `{rec['train_command']}` ({rec['epochs']} epochs, {recipe}, "
            f"precision {precision}, seed {rec['seed']}) on {tr['hardware']} in "
            f"{tr['train_seconds']} s "
            f"(tf_advscale {tr['package_version']}, commit {tr['commit'] or 'not recorded'}, "
            f"TensorFlow {tr['tensorflow']}, Keras {tr['keras']}). The whole config as it "
            "ran is `recipe.config` in `metadata.json`.", *_fine_tuned(rec), "",
            f"Evaluated with {command} (tf_advscale {ev['package_version']}, commit "
            f"{ev['commit']}, {ev['date']}).", "", _data_line(meta), "",
            "## Use", "", "```python", "from tf_advscale import zoo",
            f"model, meta = zoo.load({meta['name']!r})  # images in [0, 1] -> logits", "```",
            "", f"File: `{meta['source']['file']}`, sha256 `{meta['source']['sha256']}`, "
            f"{meta['source']['bytes']:,} bytes.", ""]
