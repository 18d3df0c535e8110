"""Peak memory and step time of a ResNet training step against depth, with
and without recomputation of residual blocks (``resnet(..., recompute=True)``).

    python benchmarks/recompute_memory.py --depths 50,152,338,638 --size 128 --batch 16 \\
        --out results/recompute_memory.json

Each (depth, recompute) runs in a fresh process: a standard SGD training step
of an ImageNet-family ResNet (1000 classes) on random images of size x size,
and the median step time after the first (tracing) step. Memory is read from
TensorFlow's allocator (``TF_CPU_ALLOCATOR_USE_BFC=true`` makes the CPU
allocator keep statistics): ``state_mib`` is what is allocated between steps
(weights, optimizer slots), ``step_peak_mib`` the peak during a steady-state
step (reset after the first one, so tracing is not counted) -- activations,
gradients and workspace. The process's peak resident memory (``ru_maxrss``,
which includes graph tracing and the Python runtime) is recorded too.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# Measure this checkout, not an installed copy of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(depth, recompute, size, batch, steps):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # before TensorFlow starts
    import tf_advscale  # noqa: F401  first: it asks for TensorFlow's oneDNN kernels
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_advscale.models import count_params, resnet

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    t0 = time.time()
    model = resnet(depth=depth, family="imagenet", num_classes=1000,
                   input_shape=(size, size, 3), recompute=recompute)
    build_s = time.time() - t0
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(batch, size, size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 1000, size=(batch,)))
    times = []
    for i in range(steps):
        if i == 1:  # after tracing: measure steady-state steps only
            state = tf.config.experimental.get_memory_info("CPU:0")["current"]
            tf.config.experimental.reset_memory_stats("CPU:0")
        t = time.time()
        loss = float(step(x, y))
        times.append(time.time() - t)
    step_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return {"depth": depth, "recompute": recompute, "params": count_params(model),
            "size": size, "batch": batch, "build_seconds": round(build_s, 1),
            "first_step_seconds": round(times[0], 1),
            "step_seconds_median": round(sorted(times[1:])[len(times[1:]) // 2], 3),
            "steps": steps, "loss_finite": bool(np.isfinite(loss)),
            "state_mib": round(state / 2**20), "step_peak_mib": round(step_peak / 2**20),
            "rss_after_build_mib": round(rss_built),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", default="50,152,338,638")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default="results/recompute_memory.json")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--markdown", metavar="JSON", help="print the table of a saved run and exit")
    a = p.parse_args()
    if a.markdown:
        with open(a.markdown) as f:
            print(markdown(json.load(f)["rows"]))
        return
    if a.child:
        print(json.dumps(child(int(a.child[0]), a.child[1] == "1", a.size, a.batch, a.steps)))
        return
    rows = []
    for depth in [int(d) for d in a.depths.split(",")]:
        for recompute in (False, True):
            r = subprocess.run([sys.executable, __file__, "--child", str(depth),
                                str(int(recompute)),
                                "--size", str(a.size), "--batch", str(a.batch),
                                "--steps", str(a.steps)], capture_output=True, text=True)
            if r.returncode != 0:
                row = {"depth": depth, "recompute": recompute, "error": r.stderr[-2000:]}
            else:
                row = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
            with open(a.out, "w") as f:
                from tf_advscale import distribute
                json.dump({"rows": rows, "machine": distribute.describe_machine(),
                           "note": "step_peak_mib: TensorFlow allocator peak during a "
                                   "steady-state step; peak_rss_mib: the process's peak "
                                   "resident memory, tracing included"}, f, indent=2)
    print(markdown(rows))


def markdown(rows):
    """The README table."""
    lines = ["| depth | params | recompute | step peak (MiB) | between steps (MiB) "
             "| process peak RSS (MiB) | step (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['depth']} | | {r['recompute']} | failed | | | |")
        else:
            lines.append(f"| {r['depth']} | {r['params']:,} | {'on' if r['recompute'] else 'off'} "
                         f"| {r['step_peak_mib']:,} | {r['state_mib']:,} "
                         f"| {r['peak_rss_mib']:,} | {r['step_seconds_median']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
