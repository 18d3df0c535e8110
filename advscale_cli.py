"""The ``advscale`` command.

    advscale train [--config configs/X.py] [--workdir DIR] [--runlocal] [--set KEY=VALUE ...]
    advscale eval --model M.keras --dataset fashion_mnist --n 1000 --epsilon 0.1 --out DIR
    advscale models
    advscale zoo list | info NAME
    advscale zoo eval NAME [--n 500] [--route clean] [--path DATA_DIR] [--source tfds]
                      [--steps-curve 10,20,50 --curve-n 500] [--no-checks] [--out DIR]
    advscale zoo publish NAME --workdir RUN --train-command CMD | reevaluate NAME
    advscale zoo autoattack NAME [--n 1000]
    advscale zoo relabel NAME --dataset-label L
    advscale zoo import ARCH --checkpoint FILE.pt --name NAME | export NAME --out FILE.pt
    advscale reproduce EXPERIMENT [--dataset fmnist] | all | report | plan
                      [--config configs/reproduce.py:medium]

With no ``--config`` the built-in default runs: PGD-7 adversarial training
of a CIFAR-style ResNet-8 on the Fashion-MNIST sample shipped with the
package (no download), then a PGD-20 evaluation.

This module is the command's argument parser and lies outside the package on
purpose: ``import tf_advscale`` imports TensorFlow (so that Keras' load_model
finds the registered classes), which takes seconds and prints TensorFlow's
banner. ``advscale --help`` and argument errors never import it; the commands
themselves are in ``tf_advscale.cli``, imported once the arguments parse.
"""

import argparse
import fractions
import os
import sys

# The experiments of ``advscale reproduce``, in their order; the one list is
# tf_advscale.reproduce.EXPERIMENTS, which this copy must equal (tested): it is
# copied only because reading it imports TensorFlow.
REPRODUCE_EXPERIMENTS = ("clean_portion", "attack_strength", "mixbn", "consistent_bn", "norms",
                         "alp", "depth", "diagnosis", "depth_search")

RESULTS_DEFAULT = "results/reproduce"
NO_CHECKS = ("skip the gradient-masking sanity checks (about 5x the cost of a PGD-20 "
             "evaluation): a quick re-measurement, reported as not checked")


def eval_fraction(text):
    """"8/255" or "0.1" -> float."""
    try:
        return float(fractions.Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


def _add_train(sub):
    t = sub.add_parser("train", help="train from a config file with model.fit",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--config", help="a config file, optionally with an argument: "
                                    "configs/adversarial.py:fmnist,mixed_mixbn")
    t.add_argument("--workdir", help="output directory (default runs/<config name>)")
    t.add_argument("--runlocal", action="store_true", help="the config's small version")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optimizer.epochs=3 (repeatable)")


def _add_eval(sub):
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


def _add_zoo(sub):
    # One flat list of options shared by the zoo actions; each help says which read it.
    z = sub.add_parser("zoo", help="pretrained robust models: list | info NAME | eval NAME | "
                                   "import ARCH | export NAME")
    z.add_argument("action", choices=["list", "info", "eval", "publish", "reevaluate",
                                      "autoattack", "relabel", "import", "export"])
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
                   help="eval, publish, reevaluate: test images (a seeded subset; default all); "
                        "autoattack: default 1000, 0 for all")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--batch-size", type=int, default=250,
                   help="autoattack: images per saved batch (smaller: resumes losing less)")
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
                        "publish, reevaluate: 500)")
    z.add_argument("--no-checks", action="store_true", help="eval: " + NO_CHECKS)
    z.add_argument("--out", default=None, help="eval: resumable output directory; "
                                                 "export: the PyTorch state dict to write; "
                                                 "publish, reevaluate, relabel: zoo directory "
                                                 "(default zoo/)")
    z.add_argument("--workdir", help="publish: the advscale train work directory; reevaluate: "
                   "a resumable scratch directory (default runs/zoo_reevaluate/NAME-SHA)")
    z.add_argument("--train-command", help="publish: the command that trained it")
    z.add_argument("--url", default=None, help="publish: where installed packages download the "
                   "model file (source.url; large files stay out of the wheel)")
    z.add_argument("--dataset-label", help="publish, relabel: the data's name on the card and in the "
                   "zoo table (default: the run's 'dataset (source)')")
    z.add_argument("--epsilon", type=eval_fraction, default=None,
                   help="publish: threat-model epsilon (default: the run's eval attack's); "
                        "import: the checkpoint's (default 8/255)")


def _add_reproduce(sub):
    r = sub.add_parser("reproduce", help="the paper's experiments at small (or medium) scale, "
                                         "and REPRODUCTION.md")
    r.add_argument("experiment", choices=list(REPRODUCE_EXPERIMENTS) + ["all", "report", "plan"],
                   help="an experiment; all: the scale's experiments; report: REPRODUCTION.md; "
                        "plan: list what all would train and evaluate, and its rough cost")
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
    r.add_argument("--measure-rate", action="store_true",
                   help="plan: time a few training steps of the base run here and give hours "
                        "at that rate (else at the rate of runs already trained, which may "
                        "have been on another machine)")


def build_parser():
    """The parser of every subcommand; ``args.command`` names the one given."""
    parser = argparse.ArgumentParser(prog="advscale", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    sub.add_parser("models", help="list the registered model names")
    _add_zoo(sub)
    _add_reproduce(sub)
    return parser


def main(argv=None):
    """``advscale``'s entry point: parses, then imports TensorFlow to run the command."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    args = build_parser().parse_args(argv)
    from tf_advscale import cli
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
