"""Float32 against mixed bfloat16 for configs/fast.py's N-FGSM training step,
on this machine's CPU: images/s of one `AdversarialModel.train_on_batch`
(graph mode, batch 128, 2 intra-op threads) for each architecture and
precision, with the CPU's name and whether it has native bfloat16 (the
AVX512_BF16 or AMX_BF16 flag).

Which precision is faster depends on the CPU: without native bfloat16,
TensorFlow emulates it and the step is several times slower. The JSON says
which CPU gave which numbers, so results measured on different machines are
not compared as if they were one.

    python benchmarks/precision.py --out results/bench_precision_MACHINE.json
"""

import argparse
import json
import os
import sys

# Measure this checkout, not an installed copy of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.peers import _threads, nfgsm_step_rate, random_batch  # noqa: E402
from tf_advscale import distribute  # noqa: E402

ARCHS = {"resnet20": ("cifar", 20), "preactresnet18": ("preact", 18)}
PRECISIONS = ("float32", "mixed_bfloat16")


def cpu():
    """The CPU's model name and whether it has each native bfloat16 flag."""
    info = distribute.cpu_info()
    return {"model": info["model"],
            "native_bfloat16": {f: f in info["flags"] for f in distribute.BF16_CPU_FLAGS}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated: " + ", ".join(ARCHS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    archs = a.archs.split(",")
    unknown = [x for x in archs if x not in ARCHS]
    if unknown:
        p.error(f"--archs: unknown {unknown[0]!r}; expected some of {sorted(ARCHS)}")
    _threads(a.threads)
    import tensorflow as tf
    x, y = random_batch(a.batch)
    rates = {}
    for arch in archs:
        family, depth = ARCHS[arch]
        rates[arch] = {pr: round(nfgsm_step_rate(family, depth, pr, x, y, a.repeats, a.warmup), 2)
                       for pr in PRECISIONS}
        rates[arch]["float32_over_mixed_bfloat16"] = round(
            rates[arch]["float32"] / rates[arch]["mixed_bfloat16"], 2)
        print(arch, rates[arch], flush=True)
    report = {"machine": distribute.describe_machine(), "cpu": cpu(),
              "threads": a.threads, "batch": a.batch, "repeats": a.repeats, "warmup": a.warmup,
              "versions": {"tensorflow": tf.__version__},
              "what": "images/s of one N-FGSM training step (median of the repeats)",
              "train_images_per_s": rates}
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
