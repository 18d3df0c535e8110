"""``runner.run`` of a tiny config under MultiWorkerMirroredStrategy: one
worker of the cluster in TF_CONFIG. Usage: multiworker_run.py WORKDIR [INIT_FROM]"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from tf_advscale import config as config_lib  # noqa: E402
from tf_advscale import runner  # noqa: E402


def main(workdir, init_from=None):
    config = config_lib.merge({
        "data": {"dataset": "fashion_mnist_sample", "batch_size": 16},
        "model": {"depth": 8, "family": "cifar"},
        "attack": {"name": "pgd", "epsilon": 0.1, "step_size": 0.05, "steps": 1},
        "eval_attack": None,
        "optimizer": {"learning_rate": 0.05, "epochs": 2, "warmup_epochs": 0},
        "eval": {"val_subset": 32, "test_subset": 32},
        "checkpoint": {"every_steps": 3, "keep": 2},
        "distribute": {"strategy": "multi_worker"},
        # One thread each: two workers share this machine's cores without
        # starving the coordination service's heartbeats.
        "threads": {"intra_op": 1, "inter_op": 1},
        "deterministic": True,
        "init_from": init_from,
    })
    runner.run(config, workdir, verbose=0)


if __name__ == "__main__":
    main(*sys.argv[1:3])
