"""``model.fit`` of an AdversarialModel under MultiWorkerMirroredStrategy:
one worker of a cluster described by TF_CONFIG. Saves the final weights to
``OUT/worker<i>.npz``. Usage: multiworker_fit.py OUT"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras.config.disable_traceback_filtering()
from tf_advscale import data, distribute  # noqa: E402
from tf_advscale.models import resnet  # noqa: E402
from tf_advscale.training import AdversarialModel  # noqa: E402


def main(out):
    # One thread each: two workers share this machine's cores without starving
    # the coordination service's heartbeats.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = distribute.make_strategy("multi_worker")
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    x, y, _ = data.as_numpy("fashion_mnist_sample", "train")
    per_replica = 16
    batch = per_replica * strategy.num_replicas_in_sync
    ds = tf.data.Dataset.from_tensor_slices((x[:batch * 3], y[:batch * 3])).batch(batch)
    with strategy.scope():
        model = AdversarialModel(
            resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), norm="mixbn",
                   norm_kwargs={"synchronized": True}),
            attack={"name": "pgd", "epsilon": 0.1, "step_size": 0.05, "steps": 1},
            clean_portion=1.0, mixing="mixbn", seed=3)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(ds, epochs=2, verbose=0)
    np.savez(os.path.join(out, f"worker{task}.npz"), *model.get_weights())
    with open(os.path.join(out, f"worker{task}.json"), "w") as f:
        json.dump({k: [float(v) for v in vs] for k, vs in history.history.items()}, f)


if __name__ == "__main__":
    main(sys.argv[1])
