"""The loss ``train_step`` reports and minimises, recomputed by hand.

The trainer's attack is replaced by a known perturbation, so the adversarial
images are fixed; the expected loss is then written out from the model's own
training-mode logits (module doc of ``tf_advscale.training``): mean
cross-entropy (label smoothing included) over the N adversarial and the
clean images, + ALP weight x mean squared logit distance of the clean/adv
pairs, + weight decay x 0.5 x the squared norm of the conv and dense kernels.
One step of plain SGD must report that loss and move every weight by
-learning rate x its gradient.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_advscale.layers import make_norm, route, split
from tf_advscale.training import AdversarialModel

N, K, LR = 8, 3, 0.1


def _model(norm):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    h = keras.layers.ReLU()(make_norm(norm, 4, name="norm")(h))
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(K, name="logits")(h))


def _batch():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(N, 6, 6, 1)).astype("float32")
    y = rng.integers(0, K, N).astype("int32")
    adv = np.clip(x + 0.3 * np.sign(rng.normal(size=x.shape)), 0, 1).astype("float32")
    return x, y, adv


def _logits(model, weights, adv, clean, mixing):
    """Training-mode logits of (adversarial, clean), batched as ``mixing`` says."""
    trainable, others = weights
    def forward(images, context):
        with context:
            return model.stateless_call(trainable, others, images, training=True)[0]

    if clean is None:
        return forward(adv, route("adversarial")), None
    if mixing == "separate":  # two passes, each domain through its own statistics
        return forward(adv, route("adversarial")), forward(clean, route("clean"))
    context = (split([("adversarial", len(adv)), ("clean", len(clean))])
               if mixing == "mixbn" else route("adversarial"))  # joint: one batch, one BN
    both = forward(np.concatenate([adv, clean]), context)
    return both[:len(adv)], both[len(adv):]


def _cross_entropy(logits, labels, smoothing):
    target = tf.one_hot(labels, K) * (1 - smoothing) + smoothing / K
    return -tf.reduce_sum(target * tf.nn.log_softmax(logits), -1)


def _hand_loss(model, weights, x, y, adv, n_clean, mixing, alp, smoothing, decay):
    """The loss terms, from the model's logits, as the module doc defines them."""
    clean = x[:n_clean] if n_clean else None
    logits_adv, logits_clean = _logits(model, weights, adv, clean, mixing)
    per_example = _cross_entropy(logits_adv, y, smoothing)
    pair = tf.constant(0.0)
    if clean is not None:
        per_example = tf.concat([per_example, _cross_entropy(logits_clean, y[:n_clean],
                                                             smoothing)], 0)
        pair = tf.reduce_mean(tf.reduce_sum(tf.square(logits_clean - logits_adv[:n_clean]), -1))
    assert per_example.shape == (N + n_clean,)
    names = [v.path for v in model.trainable_variables]
    kernels = [weights[0][names.index(p)] for p in ("conv/kernel", "logits/kernel")]
    l2 = tf.add_n([0.5 * tf.reduce_sum(tf.square(k)) for k in kernels])
    return tf.reduce_mean(per_example), alp * pair, decay * l2


CASES = [  # norm, mixing, clean_portion, alp_weight, label_smoothing, weight_decay
    ("bn", "joint", 0.5, 2.0, 0.1, 0.01),
    ("bn", "joint", 0.0, 2.0, 0.1, 0.01),   # no clean image: no ALP term
    ("bn", "separate", 1.0, 2.0, 0.0, 0.01),
    ("mixbn", "mixbn", 0.5, 2.0, 0.1, 0.01),
    ("mixbn", "separate", 0.5, 1.0, 0.2, 0.0),
    ("mixbn", "joint", 1.0, 0.0, 0.1, 0.01),
]


@pytest.mark.parametrize("norm,mixing,portion,alp,smoothing,decay", CASES)
def test_train_step_reports_and_minimises_the_hand_computed_loss(norm, mixing, portion, alp,
                                                                 smoothing, decay):
    x, y, adv = _batch()
    model = _model(norm)
    trainer = AdversarialModel(model, attack={"name": "pgd", "epsilon": 0.3, "steps": 1,
                                              "step_size": 0.3},
                               clean_portion=portion, mixing=mixing, alp_weight=alp,
                               label_smoothing=smoothing, weight_decay=decay, seed=0)
    trainer._generate = lambda images, labels, seed=None: tf.constant(adv)  # the known attack
    n_clean = int(round(portion * N))
    before = [tf.constant(np.array(v)) for v in model.trainable_variables]
    others = [tf.constant(np.array(v)) for v in model.non_trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(before)
        terms = _hand_loss(model, (before, others), x, y, adv, n_clean, mixing, alp,
                           smoothing, decay)
        want = tf.add_n(terms)
    grads = tape.gradient(want, before)
    # Each term that is on is large enough for its omission to fail the check.
    assert all(float(t) > 1e-3 for t, on in zip(terms, (True, alp and n_clean, decay)) if on)

    trainer.compile(optimizer=keras.optimizers.SGD(LR))
    history = trainer.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], float(want), rtol=1e-5)
    for v, w, g in zip(model.trainable_variables, before, grads):
        np.testing.assert_allclose(np.array(v), w - LR * tf.convert_to_tensor(g),
                                   rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_standard_training_loss_is_the_clean_cross_entropy_plus_weight_decay():
    x, y, _ = _batch()
    model = _model("bn")
    trainer = AdversarialModel(model, attack=None, alp_weight=2.0, label_smoothing=0.1,
                               weight_decay=0.01, seed=0)
    weights = ([tf.constant(np.array(v)) for v in model.trainable_variables],
               [tf.constant(np.array(v)) for v in model.non_trainable_variables])
    ce, pair, l2 = _hand_loss(model, weights, x, y, x, 0, "joint", 2.0, 0.1, 0.01)
    assert float(pair) == 0.0 and float(l2) > 1e-3
    trainer.compile(optimizer=keras.optimizers.SGD(LR))
    history = trainer.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(history["loss"][0], float(ce + l2), rtol=1e-5)
