"""Checks tf_advscale's Square attack (L-inf and L2) against torchattacks'
on the same model, images and query budgets.

A Square attack's strength is its random search, so the check is
statistical: on one seeded model and image set, both attacks' robust
accuracy after Q queries, for several Q. The model is a small random
two-layer network on 32x32x3 inputs, written once in TensorFlow and once in
PyTorch with the same weights (logits equal to float rounding), so that
what is compared is the attack, not a trained model's quirks:

    pip install ".[torch]" torchattacks==3.5.1
    python benchmarks/validate_square.py --n 256 --out results/validate_square.json

Each row also records both sides' wall time (this CPU, one after the other).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale import distribute  # noqa: E402
from tf_advscale.attacks import Square  # noqa: E402
from tf_advscale.files import write_json  # noqa: E402


def _model(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, size=(n, 32, 32, 3)).astype("float32")
    w1 = (rng.normal(size=(32 * 32 * 3, 64)) * 0.03).astype("float32")
    w2 = (rng.normal(size=(64, 10)) * 0.3).astype("float32")
    return x, w1, w2


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries", default="100,1000")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import torch
    import torchattacks
    torch.set_num_threads(2)
    x, w1, w2 = _model(args.seed, args.n)

    def fn(z):
        return tf.nn.relu(tf.reshape(z, [tf.shape(z)[0], -1]) @ w1) @ w2

    class Twin(torch.nn.Module):
        def forward(self, z):  # NCHW -> the same flattening as NHWC
            z = z.permute(0, 2, 3, 1).reshape(z.shape[0], -1)
            return torch.relu(z @ torch.from_numpy(w1)) @ torch.from_numpy(w2)

    twin = Twin()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    y = fn(x).numpy().argmax(1).astype("int32")
    logit_diff = float(np.abs(fn(x).numpy() - twin(xt).detach().numpy()).max())
    rows = []
    for norm, eps in (("linf", 2 / 255), ("l2", 0.3)):
        for q in [int(v) for v in args.queries.split(",")]:
            start = time.time()
            adv = Square(eps, q, norm=norm, seed=args.seed)(fn, x, y).numpy()
            ours_s = time.time() - start
            ours = float((fn(adv).numpy().argmax(1) == y).mean())
            atk = torchattacks.Square(twin, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps,
                                      n_queries=q, seed=args.seed)
            start = time.time()
            adv_t = atk(xt, torch.from_numpy(y.astype(np.int64)))
            theirs_s = time.time() - start
            theirs = float((twin(adv_t).argmax(1).numpy() == y).mean())
            rows.append({"norm": norm, "epsilon": eps, "queries": q,
                         "robust_accuracy": {"tf_advscale": ours, "torchattacks": theirs},
                         "difference_pp": round(100 * (ours - theirs), 2),
                         "seconds": {"tf_advscale": round(ours_s, 1),
                                     "torchattacks": round(theirs_s, 1)}})
            print(json.dumps(rows[-1]), flush=True)
    write_json(args.out, {
        "what": "Square attack, ours against torchattacks 3.5.1, on a random two-layer network "
                "and uniform random images (its labels: its own predictions)",
        "n": args.n, "seed": args.seed, "twin_max_abs_logit_difference": logit_diff,
        "rows": rows,
        "versions": {"tf_advscale": tf_advscale.__version__, "tensorflow": tf.__version__,
                     "torch": torch.__version__, "torchattacks": torchattacks.__version__},
        "machine": distribute.describe_machine()})


if __name__ == "__main__":
    main()
