"""The ``advscale`` command.

    advscale train [--config configs/X.py] [--workdir DIR] [--runlocal] [--set KEY=VALUE ...]
    advscale models

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
    name = os.path.splitext(os.path.basename(args.config))[0] if args.config else "quickstart"
    workdir = args.workdir or os.path.join("runs", name + ("_runlocal" if args.runlocal else ""))
    print(f"advscale train: config={args.config or '(built-in default)'} workdir={workdir}",
          flush=True)
    _, metrics = runner.run(config, workdir)
    print(json.dumps(metrics["results"], indent=2))
    print(f"metrics: {os.path.join(workdir, 'metrics.json')}")
    return 0


def _models(args):
    from tf_advscale.models import list_models
    print("\n".join(list_models()))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="advscale", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a config file with model.fit")
    t.add_argument("--config", help="path to a config file (configs/*.py)")
    t.add_argument("--workdir", help="output directory (default runs/<config name>)")
    t.add_argument("--runlocal", action="store_true", help="the config's small version")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optimizer.epochs=3 (repeatable)")
    t.set_defaults(fn=_train)
    m = sub.add_parser("models", help="list the registered model names")
    m.set_defaults(fn=_models)
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
