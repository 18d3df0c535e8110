"""CIFAR-10 (JPEG q75), CIFAR ResNet-20, epsilon 8/255:
Adversarial training only (the paper's best one-BN recipe: 0% clean).

    advscale train --config configs/cifar10_adv_only.py

Data: ../shared/data/cifar10-jpeg (set data.source='tfds' for the original CIFAR-10).
Evaluation: untargeted PGD-20 with a random start.
"""


def get_config(runlocal=False):
    return {
        "data": {"dataset": "cifar10", "source": "folder",
                 "path": "../shared/data/cifar10-jpeg", "batch_size": 128,
                 "train_subset": 2000 if runlocal else None},
        "model": {"depth": 20, "family": "cifar", "norm": "bn"},
        "attack": {"name": "pgd", "epsilon": 8 / 255, "step_size": 2 / 255, "steps": 3 if runlocal else 5},
        "eval_attack": {"name": "pgd", "epsilon": 8 / 255, "step_size": 2 / 255, "steps": 20},
        "trainer": {"clean_portion": 0.0, "mixing": "joint", "weight_decay": 5e-4},
        "optimizer": {"learning_rate": 0.1, "schedule": "cosine", "warmup_epochs": 1,
                      "epochs": 1 if runlocal else 30},
        "eval": {"val_subset": 200 if runlocal else 1000},
    }
