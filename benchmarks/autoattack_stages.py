"""Where AutoAttack's time goes: each of its four attacks timed alone, ours
against torchattacks', on the same weights and images.

``validate_autoattack.py`` times the whole composition on our side (one graph
per batch). Here every stage runs as its own call, on the images the stage
before left robust (each side its own chain, as in the composition), on one
batch of the seeded test images; our side's graph is traced before the clock
starts (tracing is reported apart), and each side uses the same threads:

    python benchmarks/autoattack_stages.py --model zoo:resnet20.pgd3_cifar10jpeg \\
        --n 1000 --batch 0 --batch-size 100 --out results/autoattack_stages_resnet20_pgd3.json

``--batch B --batch-size S`` picks images ``B*S .. B*S+S-1`` of the ``--n``
images drawn with ``--seed``, the batch ``validate_autoattack.py`` ran with
the same arguments.
"""

import argparse
import fractions
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale import attacks, bridge, data, distribute, zoo  # noqa: E402
from tf_advscale.files import write_json  # noqa: E402
from validate_autoattack import (_entry_norm, load_model, reference_attacks,  # noqa: E402
                                 set_threads)


def ours(model, x, y, eps, norm, seed):
    """Per stage: images attacked, seconds running, seconds tracing, robust after."""
    aa = attacks.AutoAttack(eps, norm=norm, n_target_classes=min(9, int(model.output.shape[-1]) - 1))
    predict = tf.function(lambda v: tf.argmax(model(v, training=False), -1, output_type=tf.int32))
    robust = predict(tf.constant(x)).numpy() == y
    out = {"clean": int(robust.sum())}
    for i, (name, attack) in enumerate(aa.attacks()):
        idx = np.flatnonzero(robust)
        stage = {"images": int(len(idx))}
        if len(idx):
            xs, ys = tf.constant(x[idx]), tf.constant(y[idx])

            @tf.function
            def run(xs, ys, attack=attack, i=i):
                adv = attack(lambda v: model(v, training=False), xs, ys,
                             seed=tf.constant([seed * 1009 + i, 0], tf.int64))
                return tf.equal(predict(adv), ys)

            start = time.perf_counter()
            run.get_concrete_function(xs, ys)
            stage["trace_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            ok = run(xs, ys).numpy()
            stage["seconds"] = time.perf_counter() - start
            robust[idx[~ok]] = False
        stage["robust_after"] = int(robust.sum())
        out[name] = stage
    return out


def theirs(twin, x, y, eps, norm, seed):
    import torch
    made = reference_attacks(twin, x.shape[1:], eps, norm, seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        robust = (twin(xt).argmax(1) == yt).numpy()
    out = {"clean": int(robust.sum())}
    for name, atk in made.items():
        idx = np.flatnonzero(robust)
        stage = {"images": int(len(idx))}
        if len(idx):
            sub = torch.from_numpy(idx)
            start = time.perf_counter()
            adv = atk(xt[sub], yt[sub])
            with torch.no_grad():
                ok = (twin(adv).argmax(1) == yt[sub]).numpy()
            stage["seconds"] = time.perf_counter() - start
            robust[idx[~ok]] = False
        stage["robust_after"] = int(robust.sum())
        out[name] = stage
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="zoo:NAME or a .keras file")
    p.add_argument("--route", default=None)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch
    set_threads(args.threads)

    model, meta = load_model(args.model, args.route)
    d = zoo.data_args(meta["recipe"]["config"]) if meta and meta.get("recipe") else \
        {"source": None, "path": None}
    x, y, info = data.as_numpy(args.dataset, "test", source=d["source"], path=d["path"],
                               subset=args.n, seed=args.seed)
    lo = args.batch * args.batch_size
    x, y = x[lo:lo + args.batch_size], y[lo:lo + args.batch_size].astype(np.int32)
    norm = _entry_norm(meta) if meta else "linf"
    eps_text = meta["threat_model"]["epsilon"] if meta else "8/255"
    eps = float(fractions.Fraction(str(eps_text)))
    twin = bridge.torch_twin(model, route=args.route)

    mine = ours(model, x, y, eps, norm, args.seed)
    ref = theirs(twin, np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y, eps, norm, args.seed)
    stages = [s for s in mine if s != "clean"]
    result = {
        "what": "AutoAttack (standard settings) stage by stage, each timed alone on the images "
                "the stage before left robust (each side its own chain); ours traced first",
        "model": args.model, "route": args.route,
        "data": f"{args.dataset} ({info['source']}) test, images {lo}..{lo + len(y) - 1} of "
                f"{args.n} drawn with seed {args.seed}",
        "epsilon": eps_text, "norm": norm,
        "tf_advscale": mine, "torchattacks": ref,
        "seconds_per_image": {
            s: {"tf_advscale": mine[s].get("seconds", 0) / max(mine[s]["images"], 1),
                "torchattacks": ref[s].get("seconds", 0) / max(ref[s]["images"], 1)}
            for s in stages},
        "ratio_theirs_over_ours": {
            s: (ref[s]["seconds"] / mine[s]["seconds"]) if mine[s].get("seconds") and
            ref[s].get("seconds") else None for s in stages},
        "threads": args.threads, "machine": distribute.describe_machine(),
        "versions": {"tf_advscale": tf_advscale.__version__, "tensorflow": tf.__version__,
                     "torch": torch.__version__},
    }
    write_json(args.out, result)
    print(result["seconds_per_image"])


if __name__ == "__main__":
    main()
