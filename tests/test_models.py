import numpy as np
import keras
import pytest

from tf_advscale.layers import MixBN
from tf_advscale.models import (DEPTHS, MODELS, ResNetClassifier, blocks_for, build_model,
                                count_params, resnet)

DEEP = {338: 112, 518: 172, 638: 212}


@pytest.mark.parametrize("depth,blocks", sorted(DEEP.items()))
def test_deep_layouts_follow_the_paper_formula(depth, blocks):
    kind, stages = blocks_for("imagenet", depth)
    assert kind == "bottleneck"
    assert sum(stages) == blocks and 3 * sum(stages) + 2 == depth


def test_every_table_depth_satisfies_its_formula():
    for depth, (kind, stages) in DEPTHS["cifar"].items():
        assert 6 * stages[0] + 2 == depth and len(set(stages)) == 1
    for family in ("imagenet", "preact", "cifar4"):
        for depth, (kind, stages) in DEPTHS[family].items():
            per_block = 2 if kind == "basic" else 3
            assert per_block * sum(stages) + 2 == depth
    for depth, (kind, stages) in DEPTHS["wide"].items():
        assert 6 * stages[0] + 4 == depth and len(set(stages)) == 1


def test_resnet638_builds_at_224():
    m = resnet(638, 1000)
    assert m.output.shape == (None, 1000)
    # 3 convs per bottleneck block + stem + 4 projections, each with a BN.
    convs = [l for l in m.backbone.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 3 * 212 + 1 + 4
    assert count_params(m) == PINNED_NAMES["resnet638"]


def test_any_cifar_depth_6n_plus_2_builds():
    m = resnet(26, 10, family="cifar")  # not in the table
    assert blocks_for("cifar", 26) == ("basic", (4, 4, 4))
    assert m.output.shape == (None, 10)


@pytest.mark.parametrize("family,depth", [("cifar", 21), ("cifar", 2), ("imagenet", 51),
                                          ("resnext", 50)])
def test_bad_depth_or_family_names_the_value(family, depth):
    with pytest.raises(ValueError, match=str(depth) if family != "resnext" else "resnext"):
        blocks_for(family, depth)


def test_registry_builds_every_cifar_model_and_names_imagenet_ones():
    assert {"cifar_resnet20", "resnet50", "resnet638"} <= set(MODELS)
    for name in MODELS:
        if name.startswith("cifar_"):
            m = build_model(name, input_shape=(28, 28, 1))
            assert m.output.shape == (None, 10), name
    with pytest.raises(ValueError, match="resnet5O"):
        build_model("resnet5O")


@pytest.mark.parametrize("norm", ["bn", "gn", "ln", "none", "mixbn"])
@pytest.mark.parametrize("preact", [False, True])
def test_norms_and_preact_forward(norm, preact):
    m = resnet(8, 10, input_shape=(28, 28, 1), norm=norm, preact=preact)
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    out = m(x, training=True)
    assert out.shape == (4, 10) and np.isfinite(np.asarray(out)).all()
    if norm == "mixbn":
        assert any(isinstance(l, MixBN) for l in m.backbone.layers)
    if norm == "none":
        assert all(l.use_bias for l in m.backbone.layers if isinstance(l, keras.layers.Conv2D))


def test_width_multiplier_scales_parameters():
    base = count_params(resnet(20, 10))
    wide = count_params(resnet(20, 10, width=2.0))
    assert 3.5 * base < wide < 4.1 * base


def test_inputs_are_standardised_inside_the_model():
    m = resnet(8, 10)
    std = m.backbone.get_layer("standardize")
    x = np.array([[[[0.0, 0.5, 1.0]]]], "float32")
    np.testing.assert_allclose(np.asarray(std(x)), [[[[-1.0, 0.0, 1.0]]]])


@pytest.mark.parametrize("norm", ["bn", "gn", "mixbn"])
def test_keras_file_round_trip(tmp_path, norm):
    m = resnet(8, 10, input_shape=(28, 28, 1), norm=norm, width=0.5, preact=norm == "gn")
    x = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype("float32")
    m(x, training=True)  # move BN statistics away from their initial values
    path = tmp_path / "m.keras"
    m.save(path)
    re = keras.saving.load_model(path)
    assert isinstance(re, ResNetClassifier)
    assert re.get_config() == m.get_config()
    np.testing.assert_allclose(re.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="num_classes=1"):
        resnet(8, 1)
    with pytest.raises(ValueError, match="width=0"):
        resnet(8, 10, width=0)
    with pytest.raises(ValueError, match="norm='batch'"):
        resnet(8, 10, norm="batch")


@pytest.mark.parametrize("norm,mixing", [("bn", "joint"), ("mixbn", "mixbn")])
def test_recompute_gives_the_same_training_step_and_saves(tmp_path, sample, norm, mixing):
    import numpy as np
    from tf_advscale.models.resnet import Recompute
    from tf_advscale.training import AdversarialModel
    x, y = sample[0][:32], sample[1][:32]
    weights = []
    for recompute in (False, True):
        keras.utils.set_random_seed(0)
        model = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), recompute=recompute,
                       norm=norm)
        if recompute:
            assert sum(isinstance(l, Recompute) for l in model.backbone.layers) == 3
            model.set_weights(start)
        else:
            start = model.get_weights()
        trainer = AdversarialModel(model, attack={"name": "pgd", "epsilon": 0.1,
                                                  "step_size": 0.05, "steps": 1}, seed=0,
                                   clean_portion=1.0 if norm == "mixbn" else 0.0, mixing=mixing)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    # Same gradients, and BN moving statistics updated once, not twice.
    moved = max(np.abs(a - b).max() for a, b in zip(weights[0], start))
    assert moved > 1e-3
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again(x[:4]), model(x[:4]), atol=1e-6)


# Subprocesses: the heavy tier (-m slow), by hand.
@pytest.mark.slow
def test_recompute_lowers_the_peak_memory_of_a_training_step():
    """Activation memory (the allocator's peak during a step minus what is
    held between steps), under pinned threads: a deep narrow ResNet at a
    batch where activations dominate. (An earlier Recompute used more memory
    than no recomputation; the whole peak, threads unpinned, read 0.30 of the
    peak on one machine and 0.43 on another.)"""
    import subprocess
    import sys

    from helpers.cli_process import ROOT, checkout_env
    helper = ROOT / "tests" / "helpers" / "step_memory.py"
    peak = {}
    # The adversarial step also takes the attack's input gradients through
    # the network in inference mode (recomputed too).
    for mode in ("standard", "adversarial"):
        for recompute in (0, 1):
            out = subprocess.run([sys.executable, str(helper), "56", "128", str(recompute),
                                  mode], capture_output=True, text=True, timeout=600,
                                 cwd=ROOT, env=checkout_env())
            assert out.returncode == 0, out.stderr[-2000:]
            peak[mode, recompute] = int(out.stdout.strip().splitlines()[-1])
        assert peak[mode, 1] < 0.4 * peak[mode, 0], peak


def test_config_key_model_recompute_reaches_the_model():
    from tf_advscale import config as config_lib
    from tf_advscale import recipe
    from tf_advscale.models.resnet import Recompute
    c = config_lib.merge({"model": {"depth": 8, "recompute": True}})
    model = recipe.build(c, {"num_classes": 10, "shape": (28, 28, 1), "steps_per_epoch": 1})
    from tf_advscale.layers import walk
    found = [l for l in walk.sublayers(model.model) if isinstance(l, Recompute)]
    assert len(found) == 3  # one per residual block of a CIFAR ResNet-8


# Every registered model's trainable parameters, as a literal: registering a
# model without pinning its count fails test_every_registered_model below.
# The preact and wide counts equal their PyTorch twins' (PreActResNet-18 with
# its final BN, as Wong et al. and RobustBench build it: 11,172,170).
PINNED_NAMES = {
    "cifar_resnet8": 78_042, "cifar_resnet14": 175_258, "cifar_resnet20": 272_474,
    "cifar_resnet32": 466_906, "cifar_resnet44": 661_338, "cifar_resnet56": 855_770,
    "cifar_resnet110": 1_730_714,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "resnet200": 64_673_832,
    "resnet338": 116_064_296, "resnet518": 183_095_336, "resnet638": 227_782_696,
    "preactresnet18": 11_172_170, "preactresnet34": 21_280_330,
    "cifar4_resnet18": 11_173_962, "cifar4_resnet34": 21_282_122,
    "wrn-16-4": 2_748_890, "wrn-28-10": 36_479_194, "wrn-34-10": 46_160_474,
    "wrn-34-20": 184_531_674, "wrn-70-16": 266_796_506,
}
HEAVY = 50_000_000  # builds of more parameters than this are long tests (-m long)


def _registered():
    for name in sorted(MODELS):
        heavy = PINNED_NAMES.get(name, 0) > HEAVY
        yield pytest.param(name, marks=pytest.mark.long) if heavy else name


@pytest.mark.parametrize("name", _registered())
def test_every_registered_model(name):
    """Generated from the registry: builds, pinned count, forward, config round trip."""
    assert name in PINNED_NAMES, f"pin the parameter count of the new model {name!r}"
    imagenet = name.startswith("resnet")
    m = build_model(name, input_shape=(64, 64, 3) if imagenet else (32, 32, 3))
    assert count_params(m) == PINNED_NAMES[name]
    x = np.random.default_rng(0).uniform(size=(2,) + tuple(m.input.shape[1:])).astype("float32")
    out = np.asarray(m(x, training=False))
    assert out.shape == (2, 1000 if imagenet else 10) and np.isfinite(out).all()
    if PINNED_NAMES[name] < 15_000_000:  # a second build of the big ones adds little
        again = ResNetClassifier.from_config(m.get_config())
        assert again.get_config() == m.get_config()
        again.set_weights(m.get_weights())
        np.testing.assert_allclose(np.asarray(again(x, training=False)), out, atol=1e-5)


@pytest.mark.parametrize("family,depth,width", [("preact", 18, 1.0), ("wide", 16, 4.0)])
def test_torch_style_families_pad_stride_two_convs_symmetrically(family, depth, width):
    """PyTorch's padding=1 at stride 2, not Keras' "same" (bottom/right only)."""
    import tensorflow as tf
    m = resnet(depth, 10, family=family, width=width)
    assert m.backbone.padding == "symmetric" and m.backbone.preact
    conv = m.backbone.get_layer("stage2_block1_conv1")
    pad = m.backbone.get_layer("stage2_block1_conv1_pad")
    assert conv.strides == (2, 2) and conv.padding == "valid"
    probe = keras.Model(m.backbone.input, [pad.input, conv.output])
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    before, after = probe(x)
    want = tf.nn.conv2d(before, conv.kernel, 2, [[0, 0], [1, 1], [1, 1], [0, 0]])
    np.testing.assert_allclose(np.asarray(after), np.asarray(want), atol=1e-5)
    # The other families keep Keras' padding (their published weights need it).
    assert resnet(8, 10).backbone.padding == "same"


def test_wide_and_silu_arguments():
    m = build_model("wrn-16-4", activation="silu")
    acts = [l for l in m.backbone.layers if isinstance(l, keras.layers.Activation)]
    assert acts and all(l.get_config()["activation"] == "silu" for l in acts)
    assert m.backbone.get_layer("stem_conv").filters == 16  # WRN's stem is not widened
    assert m.backbone.get_layer("stage3_block1_conv1").filters == 256
    with pytest.raises(ValueError, match="activation='gelu'"):
        build_model("wrn-16-4", activation="gelu")
    with pytest.raises(ValueError, match="padding='valid'"):
        resnet(18, 10, family="preact", padding="valid")
    with pytest.raises(ValueError, match="6n\\+4.*depth=30"):
        blocks_for("wide", 30)
