"""The PyTorch twin: the same function as the Keras model, weight for weight."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch (pip install torch==2.13.0)")

from tf_advscale import zoo  # noqa: E402
from tf_advscale.bridge import keras_logits_and_twin_logits, torch_twin  # noqa: E402
from tf_advscale.layers import mixbn  # noqa: E402
from tf_advscale.models import MODELS, build_model, count_params, resnet  # noqa: E402

SMALL = [n for n in sorted(MODELS) if n.startswith(("cifar_resnet", "preactresnet18",
                                                     "cifar4_resnet18", "wrn-16"))
         ] + ["resnet18"]


def _randomise_statistics(model, seed=0):
    """Moving statistics and affine parameters away from their initial values,
    so that a twin that ignored or mixed them up would differ."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape, path = v.shape, v.path
        if path.endswith("moving_mean"):
            v.assign(rng.normal(size=shape).astype("float32") * 0.1)
        elif path.endswith("moving_variance"):
            v.assign(rng.uniform(0.8, 2.0, size=shape).astype("float32"))
        elif path.endswith(("gamma", "beta")):
            base = 1.0 if path.endswith("gamma") else 0.0
            v.assign(base + rng.normal(size=shape).astype("float32") * 0.2)


@pytest.mark.parametrize("name", SMALL)
def test_twin_of_every_small_registered_model_agrees(name):
    shape = (64, 64, 3) if name == "resnet18" else (32, 32, 3)
    model = build_model(name, input_shape=shape)
    _randomise_statistics(model)
    twin = torch_twin(model)
    assert sum(p.numel() for p in twin.parameters()) == count_params(model)
    x = np.random.default_rng(1).uniform(size=(8,) + shape).astype("float32")
    k, t = keras_logits_and_twin_logits(model, x, twin)
    # Random statistics can grow the logits of a deep net: relative to their size.
    assert np.abs(k - t).max() < 1e-4 * max(1.0, np.abs(k).max())


@pytest.mark.parametrize("kwargs", [{"norm": "mixbn"}, {"norm": "gn", "preact": True},
                                    {"norm": "bn", "recompute": True},
                                    {"norm": "bn", "family": "wide", "width": 2,
                                     "activation": "silu"}])
def test_twin_covers_norms_recompute_and_silu(kwargs):
    depth = 10 if kwargs.get("family") == "wide" else 8
    model = resnet(depth, 10, **kwargs)
    _randomise_statistics(model, seed=2)
    x = np.random.default_rng(3).uniform(size=(8, 32, 32, 3)).astype("float32")
    routes = ("clean", "adversarial") if kwargs["norm"] == "mixbn" else (None,)
    outs = []
    for route in routes:
        if route:
            mixbn.set_route(model, route)
        k, t = keras_logits_and_twin_logits(model, x, torch_twin(model, route=route))
        assert np.abs(k - t).max() < 1e-4
        outs.append(t)
    if len(outs) == 2:  # the routes really differ, so the twin copied the right one
        assert np.abs(outs[0] - outs[1]).max() > 1e-3


def test_twin_refuses_a_layer_it_does_not_know():
    import keras
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten(name="flat")(inputs))
    with pytest.raises(ValueError, match="'flat'"):
        torch_twin(keras.Model(inputs, outputs))


def test_twin_of_a_trained_zoo_model_on_cifar10_test_images(cifar_jpeg):
    from tf_advscale import data
    x, y, _ = data.as_numpy("cifar10", "test", source="folder", path=str(cifar_jpeg),
                            subset=200)
    for name, route in (("resnet20.pgd3_cifar10jpeg", None),
                        ("resnet20.mixbn_pgd3_cifar10jpeg", "adversarial")):
        model, _ = zoo.load(name, route=route)
        k, t = keras_logits_and_twin_logits(model, x)
        assert np.abs(k - t).max() < 1e-4, name
        assert (t.argmax(1) == k.argmax(1)).all()


@pytest.mark.parametrize("name,make", [
    ("preactresnet18", lambda tm: tm.preact_resnet18()),
    ("cifar4_resnet18", lambda tm: tm.resnet18_cifar()),
    ("wrn-16-4", lambda tm: tm.wide_resnet(16, 4)),
    ("wrn-28-10", lambda tm: tm.wide_resnet(28, 10)),
    ("wrn-34-10", lambda tm: tm.wide_resnet(34, 10, activation="silu")),
])
def test_pinned_counts_equal_the_independent_pytorch_definitions(name, make):
    """tf_advscale.torch_models is written separately, as the published
    checkpoints name their modules: the same parameter count, tensor for tensor."""
    from tf_advscale import torch_models
    from test_models import PINNED_NAMES
    assert sum(p.numel() for p in make(torch_models).parameters()) == PINNED_NAMES[name]
