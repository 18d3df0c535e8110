"""Standard (non-adversarial) training of a CIFAR ResNet-20 on Fashion-MNIST.

    advscale train --config configs/fmnist_standard.py

Data: the original IDX files (apt-get install dataset-fashion-mnist).
"""


def get_config(runlocal=False):
    return {
        "data": {"dataset": "fashion_mnist", "batch_size": 128,
                 "train_subset": 2000 if runlocal else None},
        "model": {"depth": 20, "family": "cifar", "norm": "bn", "zero_init_residual": True},
        "attack": None,
        "eval_attack": None,
        "trainer": {"weight_decay": 5e-4},
        "optimizer": {"learning_rate": 0.1, "schedule": "cosine", "warmup_epochs": 0,
                      "epochs": 1 if runlocal else 4},
        "eval": {"val_subset": 500 if runlocal else 2000,
                 "test_subset": 500 if runlocal else None},
    }
