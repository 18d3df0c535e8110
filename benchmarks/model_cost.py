"""What one model call costs, ours against its PyTorch twin: the floor under
every attack's time.

AutoAttack's four attacks are, per image, some hundreds to thousands of
forward passes (Square) or forward-and-input-gradient passes (APGD, FAB). This
times those two calls alone, in seconds per image, for the Keras model (one
``tf.function``, traced before the clock starts) and for the bridge's PyTorch
twin (same weights), at several batch sizes, with the same threads:

    python benchmarks/model_cost.py --model zoo:resnet20.pgd3_cifar10jpeg \\
        --out results/model_cost_resnet20_pgd3.json

Each figure is the median of ``--repeats`` timed calls after ``--warmup``
untimed ones, on uniform random images.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale import bridge, distribute  # noqa: E402
from tf_advscale.files import write_json  # noqa: E402
from peers import _time  # noqa: E402
from validate_autoattack import load_model, set_threads  # noqa: E402


def keras_calls(model, x, y):
    forward = tf.function(lambda v: model(v, training=False))

    @tf.function
    def gradient(v, labels):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(
                labels, model(v, training=False), from_logits=True))
        return tape.gradient(loss, v)

    xt, yt = tf.constant(x), tf.constant(y)
    return (lambda: forward(xt).numpy()), (lambda: gradient(xt, yt).numpy())


def torch_calls(twin, x, y):
    import torch
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y.astype(np.int64))

    def forward():
        with torch.no_grad():
            return twin(xt).numpy()

    def gradient():
        v = xt.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(twin(v), yt, reduction="sum")
        return torch.autograd.grad(loss, v)[0].numpy()
    return forward, gradient


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="zoo:NAME or a .keras path")
    p.add_argument("--route", default=None, help="a MixBN model's route")
    p.add_argument("--batch-sizes", default="16,33,50,100,200",
                   help="comma-separated batch sizes (default: 16,33,50,100,200)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="the JSON written")
    args = p.parse_args()
    try:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise SystemExit(f"--batch-sizes must be integers separated by commas. "
                         f"Received: --batch-sizes={args.batch_sizes!r}")
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--batch-sizes must be >= 1. Received: --batch-sizes={args.batch_sizes!r}")
    import torch
    set_threads(args.threads)
    model, _ = load_model(args.model, args.route)
    twin = bridge.torch_twin(model, route=args.route)
    shape = tuple(int(d) for d in model.input.shape[1:])
    k = int(model.output.shape[-1])
    rng = np.random.default_rng(0)
    rows = {}
    for b in sizes:
        x = rng.uniform(size=(b, *shape)).astype(np.float32)
        y = rng.integers(0, k, size=b).astype(np.int32)
        row = {}
        for side, calls in (("tf_advscale", keras_calls(model, x, y)),
                            ("torch", torch_calls(twin, x, y))):
            fwd, grad = calls
            row[side] = {"forward": _time(fwd, args.repeats, args.warmup) / b,
                         "forward_and_input_gradient":
                             _time(grad, args.repeats, args.warmup) / b}
        row["ratio_torch_over_ours"] = {
            c: row["torch"][c] / row["tf_advscale"][c]
            for c in ("forward", "forward_and_input_gradient")}
        rows[str(b)] = row
        print(b, {s: {c: f"{1000 * v:.3f} ms" for c, v in row[s].items()}
                  for s in ("tf_advscale", "torch")}, flush=True)
    write_json(args.out, {
        "what": "seconds per image of one forward and one forward + input-gradient "
                "(cross-entropy) call, the Keras model against its PyTorch twin",
        "model": args.model, "route": args.route, "images": "uniform random",
        "seconds_per_image": rows, "warmup": args.warmup, "repeats": args.repeats,
        "threads": args.threads, "machine": distribute.describe_machine(),
        "versions": {"tf_advscale": tf_advscale.__version__, "tensorflow": tf.__version__,
                     "torch": torch.__version__}})


if __name__ == "__main__":
    main()
