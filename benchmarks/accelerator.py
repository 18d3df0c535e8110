"""Accelerator readiness: the workloads that matter on a GPU, in one short run.

    bash benchmarks/accelerator.sh                 # on a GPU machine: under 8 minutes
    bash benchmarks/accelerator.sh --tiny          # anywhere: the same code at a tiny size

Records, as JSON (``--out``, default ``results/accelerator.json``):

* the PreActResNet-18 fast (N-FGSM) adversarial training step at batch 512,
  XLA off and on, float32 and mixed precision (bfloat16; float16 with loss
  scaling too when the device is a GPU), as steps/s and the CIFAR-10 epoch
  time they imply (50,000 images; timed steps, extrapolated, said so);
* a ResNet-50 PGD-7 adversarial training step at 224 px, batch 64;
* AutoAttack (standard version) throughput in images/s on the zoo's
  ``resnet20.pgd3_cifar10jpeg`` (robust, so every stage runs), 500 images.

``--tiny`` shrinks every size (batch 4, PreActResNet-18 at 1/16 width,
ResNet-8 instead of 50 at 32 px, 4 images and short attacks for AutoAttack)
so that a CPU runs it in under a minute: a test, not a measurement (the JSON
says so).
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale.files import write_json  # noqa: E402
from tf_advscale import attacks, zoo  # noqa: E402
from tf_advscale.models import resnet  # noqa: E402
from tf_advscale.training import AdversarialModel  # noqa: E402

EPS = 8 / 255


def _step_rate(build, batch, shape, precision, jit, steps, warmup=2):
    """Steps/s of ``AdversarialModel.fit`` on random data (after warm-up)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        trainer = build()
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        trainer.compile(optimizer=optimizer, jit_compile=jit)
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(batch,) + shape).astype("float32")
        y = rng.integers(0, 10, batch)
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()
        trainer.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0)
        start = time.perf_counter()
        trainer.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps / (time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy(previous)


def fast_training(tiny, gpu):
    batch = 4 if tiny else 512
    steps = 2 if tiny else 20
    precisions = ["float32", "mixed_bfloat16"] + (["mixed_float16"] if gpu else [])
    out = []
    for precision in precisions:
        for jit in (False, True):
            def build():
                # --tiny: the same architecture at 1/16 of its width.
                return AdversarialModel(resnet(18, 10, family="preact",
                                               width=1 / 16 if tiny else 1.0),
                                        attack={"name": "n_fgsm", "epsilon": EPS}, seed=0)
            rate = _step_rate(build, batch, (32, 32, 3), precision, jit, steps)
            out.append({"precision": precision, "xla": jit, "batch": batch,
                        "steps_per_s": round(rate, 3),
                        "epoch_seconds_extrapolated": round(50_000 / batch / rate, 1),
                        "timed_steps": steps})
            print(out[-1], flush=True)
    return out


def resnet50_pgd7(tiny):
    depth, size, batch = (8, 32, 4) if tiny else (50, 224, 64)
    steps = 2 if tiny else 10

    def build():
        family = "cifar" if tiny else "imagenet"
        return AdversarialModel(
            resnet(depth, 10 if tiny else 1000, family=family, input_shape=(size, size, 3)),
            attack={"name": "pgd", "epsilon": EPS, "step_size": 2 / 255, "steps": 7}, seed=0)
    rate = _step_rate(build, batch, (size, size, 3), "float32", False, steps)
    return {"model": f"ResNet-{depth}", "image_size": size, "batch": batch, "attack": "PGD-7",
            "steps_per_s": round(rate, 3), "images_per_s": round(rate * batch, 1)}


def autoattack_throughput(tiny):
    from tf_advscale.evaluate import run_attacks
    model, meta = zoo.load("resnet20.pgd3_cifar10jpeg")
    n = 4 if tiny else 500
    # Real test images are not needed for a rate, but a robust model's
    # behaviour is: random images are mostly misclassified and would skip work.
    # So the images are the zoo check set when the data is there, else noise.
    try:
        from tf_advscale import data
        d = zoo.data_args(meta["recipe"]["config"])
        x, y, _ = data.as_numpy(d["dataset"], "test", source=d["source"], path=d["path"],
                                subset=n, seed=0)
        images = "CIFAR-10 (JPEG q75) test images"
    except Exception:  # no data on this machine
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(n, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 10, n).astype("int32")
        images = "uniform noise (no CIFAR-10 copy found)"
    aa = attacks.AutoAttack(EPS)
    if tiny:
        short = [("apgd-ce", attacks.APGD(EPS, 2)),
                 ("apgd-t", attacks.APGD(EPS, 2, loss="dlr_targeted", n_target_classes=2)),
                 ("fab-t", attacks.FAB(EPS, 2, n_target_classes=2)),
                 ("square", attacks.Square(EPS, 5))]
        aa.attacks = lambda: short
    start = time.perf_counter()
    correct, _ = run_attacks(model, x, y.astype("int32"), {"autoattack": aa},
                             batch_size=250, seed=0, verbose=False)
    seconds = time.perf_counter() - start
    return {"model": "resnet20.pgd3_cifar10jpeg", "images": images, "n": n,
            "clean_accuracy": float(correct["clean"].mean()),
            "autoattack_accuracy": float(correct["autoattack"].mean()),
            "seconds": round(seconds, 1), "images_per_s": round(n / seconds, 2),
            "includes": "graph tracing of the four attacks (once per run)"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a test, not a measurement")
    p.add_argument("--out", default="results/accelerator.json")
    args = p.parse_args(argv)
    gpus = tf.config.list_physical_devices("GPU")
    started = time.time()
    result = {
        "what": "tiny CPU-size run: a test of the script, not a measurement" if args.tiny
        else "accelerator readiness benchmark",
        "device": (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
                   if gpus else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"),
        "fast_training_preactresnet18_nfgsm": fast_training(args.tiny, bool(gpus)),
        "resnet_pgd7_step": resnet50_pgd7(args.tiny),
        "autoattack": autoattack_throughput(args.tiny),
        "versions": {"tf_advscale": tf_advscale.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }
    result["total_seconds"] = round(time.time() - started, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
