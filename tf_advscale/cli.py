"""The ``advscale`` command.

    advscale train [--config configs/X.py] [--workdir DIR] [--runlocal] [--set KEY=VALUE ...]
    advscale eval --model M.keras --dataset fashion_mnist --n 1000 --epsilon 0.1 --out DIR
    advscale models
    advscale zoo list | info NAME
    advscale zoo eval NAME [--n 500] [--route clean] [--path DATA_DIR] [--source tfds]
                      [--steps-curve 10,20,50 --curve-n 500] [--no-checks] [--out DIR]
    advscale zoo publish NAME --workdir RUN --train-command CMD | reevaluate NAME
    advscale zoo relabel NAME --dataset-label L
    advscale reproduce EXPERIMENT [--dataset fmnist] | all | report

With no ``--config`` the built-in default runs: PGD-7 adversarial training
of a CIFAR-style ResNet-8 on the Fashion-MNIST sample shipped with the
package (no download), then a PGD-20 evaluation.
"""

import argparse
import json
import os
import sys


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train(args):
    from tf_advscale import config as config_lib
    from tf_advscale import runner
    config = config_lib.load(args.config, runlocal=args.runlocal, overrides=args.set)
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


def eval_fraction(text):
    """"8/255" or "0.1" -> float."""
    import fractions
    try:
        return float(fractions.Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


# The usual L-inf radius per data set, when neither --epsilon nor zoo metadata says.
DATASET_EPSILON = {"fashion_mnist": 0.1, "fashion_mnist_sample": 0.1, "mnist": 0.3}


def eval_defaults(model, dataset, epsilon):
    """(dataset, epsilon, where the epsilon came from) for ``advscale eval``: an
    explicit --epsilon; else the zoo metadata beside the model file; else the
    data set's usual radius (8/255 for natural images)."""
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
    if meta and (meta.get("threat_model") or {}).get("epsilon_float"):
        return dataset, float(meta["threat_model"]["epsilon_float"]), meta_path
    return dataset, DATASET_EPSILON.get(dataset, 8 / 255), f"the default for {dataset}"


def _eval(args):
    from tf_advscale.evaluate import epsilon_fraction, evaluate
    args.dataset, args.epsilon, origin = eval_defaults(args.model, args.dataset, args.epsilon)
    print(f"advscale eval: {args.dataset}, epsilon {epsilon_fraction(args.epsilon)} "
          f"(from {origin})", flush=True)
    report = evaluate(
        args.model, dataset=args.dataset, split=args.split, n=args.n, seed=args.seed,
        source=args.source, path=args.path, epsilon=args.epsilon,
        attacks=[a for a in args.attacks.split(",") if a],
        steps_curve=_ints(args.steps_curve) or None,
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


def _zoo_rows(meta, markdown):
    """``advscale zoo list``'s rows for one entry: one per evaluated route
    (an imported entry not yet evaluated: one row that says so)."""
    rows = []
    if meta.get("imported") and not meta.get("evaluation"):
        eps = meta["threat_model"]["epsilon"]
        if markdown:
            return [f"| `{meta['name']}` | {meta['dataset']} | {eps} | default | not evaluated "
                    f"| | | | | imported |"]
        return [f"{meta['name']:34s} {'default':11s} {meta['dataset']:20s} eps {eps:6s} "
                f"imported, not evaluated (advscale zoo eval {meta['name']})"]
    for route, ev in meta["evaluation"]["results"].items():
        if markdown:
            seconds = meta["training"]["train_seconds"]
            rows.append(f"| `{meta['name']}` | {meta['dataset']} | "
                        f"{meta['threat_model']['epsilon']} | {route} | {100 * ev['clean']:.2f} | "
                        f"{100 * ev['pgd-20']:.2f} | {100 * ev['apgd-ce']:.2f} | "
                        f"{100 * ev['worst_case']:.2f} | {ev['n']:,} | {seconds / 60:.0f} min |")
        else:
            rows.append(f"{meta['name']:34s} {route:11s} {meta['dataset']:20s} "
                        f"eps {meta['threat_model']['epsilon']:6s} clean {100 * ev['clean']:.2f}"
                        f"  PGD-20 {100 * ev['pgd-20']:.2f}  APGD-CE {100 * ev['apgd-ce']:.2f}")
    return rows


def zoo_summary(meta, where):
    """``advscale zoo info NAME``: the few lines a user needs (``--json``: all)."""
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
            aa = r.get("autoattack")
            lines.append(f"  route {route}: clean {100 * r['clean']:.2f}, AutoAttack "
                         + (f"{100 * aa:.2f}" if aa is not None else "not measured")
                         + f", worst case {100 * r['worst_case']:.2f} "
                         f"({', '.join(k for k in r if k not in ('clean', 'n', 'worst_case', 'sanity_checks_passed'))}; "
                         f"{r['n']:,} test images)")
    if meta.get("mixbn_routes"):
        lines.append(f"  routes: {', '.join(meta['mixbn_routes'])} "
                     f"(default {meta.get('default_route')})")
    lines.append(f"  file: {where} (sha256 {meta['source']['sha256'][:16]}...)")
    lines.append("  full record: advscale zoo info NAME --json")
    return "\n".join(lines)


def _zoo(args):
    from tf_advscale import zoo
    if args.action == "list":
        if args.markdown:
            print("| name | data | epsilon | route | clean | PGD-20 | APGD-CE | worst case "
                  "| test images | training time |")
            print("|---|---|---|---|---|---|---|---|---|---|")
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
    if not args.name:
        raise ValueError(f"advscale zoo {args.action} needs a NAME (see `advscale zoo list`)")
    if args.action == "info":
        meta = zoo.info(args.name)
        print(json.dumps(meta, indent=2) if args.json else zoo_summary(meta, zoo.model_path(
            args.name) if not (meta.get("source") or {}).get("url") else meta["source"]["url"]))
        return 0
    if args.action == "import":
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
    if args.action == "publish":
        from tf_advscale.zoo_publish import publish
        if not (args.workdir and args.train_command):
            raise ValueError("advscale zoo publish NAME needs --workdir and --train-command")
        meta = publish(args.workdir, args.name, args.train_command, out_dir=args.out or "zoo",
                       n=args.n, epsilon=args.epsilon, dataset_label=args.dataset_label)
        print(json.dumps(meta["evaluation"]["results"], indent=2))
        return 0
    if args.action == "reevaluate":
        from tf_advscale.zoo_publish import reevaluate
        meta = reevaluate(os.path.join(args.out or "zoo", args.name), scratch=args.workdir,
                          n=args.n, curve_n=args.curve_n or 500, source=args.source,
                          path=args.path)
        print(json.dumps(meta["evaluation"]["results"], indent=2))
        return 0
    if args.action == "relabel":
        from tf_advscale.zoo_publish import relabel
        if not args.dataset_label:
            raise ValueError("advscale zoo relabel NAME needs --dataset-label")
        meta = relabel(os.path.join(args.out or "zoo", args.name), args.dataset_label)
        print(f"{args.name}: dataset {meta['dataset']!r} (source {meta['dataset_source']!r})")
        return 0
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


RESULTS_DEFAULT = "results/reproduce"
NO_CHECKS = ("skip the gradient-masking sanity checks (about 5x the cost of a PGD-20 "
             "evaluation): a quick re-measurement, reported as not checked")


def _reproduce(args):
    from tf_advscale import config as config_lib
    from tf_advscale import reproduce
    config = config_lib.load_file(args.config, runlocal=args.runlocal)
    if args.experiment == "report":
        path = reproduce.write_report(args.results, args.out, datasets=config["datasets"])
        print(f"wrote {path}")
        return 0
    dataset = args.dataset or next(iter(config["datasets"]))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    results = args.results
    if args.runlocal and results == RESULTS_DEFAULT:
        results = args.workdir  # the tiny scale stays out of the report's default input
    plan = reproduce.Plan(config, dataset, args.workdir, seeds, results)
    from tf_advscale import runner
    # Threads and determinism before any TensorFlow work (an evaluation may come first).
    runner.setup_runtime(plan.train_config(reproduce.Run(), plan.seeds[0]))
    names = list(reproduce.EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    for name in names:
        result = reproduce.run_experiment(plan, name)
        print(f"\n{result['table']}\n")
        for f in result["findings"]:
            print(f"- {f['claim']}: paper {f['paper']}; ours {f['ours']} -> {f['verdict']}")
        print(f"results: {os.path.join(plan.results, name, 'results.json')}", flush=True)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="advscale", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a config file with model.fit",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--config", help="a config file, optionally with an argument: "
                                    "configs/adversarial.py:fmnist,mixed_mixbn")
    t.add_argument("--workdir", help="output directory (default runs/<config name>)")
    t.add_argument("--runlocal", action="store_true", help="the config's small version")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optimizer.epochs=3 (repeatable)")
    t.set_defaults(fn=_train)
    e = sub.add_parser("eval", help="robustness evaluation of a saved model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--model", required=True, help="a .keras file")
    e.add_argument("--dataset", default=None,
                   help="default: the zoo entry's, else fashion_mnist")
    e.add_argument("--source", default=None, help="tfds | folder | idx | sample")
    e.add_argument("--path", default=None, help="data directory for folder/idx sources")
    e.add_argument("--split", default="test", help="the split evaluated")
    e.add_argument("--n", type=int, default=1000, help="images (a seeded random subset)")
    e.add_argument("--seed", type=int, default=0, help="seed of the subset and the attacks")
    e.add_argument("--epsilon", type=eval_fraction, default=None,
                   help="e.g. 8/255 or 0.1; default: the zoo metadata beside the model "
                        "file, else 0.1 for Fashion-MNIST and 8/255 for natural images")
    e.add_argument("--attacks", default="pgd-20,pgd-100,apgd-ce,apgd-t,square",
                   help="comma-separated attack names (see tf_advscale.attacks.registry)")
    e.add_argument("--steps-curve", default="10,20,50,100,200,500,1000,2000",
                   help="PGD step counts for the steps curve ('' for none)")
    e.add_argument("--eps-curve", default="auto",
                   help="epsilons for the epsilon curve, e.g. 2/255,4/255; 'auto': "
                        "0.25-2x the epsilon; '' for none")
    e.add_argument("--curve-n", type=int, default=None,
                   help="images for curves and checks, drawn with --seed (default all)")
    e.add_argument("--batch-size", type=int, default=250)
    e.add_argument("--no-checks", action="store_true", help=NO_CHECKS)
    e.add_argument("--route", default="adversarial", help="MixBN route to evaluate")
    e.add_argument("--out", required=True, help="output directory (resumes if it holds batches)")
    e.set_defaults(fn=_eval)
    m = sub.add_parser("models", help="list the registered model names")
    m.set_defaults(fn=_models)
    z = sub.add_parser("zoo", help="pretrained robust models: list | info NAME | eval NAME | "
                                   "import ARCH")
    z.add_argument("action",
                   choices=["list", "info", "eval", "publish", "reevaluate", "relabel", "import"])
    z.add_argument("name", nargs="?", help="an entry; import: the architecture (preactresnet18, "
                                           "resnet18, wrn-28-10, wrn-34-10, wrn-34-20, wrn-70-16, wrn-16-4)")
    z.add_argument("--checkpoint", help="import: the PyTorch state dict (.pt / .pth)")
    z.add_argument("--name", dest="import_name", help="import: the new entry's name, "
                                                       "e.g. preactresnet18.wong2020_cifar10")
    z.add_argument("--dataset", default=None, help="import: the data set (default cifar10)")
    z.add_argument("--norm", default="linf", help="import: threat model, linf | l2")
    z.add_argument("--preprocess", default="none",
                   help="import: none (images in [0, 1], the default) | "
                        "meanstd:M1,M2,M3/S1,S2,S3; buffers in the checkpoint win")
    z.add_argument("--activation", default="relu", help="import: relu | silu (WRNs)")
    z.add_argument("--zoo-dir", default=None, help="import: where the entry is written "
                                                   "(default: the first TF_ADVSCALE_ZOO dir)")
    z.add_argument("--markdown", action="store_true", help="list: a markdown table")
    z.add_argument("--json", action="store_true", help="info: the full metadata as JSON")
    z.add_argument("--n", type=int, default=None,
                   help="eval, publish, reevaluate: test images (a seeded subset; default all)")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--attacks", default="pgd-20,apgd-ce")
    z.add_argument("--route", default=None, help="MixBN route: adversarial | clean")
    z.add_argument("--source", default=None,
                   help="eval, reevaluate: tfds | folder | idx (default: the entry's training "
                        "data's)")
    z.add_argument("--path", default=None,
                   help="eval, reevaluate: the data directory (default: the entry's training "
                        "data's, "
                        "relative to the current directory, or the loader's default)")
    z.add_argument("--steps-curve", default="",
                   help="eval: PGD step counts for a steps curve, e.g. 10,20,50,100,200")
    z.add_argument("--curve-n", type=int, default=None,
                   help="eval: images for the curve and checks, drawn with --seed (default all; "
                        "reevaluate: 500)")
    z.add_argument("--no-checks", action="store_true", help="eval: " + NO_CHECKS)
    z.add_argument("--out", default=None, help="eval: resumable output directory; "
                                                 "publish, reevaluate, relabel: zoo directory "
                                                 "(default zoo/)")
    z.add_argument("--workdir", help="publish: the advscale train work directory; reevaluate: "
                   "a resumable scratch directory (default runs/zoo_reevaluate/NAME-SHA)")
    z.add_argument("--train-command", help="publish: the command that trained it")
    z.add_argument("--dataset-label", help="publish, relabel: the data's name on the card and in the "
                   "zoo table (default: the run's 'dataset (source)')")
    z.add_argument("--epsilon", type=eval_fraction, default=None,
                   help="publish: threat-model epsilon (default: the run's eval attack's); "
                        "import: the checkpoint's (default 8/255)")
    z.set_defaults(fn=_zoo)
    from tf_advscale.reproduce import EXPERIMENTS
    r = sub.add_parser("reproduce", help="the paper's experiments at small scale, and "
                                         "REPRODUCTION.md")
    r.add_argument("experiment", choices=list(EXPERIMENTS) + ["all", "report"])
    r.add_argument("--config", default="configs/reproduce.py",
                   help="the reproduce config, optionally with a scale: "
                        "configs/reproduce.py:paper")
    r.add_argument("--dataset", default=None, help="a data set of the config (default: its first)")
    r.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    r.add_argument("--workdir", default="runs/reproduce", help="trained models and evaluations")
    r.add_argument("--results", default=RESULTS_DEFAULT,
                   help="tables, plots and results.json of each experiment (report reads it)")
    r.add_argument("--runlocal", action="store_true", help="the tiny scale")
    r.add_argument("--out", default="REPRODUCTION.md", help="report: the file to write")
    r.set_defaults(fn=_reproduce)
    return parser


def main(argv=None):
    _quiet_tf()
    args = build_parser().parse_args(argv)
    from tf_advscale.config import ConfigError
    from tf_advscale.data import DataError
    try:
        return args.fn(args)
    except (ConfigError, DataError, ValueError) as e:
        print(f"advscale: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
