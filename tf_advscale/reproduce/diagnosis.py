"""Measurements behind the ``diagnosis`` experiment: per-layer statistics of
the inputs of a MixBN model's normalization layers."""

import json
import os
import time

import numpy as np

from tf_advscale.reproduce import share
from tf_advscale.reproduce.plan import train


def _activation_stats(model, images, route, chunk=250):
    """Per-layer, per-channel mean and variance of the inputs of every MixBN
    layer of ``model`` on ``images`` through ``route``, in network order."""
    from tf_advscale.layers import mixbn
    layers = mixbn.mixbn_layers(model)
    sums = {}
    originals = {}

    def wrap(layer):
        call = layer.call

        def recording(x, *args, **kwargs):
            v = np.asarray(x, np.float64)
            flat = v.reshape(-1, v.shape[-1])
            s = sums.setdefault(layer.name, [0.0, 0.0, 0])  # first call: network order
            s[0] = s[0] + flat.sum(0)
            s[1] = s[1] + (flat ** 2).sum(0)
            s[2] += flat.shape[0]
            return call(x, *args, **kwargs)
        return recording

    mixbn.set_route(model, route)
    for l in layers:
        originals[l] = l.__dict__.get("call")
        object.__setattr__(l, "call", wrap(l))
    try:
        for i in range(0, len(images), chunk):
            model(images[i:i + chunk], training=False)
    finally:
        for l in layers:
            object.__delattr__(l, "call")
    out = {}
    for name, (s1, s2, n) in sums.items():
        mean = s1 / n
        out[name] = (mean, np.maximum(s2 / n - mean ** 2, 1e-12))
    return out


def _distance(m1, v1, m2, v2):
    """Mean over channels of the standardized mean difference and of the
    absolute log variance ratio."""
    smd = np.abs(m1 - m2) / np.sqrt((v1 + v2) / 2 + 1e-12)
    return float(smd.mean()), float(np.abs(np.log((v1 + 1e-12) / (v2 + 1e-12))).mean())


ROUTES = ("adversarial", "clean")


def _layers_of_seed(plan, run, seed, n):
    """``_diagnose`` of ``run``'s model for ``seed`` on ``n`` test images,
    computed once and then read from the run's ``evals/`` folder."""
    run_path = train(plan, run, seed)
    path = os.path.join(run_path, "evals", f"diagnosis_n{n}_{plan.eval_tag()}.json")
    plan.used_evals.add(path)
    if not os.path.exists(path):
        import keras
        keras.backend.clear_session()
        start = time.time()
        model = share.run_model(run_path)
        layers = _diagnose(plan, model, seed, n)
        from tf_advscale.files import write_json
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json(path, {"layers": layers, "n": n,
                          "seconds": round(time.time() - start, 1)})
    return json.load(open(path))["layers"]


def _diagnose(plan, model, seed, n):
    """Per MixBN layer: the distance between the two domains' moving
    statistics, and, through each route, between the activations of clean
    and adversarial test images and between two sets of clean images (the
    noise floor). Clean and adversarial images go through the same route, so
    that the difference is the inputs', not the routes'."""
    import tensorflow as tf

    from tf_advscale import attacks as attacks_lib
    from tf_advscale.layers import mixbn
    x, y = plan.test_data(2 * n)
    xa, xb, ya = x[:n], x[n:2 * n], y[:n]
    attack = attacks_lib.make(plan.eval["attack"], plan.epsilon)
    mixbn.set_route(model, "adversarial")  # the attack targets the adversarial route
    adv = np.concatenate([
        attack(lambda i: model(i, training=False), tf.constant(xa[i:i + 250]),
               tf.constant(ya[i:i + 250]), seed=tf.constant([seed, i], tf.int64)).numpy()
        for i in range(0, n, 250)])
    acts = {r: {"clean_a": _activation_stats(model, xa, r),
                "clean_b": _activation_stats(model, xb, r),
                "adv": _activation_stats(model, adv, r)} for r in ROUTES}
    by_name = {l.name: l for l in mixbn.mixbn_layers(model)}
    layers = []
    for i, name in enumerate(acts["adversarial"]["clean_a"]):  # network order
        layer = by_name[name]
        c, d = layer.domain_index("clean"), layer.domain_index("adversarial")
        mm, mv = np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)
        row = {"index": i, "name": name, "moving": _distance(mm[c], mv[c], mm[d], mv[d])}
        for r in ROUTES:
            a = acts[r]
            row[f"{r}_route_clean_vs_adv"] = _distance(*a["clean_a"][name], *a["adv"][name])
            row[f"{r}_route_clean_vs_clean"] = _distance(*a["clean_a"][name],
                                                         *a["clean_b"][name])
        layers.append(row)
    return layers
