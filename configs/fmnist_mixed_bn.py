"""Fashion-MNIST, CIFAR ResNet-20, epsilon 0.1:
Adversarial + 100% clean images through one BN (the paper's weak baseline).

    advscale train --config configs/fmnist_mixed_bn.py

Data: the original IDX files (apt-get install dataset-fashion-mnist).
Evaluation: untargeted PGD-20 with a random start.
"""


def get_config(runlocal=False):
    return {
        "data": {"dataset": "fashion_mnist", "batch_size": 128,
                 "train_subset": 2000 if runlocal else None},
        "model": {"depth": 20, "family": "cifar", "norm": "bn"},
        "attack": {"name": "pgd", "epsilon": 0.1, "step_size": 0.04, "steps": 3},
        "eval_attack": {"name": "pgd", "epsilon": 0.1, "step_size": 0.01, "steps": 20},
        "trainer": {"clean_portion": 1.0, "mixing": "joint", "weight_decay": 5e-4},
        "optimizer": {"learning_rate": 0.1, "schedule": "cosine", "warmup_epochs": 1,
                      "epochs": 1 if runlocal else 8},
        "eval": {"val_subset": 200 if runlocal else 1000},
    }
