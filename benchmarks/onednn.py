"""TensorFlow's oneDNN CPU kernels off against on, for configs/fast.py's
N-FGSM training step (images/s of one `AdversarialModel.train_on_batch`,
graph mode, batch 128, 2 intra-op threads, per architecture and precision)
and for a PGD-20 evaluation of one batch of 32 (float32; the work of
AutoAttack's gradient attacks), in one run on one machine.

TensorFlow switches its oneDNN optimisations on by itself only on some x86
CPUs (those with AVX-512-class features); elsewhere they are off unless the
environment sets TF_ENABLE_ONEDNN_OPTS=1, and TensorFlow reads it once, when
it is imported. So each setting runs in a fresh process, which also reports
whether oneDNN was in fact on there. The JSON names the CPU.

    python benchmarks/onednn.py --out results/bench_onednn_MACHINE.json
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = {"resnet20": ("cifar", 20), "preactresnet18": ("preact", 18)}
PRECISIONS = ("float32", "mixed_bfloat16")
SETTINGS = ("0", "1")


def _split(text, known, flag):
    items = [s for s in text.split(",") if s]
    unknown = [s for s in items if s not in known]
    if not items or unknown:
        raise SystemExit(f"{flag}: expected some of {sorted(known)}. Received: {text!r}")
    return items


def child(archs, precisions, batch, repeats, warmup, threads, eval_batch, eval_repeats):
    """The rates in this process, under its TF_ENABLE_ONEDNN_OPTS."""
    sys.path.insert(0, ROOT)
    from benchmarks.peers import EPS, _threads, _time, nfgsm_step_rate, random_batch
    _threads(threads)
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    from tf_advscale import attacks
    from tf_advscale.models import resnet

    x, y = random_batch(batch)
    rates = {}
    for arch in archs:
        family, depth = ARCHS[arch]
        rates[arch] = {p: round(nfgsm_step_rate(family, depth, p, x, y, repeats, warmup), 2)
                       for p in precisions}
        keras.utils.set_random_seed(0)
        classifier = resnet(depth, 10, family=family)
        pgd20 = attacks.PGD(epsilon=EPS, step_size=2.5 * EPS / 20, steps=20)
        fn = tf.function(lambda a, b: pgd20(lambda i: classifier(i, training=False), a, b))
        xe, ye = x[:eval_batch], y[:eval_batch]
        rates[arch]["pgd20_eval"] = round(
            len(xe) / _time(lambda: fn(xe, ye).numpy(), eval_repeats, warmup=1), 2)
        print(arch, rates[arch], file=sys.stderr, flush=True)
    from tf_advscale import distribute
    return {"onednn_enabled": bool(_pywrap_util_port.IsMklEnabled()),
            "machine": distribute.describe_machine(), "images_per_s": rates}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--precisions", default="float32",
                   help="comma-separated: float32, mixed_bfloat16 (several times slower on a "
                        "CPU without native bfloat16)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--eval-repeats", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    archs = _split(a.archs, ARCHS, "--archs")
    precisions = _split(a.precisions, PRECISIONS, "--precisions")
    if a.child:
        print(json.dumps(child(archs, precisions, a.batch, a.repeats, a.warmup, a.threads,
                               a.eval_batch, a.eval_repeats)))
        return
    if not a.out:
        p.error("--out is required")
    args = [sys.executable, os.path.abspath(__file__), "--child", "--archs", ",".join(archs),
            "--precisions", ",".join(precisions), "--batch", str(a.batch),
            "--repeats", str(a.repeats), "--warmup", str(a.warmup), "--threads", str(a.threads),
            "--eval-batch", str(a.eval_batch), "--eval-repeats", str(a.eval_repeats)]
    runs = {}
    for setting in SETTINGS:
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="2")
        print(f"TF_ENABLE_ONEDNN_OPTS={setting}", file=sys.stderr, flush=True)
        out = subprocess.run(args, env=env, check=True, stdout=subprocess.PIPE, text=True)
        runs[setting] = json.loads(out.stdout.strip().splitlines()[-1])
    sys.path.insert(0, ROOT)
    import tensorflow as tf

    from tf_advscale import distribute  # this process's oneDNN is neither run's
    ratio = {arch: {k: round(v / runs["0"]["images_per_s"][arch][k], 3)
                    for k, v in runs["1"]["images_per_s"][arch].items()} for arch in archs}
    report = {"machine": distribute.describe_machine(kernels=False), "threads": a.threads,
              "batch": a.batch, "repeats": a.repeats, "warmup": a.warmup,
              "eval_batch": a.eval_batch, "eval_repeats": a.eval_repeats, "eval_warmup": 1,
              "versions": {"tensorflow": tf.__version__},
              "what": "images/s of one N-FGSM training step per precision (batch) and of "
                      "a PGD-20 evaluation of one batch (eval_batch, float32), median of the "
                      "repeats, each TF_ENABLE_ONEDNN_OPTS setting in its own process",
              "TF_ENABLE_ONEDNN_OPTS": runs, "on_over_off": ratio}
    from tf_advscale.files import write_json
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    write_json(a.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
