"""Prints the memory one steady-state training step of a CIFAR ResNet adds
to what is held between steps (weights, optimizer slots, the batch): the
TensorFlow allocator's peak during the step minus its use before it, in
bytes. That is the activation memory recomputation exists to cut.
python step_memory.py DEPTH BATCH RECOMPUTE [standard|adversarial [INTER_OP]]
(adversarial: an AdversarialModel step with a PGD-2 attack in inference BN
mode, the input gradients of which also go through the network).

Threads are pinned, 2 intra-op and 2 inter-op, so that the order the
executor runs ops in, which sets the peak, is the same on every 2-core
machine. Measured here (ResNet-56, batch 128, recomputed / not): 0.30
(standard) and 0.29 (adversarial) with 2 inter-op threads, as with
TensorFlow's default; with 1 inter-op thread, the configs' default, 0.71-0.84
(varying from run to run) and 0.51-0.53: recomputation keeps less than half
its saving there."""

import os
import sys

os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # CPU allocator statistics
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale.models import resnet  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(2)
# The sixth argument, INTER_OP (default 2), reproduces the one-thread reading.
tf.config.threading.set_inter_op_parallelism_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)


def main(depth, batch, recompute, mode="standard"):
    model = resnet(depth=depth, family="cifar", num_classes=10, input_shape=(32, 32, 3),
                   recompute=recompute)
    if mode == "adversarial":
        from tf_advscale.training import AdversarialModel
        adv = AdversarialModel(model, attack={"name": "pgd", "epsilon": 8 / 255,
                                              "step_size": 2 / 255, "steps": 2})
        adv.compile(optimizer=keras.optimizers.SGD(0.01))
        train_step = tf.function(adv.train_step)

        def step(x, y):
            return train_step((x, y))["loss"]
    else:
        optimizer = keras.optimizers.SGD(0.01)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables)
            return loss

    x = tf.random.uniform((batch, 32, 32, 3))
    y = tf.zeros((batch,), tf.int32)
    step(x, y).numpy()  # tracing
    tf.config.experimental.reset_memory_stats("CPU:0")
    held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x, y).numpy()
    print(tf.config.experimental.get_memory_info("CPU:0")["peak"] - held)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", *sys.argv[4:5])
