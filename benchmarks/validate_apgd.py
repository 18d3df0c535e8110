"""Validates tf_advscale's APGD-CE against an independent implementation.

IBM ART's AutoProjectedGradientDescent (Croce & Hein's algorithm, written
separately) attacks the same Keras model on the same images; the script
reports both robust accuracies and their difference, and writes JSON.

    pip install ".[bench]"
    python benchmarks/validate_apgd.py --model M.keras --dataset fashion_mnist \
        --n 1000 --epsilon 0.1 --out results/apgd_validation.json
"""

import argparse
import fractions
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measure this checkout, not an installed copy of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale import attacks, data  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--source", default=None)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epsilon", default="0.1")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    eps = float(fractions.Fraction(args.epsilon))

    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    from tf_advscale.evaluate import resolve_model
    model = resolve_model(args.model)  # the classifier inside an AdversarialModel file
    x, y, info = data.as_numpy(args.dataset, "test", source=args.source, subset=args.n,
                               seed=args.seed)
    def logits(z, training=False):  # ART passes `training`; BN stays in inference mode
        return model(z, training=False)
    clean = (model.predict(x, batch_size=args.batch_size, verbose=0).argmax(-1) == y)

    keras.utils.set_random_seed(args.seed)
    ours = attacks.APGD(eps, args.steps, loss="ce")
    fn = tf.function(lambda a, b: ours(logits, a, b))
    start = time.time()
    ours_ok = []
    for i in range(0, len(x), args.batch_size):
        adv = fn(tf.constant(x[i:i + args.batch_size]), tf.constant(y[i:i + args.batch_size]))
        ours_ok.append(model.predict(adv, verbose=0).argmax(-1) == y[i:i + args.batch_size])
    ours_ok = clean & np.concatenate(ours_ok)
    ours_s = time.time() - start

    classifier = TensorFlowV2Classifier(
        model=logits, nb_classes=int(model.output.shape[-1]), input_shape=x.shape[1:],
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0))
    art_attack = AutoProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=args.steps, targeted=False,
        nb_random_init=1, batch_size=args.batch_size, loss_type="cross_entropy", verbose=False)
    start = time.time()
    adv = art_attack.generate(x=x, y=y)
    art_s = time.time() - start
    art_ok = clean & (model.predict(adv, batch_size=args.batch_size, verbose=0).argmax(-1) == y)

    result = {
        "model": args.model, "dataset": f"{args.dataset} ({info['source']}) test",
        "n": int(len(y)), "subset_seed": args.seed, "epsilon": args.epsilon, "steps": args.steps,
        "clean_accuracy": float(clean.mean()),
        "tf_advscale_apgd_ce": float(ours_ok.mean()), "tf_advscale_seconds": round(ours_s, 1),
        "art_apgd_ce": float(art_ok.mean()), "art_seconds": round(art_s, 1),
        "difference_pp": round(100 * (float(ours_ok.mean()) - float(art_ok.mean())), 2),
        "art_version": __import__("art").__version__,
        "tf_advscale_version": tf_advscale.__version__,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
