"""Re-reads the catastrophic-overfitting monitor on a carried checkpoint.

    python results/zoo_training/check_co_monitor.py WORKDIR CONFIG [PRECISION]

Restores the newest checkpoint of an ``advscale train`` work directory and
prints, on the monitor's held-out batch (the first validation batch), its
PGD-10 reading, the batch's clean accuracy, ``test_step``'s PGD-20 on the
same batch, and the whole validation set's, so that a monitor reading can be
compared with validation on the same weights. PRECISION defaults to the one
the run trained in (its ``config.json``, with "auto" settled as ``advscale
train`` settles it). Run it from the repository root.
"""

import sys

import tensorflow as tf

from tf_advscale import checkpoint as ckpt_lib
from tf_advscale import config as config_lib
from tf_advscale import recipe, runner
from tf_advscale.callbacks import CatastrophicOverfittingMonitor


def main(workdir, config_path, precision=None):
    config = config_lib.load(config_path)
    runner.setup_runtime(config)
    if precision is None:
        config, _ = runner.settle_precision(config, workdir)
        precision = config["trainer"]["precision"]
    config["trainer"]["precision"] = precision
    (_, train_info), (val, _), _ = runner.load_data(config)
    model = recipe.build(config, train_info)
    state = ckpt_lib.TrainingState(f"{workdir}/state", train_info["steps_per_epoch"])
    print("checkpoint (epoch, step):", state.load())
    x, y = next(iter(val))
    model(x[:2])
    state.restore_into(model)
    monitor = CatastrophicOverfittingMonitor(x, y)
    monitor.set_model(model)
    print(f"{precision}: monitor PGD-10 {monitor._measure():.4f}, "
          f"clean {monitor._measure_clean():.4f} on the {len(y)} held-out images")
    print("test_step on the same batch:", model.evaluate(val.take(1), verbose=0, return_dict=True))
    print("whole validation set:", model.evaluate(val, verbose=0, return_dict=True))


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    main(*sys.argv[1:])
