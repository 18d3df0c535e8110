"""Mixed precision: training and attacks under bfloat16 and float16 compute."""

import keras
import numpy as np
import pytest

from tf_advscale import attacks
from tf_advscale.models import resnet
from tf_advscale.training import AdversarialModel


@pytest.fixture
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_training_and_attacks_under_mixed_precision(policy, sample):
    x, y = sample[0][:64], sample[1][:64]
    classifier = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1))
    assert classifier.get_layer("logits").compute_dtype == "float32"
    low = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[policy]
    assert classifier.backbone.get_layer("stem_conv").compute_dtype == low
    model = AdversarialModel(classifier, attack={"name": "pgd", "epsilon": 0.1,
                                                 "step_size": 0.025, "steps": 3},
                             clean_portion=0.5, seed=0)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(v.dtype == "float32" for v in classifier.trainable_variables)  # master weights

    # The perturbation lives in float32 and the attacker's gradient does not
    # underflow: one signed step of size epsilon moves interior pixels by epsilon.
    fgsm = attacks.PGD(epsilon=0.1, step_size=0.1, steps=1, random_start=0.0)
    adv = fgsm(model.attack_model_fn, x, y).numpy()
    assert adv.dtype == np.float32
    assert np.abs(adv - x).max() <= 0.1 + 1e-6
    interior = (x > 0.1) & (x < 0.9)
    moved = np.isclose(np.abs(adv - x)[interior], 0.1, atol=1e-4).mean()
    assert moved > 0.9, moved


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_attack_gradients_do_not_underflow_in_float16(policy, sample, monkeypatch):
    from tf_advscale import training
    x, y = sample[0][:32], sample[1][:32]
    # Input gradients of about 1e-9: below float16's smallest subnormal (6e-8).
    classifier = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Rescaling(1.0), keras.layers.Flatten(),
        keras.layers.Dense(10, dtype="float32",
                           kernel_initializer=keras.initializers.RandomNormal(stddev=1e-8))])
    model = AdversarialModel(classifier, attack=None, seed=0)
    fgsm = attacks.PGD(epsilon=0.1, step_size=0.1, steps=1, random_start=0.0)
    interior = (x > 0.1) & (x < 0.9)

    def moved():
        adv = fgsm(model.attack_model_fn, x, y).numpy()
        return np.isclose(np.abs(adv - x)[interior], 0.1, atol=1e-4).mean()

    assert moved() > 0.9
    monkeypatch.setattr(training, "ATTACK_GRAD_SCALE", 1.0)
    assert moved() < 0.1  # without the scaling the gradient is zero: no step


def test_a_model_trained_in_bfloat16_loads_and_evaluates_in_float32(sample, tmp_path):
    """A zoo entry trained under mixed_bfloat16 (configs/fast.py's "auto" on
    native-bfloat16 hardware) is evaluated in float32: the saved config holds
    the architecture's arguments, not the policy, so a process under the
    default policy rebuilds float32 layers."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        classifier = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), family="cifar")
        assert classifier.backbone.get_layer("stem_conv").compute_dtype == "bfloat16"
        classifier.save(tmp_path / "m.keras")
    finally:
        keras.config.set_dtype_policy(previous)
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert {layer.compute_dtype for layer in loaded.backbone.layers} == {"float32"}
    x = sample[0][:8]
    assert np.asarray(loaded(x)).dtype == np.float32
