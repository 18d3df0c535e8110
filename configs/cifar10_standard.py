"""Standard (non-adversarial) training of a CIFAR ResNet-20 on CIFAR-10 (JPEG q75).

    advscale train --config configs/cifar10_standard.py

Data: ../shared/data/cifar10-jpeg (an ImageNet-style class-folder layout);
users with a network can set data.source='tfds' for the original CIFAR-10.
"""


def get_config(runlocal=False):
    return {
        "data": {"dataset": "cifar10", "source": "folder",
                 "path": "../shared/data/cifar10-jpeg", "batch_size": 128,
                 "train_subset": 2000 if runlocal else None},
        "model": {"depth": 20, "family": "cifar", "norm": "bn", "zero_init_residual": True},
        "attack": None,
        "eval_attack": None,
        "trainer": {"weight_decay": 5e-4},
        "optimizer": {"learning_rate": 0.1, "schedule": "cosine", "warmup_epochs": 1,
                      "epochs": 1 if runlocal else 15},
        "eval": {"val_subset": 500 if runlocal else 2000,
                 "test_subset": 500 if runlocal else None},
    }
