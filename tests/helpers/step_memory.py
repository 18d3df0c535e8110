"""Prints the TensorFlow allocator's peak (bytes) during one steady-state
training step of a CIFAR ResNet: python step_memory.py DEPTH BATCH RECOMPUTE."""

import os
import sys

os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # CPU allocator statistics
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale.models import resnet  # noqa: E402


def main(depth, batch, recompute):
    model = resnet(depth=depth, family="cifar", num_classes=10, input_shape=(32, 32, 3),
                   recompute=recompute)
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
    step(x, y).numpy()
    print(tf.config.experimental.get_memory_info("CPU:0")["peak"])


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1")
