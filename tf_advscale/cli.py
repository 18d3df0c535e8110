"""The ``advscale`` command's subcommands, run on arguments parsed by
``advscale_cli`` (the top-level module that parses them without importing
TensorFlow; see its docstring for the usage).

``python -m tf_advscale.cli ARGS`` and ``main(argv)`` here work as before.
"""

import json
import os
import sys

from advscale_cli import RESULTS_DEFAULT, build_parser, eval_fraction


def train_config(args):
    """The config `advscale train` runs for its parsed arguments: the file
    (or the built-in default), --runlocal, then each --set in order."""
    from tf_advscale import config as config_lib
    return config_lib.load(args.config, runlocal=args.runlocal, overrides=args.set)


def _train(args):
    from tf_advscale import runner
    config = train_config(args)
    name = "quickstart"
    if args.config:
        base, _, arg = os.path.basename(args.config).partition(":")
        name = os.path.splitext(base)[0] + ("_" + arg.replace(",", "_") if arg else "")
    workdir = args.workdir or os.path.join("runs", name + ("_runlocal" if args.runlocal else ""))
    print(f"advscale train: config={args.config or '(built-in default)'} workdir={workdir}",
          flush=True)
    _, metrics = runner.run(config, workdir)
    print(json.dumps(metrics["results"], indent=2))
    print(f"metrics: {os.path.join(workdir, 'metrics.json')}")
    return 0


def _ints(text):
    return [int(t) for t in text.split(",") if t]


def _floats(text):
    return [eval_fraction(t) for t in text.split(",") if t]


# The usual L-inf radius per data set, when neither --epsilon nor zoo metadata says.
DATASET_EPSILON = {"fashion_mnist": 0.1, "fashion_mnist_sample": 0.1, "mnist": 0.3}
# The usual L2 radius (RobustBench's for CIFAR); other data sets need --epsilon.
DATASET_EPSILON_L2 = {"cifar10": 0.5, "cifar100": 0.5}


def eval_defaults(model, dataset, epsilon, norm="linf"):
    """(dataset, epsilon, where the epsilon came from) for ``advscale eval``: an
    explicit --epsilon; else the zoo metadata beside the model file, when its
    threat model is ``norm``; else the data set's usual radius (L-inf: 8/255
    for natural images; L2: 0.5 on CIFAR, else --epsilon is required)."""
    meta_path = os.path.join(os.path.dirname(os.path.abspath(model)), "metadata.json")
    meta = None
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    if dataset is None:
        dataset = (meta or {}).get("recipe", {}).get("config", {}).get("data", {}).get(
            "dataset") or ("cifar10" if meta else "fashion_mnist")
    if epsilon is not None:
        return dataset, epsilon, "--epsilon"
    threat = (meta or {}).get("threat_model") or {}
    if threat.get("epsilon_float") and str(threat.get("norm", "Linf")).lower() == norm:
        return dataset, float(threat["epsilon_float"]), meta_path
    if norm == "l2":
        if dataset not in DATASET_EPSILON_L2:
            raise SystemExit(f"advscale eval: L2 attacks on {dataset} need --epsilon "
                             f"(no usual L2 radius is known for it)")
        return dataset, DATASET_EPSILON_L2[dataset], f"the L2 default for {dataset}"
    return dataset, DATASET_EPSILON.get(dataset, 8 / 255), f"the default for {dataset}"


def _eval(args):
    from tf_advscale.evaluate import epsilon_fraction, evaluate
    names = [a for a in args.attacks.split(",") if a]
    norm = "l2" if any(a.lower().endswith("-l2") for a in names) else "linf"
    args.dataset, args.epsilon, origin = eval_defaults(args.model, args.dataset, args.epsilon,
                                                       norm)
    print(f"advscale eval: {args.dataset}, {'L2' if norm == 'l2' else 'L-inf'} epsilon "
          f"{epsilon_fraction(args.epsilon)} (from {origin})", flush=True)
    evaluate(
        args.model, dataset=args.dataset, split=args.split, n=args.n, seed=args.seed,
        source=args.source, path=args.path, epsilon=args.epsilon,
        attacks=names, steps_curve=_ints(args.steps_curve) or None,
        eps_curve=([args.epsilon * f for f in (0.25, 0.5, 1.0, 1.5, 2.0)]
                   if args.eps_curve == "auto" else _floats(args.eps_curve) or None),
        curve_n=args.curve_n,
        batch_size=args.batch_size, route=args.route, workdir=args.out,
        checks=not args.no_checks)
    print(open(os.path.join(args.out, "report.md")).read())
    return 0


def _models(args):
    from tf_advscale.models import list_models
    print("\n".join(list_models()))
    return 0


def _fine_tuned_from(meta):
    """`` (fine-tuned from NAME)`` for an entry whose training started from
    another entry's weights: its minutes are the fine-tuning's alone."""
    init = meta.get("recipe", {}).get("init")
    return f" (fine-tuned from `{init['zoo_entry']}`)" if init else ""


def _zoo_rows(meta, markdown):
    """``advscale zoo list``'s rows for one entry: one per evaluated route
    (an imported entry not yet evaluated: one row that says so)."""
    from tf_advscale import zoo
    rows = []
    if meta.get("imported") and not meta.get("evaluation"):
        eps = meta["threat_model"]["epsilon"]
        if markdown:
            return [f"| `{meta['name']}` | {meta['dataset']} | {eps} | default | not evaluated "
                    f"| | | | | | | | imported |"]
        return [f"{meta['name']:34s} {'default':11s} {meta['dataset']:20s} eps {eps:6s} "
                f"imported, not evaluated (advscale zoo eval {meta['name']})"]
    for route, ev in meta["evaluation"]["results"].items():
        aa = zoo.autoattack_results(meta, route)
        if markdown:
            seconds = meta["training"]["train_seconds"]
            with_aa = (f"{100 * aa['autoattack']:.2f} | {100 * aa['worst_case']:.2f} | "
                       f"{aa['n']:,}" if aa else "not run | - | -")
            rows.append(f"| `{meta['name']}` | {meta['dataset']} | "
                        f"{meta['threat_model']['epsilon']} | {route} | {100 * ev['clean']:.2f} | "
                        f"{100 * ev['pgd-20']:.2f} | {100 * ev['apgd-ce']:.2f} | "
                        f"{100 * ev['worst_case']:.2f} | {ev['n']:,} | {with_aa} | "
                        f"{seconds / 60:.0f} min{_fine_tuned_from(meta)} |")
        else:
            rows.append(f"{meta['name']:34s} {route:11s} {meta['dataset']:20s} "
                        f"eps {meta['threat_model']['epsilon']:6s} clean {100 * ev['clean']:.2f}"
                        f"  PGD-20 {100 * ev['pgd-20']:.2f}  APGD-CE {100 * ev['apgd-ce']:.2f}")
    return rows


def zoo_summary(meta, where):
    """``advscale zoo info NAME``: the few lines a user needs (``--json``: all)."""
    from tf_advscale import zoo
    a, t = meta.get("architecture") or {}, meta.get("threat_model") or {}
    arch = a.get("registry") or (f"{a.get('family', '?')} ResNet-{a.get('depth', '?')}"
                                 + (f" x{a['width']:g}" if a.get("width", 1) != 1 else ""))
    lines = [f"{meta['name']}: {arch} ({a.get('norm', '?')}), {meta['params']:,} parameters",
             f"  data: {meta.get('dataset', '?')}; threat model: {t.get('norm', '?')} "
             f"epsilon {t.get('epsilon', '?')}" + (", targeted" if t.get("targeted") else "")]
    ev = meta.get("evaluation")
    if not ev:
        lines.append("  not evaluated yet (advscale zoo eval NAME)")
    else:
        for route, r in ev["results"].items():
            aa = zoo.autoattack_results(meta, route)
            lines.append(f"  route {route}: clean {100 * r['clean']:.2f}, AutoAttack "
                         + (f"{100 * aa['autoattack']:.2f} ({aa['n']:,} test images)" if aa
                            else "not measured")
                         + f", worst case {100 * r['worst_case']:.2f} "
                         f"({', '.join(k for k in r if k not in ('clean', 'n', 'worst_case', 'sanity_checks_passed'))}; "
                         f"{r['n']:,} test images)")
    if meta.get("mixbn_routes"):
        lines.append(f"  routes: {', '.join(meta['mixbn_routes'])} "
                     f"(default {meta.get('default_route')})")
    lines.append(f"  file: {where} (sha256 {meta['source']['sha256'][:16]}...)")
    lines.append("  full record: advscale zoo info NAME --json")
    return "\n".join(lines)


def _zoo_list(args):
    """Prints ``advscale zoo list``'s table; returns 1 if an entry is broken, else 0."""
    from tf_advscale import zoo
    if args.markdown:
        print("| name | data | epsilon | route | clean | PGD-20 | APGD-CE | worst case "
              "| test images | AutoAttack | worst case, all attacks | AutoAttack images "
              "| training time |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    bad = []
    for name in zoo.list_models():
        try:  # one broken entry must not hide the others
            rows = _zoo_rows(zoo.info(name), args.markdown)
        except (zoo.ZooError, KeyError, TypeError, ValueError) as e:
            bad.append(name)
            print(f"advscale zoo list: {name} is broken and was left out: "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
            continue
        if rows:
            print("\n".join(rows))
    if bad:
        print(f"advscale zoo list: {len(bad)} broken entr{'y' if len(bad) == 1 else 'ies'}: "
              f"{bad}", file=sys.stderr)
        return 1
    return 0


def _zoo_info(args):
    """Prints an entry's summary, or all its metadata with ``--json``; returns 0."""
    from tf_advscale import zoo
    meta = zoo.info(args.name)
    print(json.dumps(meta, indent=2) if args.json else zoo_summary(meta, zoo.model_path(
        args.name) if not (meta.get("source") or {}).get("url") else meta["source"]["url"]))
    return 0


def _zoo_import(args):
    """Imports a PyTorch checkpoint as a new entry and prints it; returns 0."""
    from tf_advscale import zoo
    from tf_advscale.evaluate import epsilon_fraction
    from tf_advscale.torch_import import import_torch
    if not (args.checkpoint and args.import_name):
        raise ValueError("advscale zoo import ARCH needs --checkpoint FILE.pt and --name NAME")
    directory = import_torch(args.name, args.checkpoint, args.import_name,
                             dataset=args.dataset or "cifar10",
                             epsilon=epsilon_fraction(args.epsilon) if args.epsilon
                             else "8/255", norm=args.norm,
                             preprocess=args.preprocess, activation=args.activation,
                             zoo_dir=args.zoo_dir)
    meta = zoo.read_metadata(directory)
    print(json.dumps({"entry": directory, "params": meta["params"],
                      "verified_against_pytorch": meta["imported"]
                      ["verified_against_pytorch"]}, indent=2))
    return 0


def _zoo_publish(args):
    """Publishes a training run as a new entry and prints its results; returns 0."""
    from tf_advscale.zoo_publish import publish
    if not (args.workdir and args.train_command):
        raise ValueError("advscale zoo publish NAME needs --workdir and --train-command")
    meta = publish(args.workdir, args.name, args.train_command, out_dir=args.out or "zoo",
                   n=args.n, curve_n=args.curve_n or 500, epsilon=args.epsilon,
                   dataset_label=args.dataset_label, url=args.url)
    print(json.dumps(meta["evaluation"]["results"], indent=2))
    return 0


def _zoo_reevaluate(args):
    """Re-measures a published entry and prints its results; returns 0."""
    from tf_advscale.zoo_publish import reevaluate
    meta = reevaluate(os.path.join(args.out or "zoo", args.name), scratch=args.workdir,
                      n=args.n, curve_n=args.curve_n or 500, source=args.source,
                      path=args.path)
    print(json.dumps(meta["evaluation"]["results"], indent=2))
    return 0


def _zoo_autoattack(args):
    """Evaluates a published entry with AutoAttack into its metadata and card;
    prints the results; returns 0."""
    from tf_advscale.zoo_publish import add_autoattack
    n = None if args.n == 0 else (args.n or 1000)
    meta = add_autoattack(os.path.join(args.out or "zoo", args.name), n=n, seed=args.seed,
                          scratch=args.workdir, source=args.source, path=args.path,
                          batch_size=args.batch_size)
    print(json.dumps(meta["evaluation"]["autoattack"]["results"], indent=2))
    return 0


def _zoo_relabel(args):
    """Renames a published entry's data and prints the new name; returns 0."""
    from tf_advscale.zoo_publish import relabel
    if not args.dataset_label:
        raise ValueError("advscale zoo relabel NAME needs --dataset-label")
    meta = relabel(os.path.join(args.out or "zoo", args.name), args.dataset_label)
    print(f"{args.name}: dataset {meta['dataset']!r} (source {meta['dataset_source']!r})")
    return 0


def _zoo_eval(args):
    """Evaluates an entry and prints its summary and curves; returns 0."""
    from tf_advscale import zoo
    from tf_advscale.evaluate import evaluate, summary
    model, meta = zoo.load(args.name, route=args.route)
    if "recipe" in meta:
        data = zoo.data_args(meta["recipe"]["config"], source=args.source, path=args.path)
    else:  # an imported entry: its data set, read from where the user says
        data = {"dataset": args.dataset or meta["dataset"], "source": args.source,
                "path": args.path}
    report = evaluate(model, **data, n=args.n, seed=args.seed,
                      epsilon=meta["threat_model"]["epsilon_float"],
                      attacks=args.attacks.split(","),
                      steps_curve=_ints(args.steps_curve) or None,
                      curve_n=args.curve_n, route=args.route or "adversarial",
                      workdir=args.out, name=args.name, checks=not args.no_checks,
                      verbose=False)
    suspected = report["gradient_masking_suspected"]
    # The card's curves are what this command redoes: print them too.
    curves = {k: {"n": c["n"], "subset": c["subset"], "accuracy": c["accuracy"]}
              for k, c in report["curves"].items()}
    print(json.dumps({**summary(report), "sanity_checks_passed":
                      None if suspected is None else not suspected,
                      **({"curves": curves} if curves else {})}, indent=2))
    return 0


def _zoo_export(args):
    """Writes an entry's weights as a PyTorch state dict; returns 0."""
    from tf_advscale import zoo
    from tf_advscale.torch_import import arch_of_entry, export_torch
    if not args.out:
        raise ValueError("advscale zoo export NAME needs --out FILE.pt")
    model, meta = zoo.load(args.name)
    arch = arch_of_entry(meta)
    export_torch(model, arch, args.out)
    print(f"wrote {args.out}: {args.name} as a state dict of tf_advscale.torch_models' {arch}"
          " (mu/sigma: the input standardisation, to apply before it when present)")
    return 0


_ZOO_ACTIONS = {"info": _zoo_info, "import": _zoo_import, "export": _zoo_export,
                "publish": _zoo_publish, "reevaluate": _zoo_reevaluate,
                "autoattack": _zoo_autoattack, "relabel": _zoo_relabel, "eval": _zoo_eval}


def _zoo(args):
    if args.action == "list":
        return _zoo_list(args)
    if not args.name:
        raise ValueError(f"advscale zoo {args.action} needs a NAME (see `advscale zoo list`)")
    return _ZOO_ACTIONS.get(args.action, _zoo_eval)(args)


def _reproduce(args):
    from tf_advscale import config as config_lib
    from tf_advscale import reproduce
    if getattr(args, "measure_rate", False) and args.experiment != "plan":
        raise SystemExit(f"advscale reproduce: --measure-rate goes with 'plan'. Received: "
                         f"{args.experiment!r}")
    config = config_lib.load_file(args.config, runlocal=args.runlocal)
    if args.experiment == "report":
        # The other scales the report shows beside this one, from the same file.
        base = args.config.rsplit(":", 1)[0] if ":" in os.path.basename(args.config) \
            else args.config
        scales = {s: config_lib.load_file(f"{base}:{s}")
                  for s in config.get("compared_scales", [])}
        path = reproduce.write_report(args.results, args.out, datasets=config["datasets"],
                                      scales=scales)
        print(f"wrote {path}")
        return 0
    dataset = args.dataset or next(iter(config["datasets"]))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    results = args.results
    if args.runlocal and results == RESULTS_DEFAULT:
        results = args.workdir  # the tiny scale stays out of the report's default input
    plan = reproduce.Plan(config, dataset, args.workdir, seeds, results)
    if args.experiment in ("all", "plan"):
        names = reproduce.experiments_of(config)
    else:
        reproduce.check_experiment(config, args.experiment)
        names = [args.experiment]
    if args.experiment == "plan":
        from tf_advscale.reproduce import estimate
        rate = estimate.measure_rate(plan) if args.measure_rate else None
        print("\n".join(estimate.describe(plan, names, rate_here=rate)))
        return 0
    from tf_advscale import runner
    # Threads and determinism before any TensorFlow work (an evaluation may come first).
    runner.setup_runtime(plan.train_config(reproduce.Run(), plan.seeds[0]))
    for name in names:
        result = reproduce.run_experiment(plan, name)
        print(f"\n{result['table']}\n")
        for f in result["findings"]:
            print(f"- {f['claim']}: paper {f['paper']}; ours {f['ours']} -> {f['verdict']}")
        print(f"results: {os.path.join(plan.results, name, 'results.json')}", flush=True)
    return 0


COMMANDS = {"train": _train, "eval": _eval, "models": _models, "zoo": _zoo,
            "reproduce": _reproduce}


def run(args):
    """Runs the parsed command; a configuration, data or value error is one
    line on stderr and exit status 2."""
    from tf_advscale.config import ConfigError
    from tf_advscale.data import DataError
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, ValueError) as e:
        print(f"advscale: error: {e}", file=sys.stderr)
        return 2


def main(argv=None):
    """``advscale ARGS`` (``advscale_cli.main`` without its lazy import)."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
