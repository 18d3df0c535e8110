"""Graph mode against XLA for the adversarial train step on this machine.

    python benchmarks/xla.py --out results/bench_xla.json

CIFAR ResNet-20, batch 128, PGD-7 training step (AdversarialModel): images/s
with (a) plain graph mode, (b) the whole train step under XLA
(``jit_compile=True``), (c) only the attack loop under XLA
(``attack_jit_compile=True``). This is what ``"auto"`` (XLA only on GPU/TPU)
rests on; rerun it on a new device before changing that rule.
"""

import argparse
import json
import os
import statistics
import sys
import time

# Measure this checkout, not an installed copy of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench_xla.json")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_advscale import attacks
    from tf_advscale.models import resnet
    from tf_advscale.training import AdversarialModel
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(a.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(a.batch,)).astype("int32")
    out = {}
    for name, (step_xla, attack_xla) in {"graph": (False, False), "xla_step": (True, False),
                                         "xla_attack": (False, True)}.items():
        keras.utils.set_random_seed(0)
        model = AdversarialModel(resnet(depth=20), attack=attacks.PGD(8 / 255, 2 / 255, 7),
                                 attack_jit_compile=attack_xla, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=step_xla)
        for _ in range(2):
            model.train_on_batch(x, y)
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t)
        out[name] = round(a.batch / statistics.median(times), 2)
        print(name, out[name], "img/s", flush=True)
    from tf_advscale import distribute
    report = {"images_per_s": out, "batch": a.batch, "model": "CIFAR ResNet-20, PGD-7",
              "devices": [d.name for d in tf.config.list_logical_devices()],
              "machine": distribute.describe_machine(),
              "tensorflow": tf.__version__}
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
