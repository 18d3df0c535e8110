"""One adversarial training step on one device vs. MirroredStrategy over 2
logical CPUs, same global batch; prints JSON {case: max weight difference}.

Run as a script (a fresh process: TensorFlow's collectives do not survive a
second MirroredStrategy in one process, so the test launches this)."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf_advscale import data  # noqa: E402
from tf_advscale.models import resnet  # noqa: E402
from tf_advscale.training import AdversarialModel  # noqa: E402

CASES = {"bn": ("bn", "joint"), "mixbn": ("mixbn", "mixbn")}


def make(norm, mixing):
    model = AdversarialModel(
        resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), norm=norm,
               norm_kwargs={"synchronized": True}),
        attack={"name": "pgd", "epsilon": 0.1, "step_size": 0.05, "steps": 2,
                "random_start": 0.0},
        clean_portion=1.0, mixing=mixing, weight_decay=5e-4, seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def main(cases):
    x, y, _ = data.as_numpy("fashion_mnist_sample", "test")
    x, y = x[:16], y[:16]
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")[:2]])
    out = {}
    for case in cases:
        keras.utils.set_random_seed(0)
        single = make(*CASES[case])
        start = single.get_weights()
        single.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        with strategy.scope():
            mirrored = make(*CASES[case])
        mirrored.set_weights(start)
        mirrored.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        out[case] = {
            "max_difference": float(max(np.abs(a - b).max() for a, b in
                                        zip(single.get_weights(), mirrored.get_weights()))),
            "max_update": float(max(np.abs(a - b).max() for a, b in
                                    zip(single.get_weights(), start))),
            "replicas": strategy.num_replicas_in_sync}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
