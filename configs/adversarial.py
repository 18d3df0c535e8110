"""The paper's training recipes on Fashion-MNIST and CIFAR-10 (JPEG q75), CIFAR ResNet-20.

    advscale train --config configs/adversarial.py:fmnist,adv_only
    advscale train --config configs/adversarial.py:fmnist,mixed_bn
    advscale train --config configs/adversarial.py:fmnist,mixed_mixbn
    advscale train --config configs/adversarial.py:fmnist,mixed_gn
    advscale train --config configs/adversarial.py:fmnist,fast
    advscale train --config configs/adversarial.py:cifar10,adv_only    (and the same variants)

The argument after ':' is DATASET,VARIANT.

Data sets (L-inf threat model):
  fmnist   Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist), epsilon 0.1;
           training PGD-3, step 0.04; 8 epochs
  cifar10  ../shared/data/cifar10-jpeg (data.source='tfds' for the original), epsilon
           8/255; training PGD-3, step 3/255; 20 epochs (each zoo card gives its
           variant's measured training time)
Both train with a random start and evaluate with untargeted PGD-20.

Variants:
  adv_only     adversarial images only (the paper's best one-BN recipe)
  mixed_bn     adversarial + 100% clean images through one BN (the weak baseline)
  mixed_mixbn  adversarial + 100% clean with MixBN (clean -> BN_clean, adv -> BN_adv)
  mixed_gn     adversarial + 100% clean through group norm (no batch statistics to mix)
  fast         FGSM from a random start, step 1.25 epsilon (Wong et al. 2020), with
               catastrophic-overfitting detection
"""

DATASETS = {
    "fmnist": {
        "data": {"dataset": "fashion_mnist"},
        "epsilon": 0.1, "step": 0.04, "steps": 3, "eval_step": 0.01, "epochs": 8,
    },
    "cifar10": {
        "data": {"dataset": "cifar10", "source": "folder", "path": "../shared/data/cifar10-jpeg"},
        "epsilon": 8 / 255, "step": 3 / 255, "steps": 3, "eval_step": 2 / 255, "epochs": 20,
    },
}
VARIANTS = {
    "adv_only": {"norm": "bn", "clean_portion": 0.0, "mixing": "joint"},
    "mixed_bn": {"norm": "bn", "clean_portion": 1.0, "mixing": "joint"},
    "mixed_mixbn": {"norm": "mixbn", "clean_portion": 1.0, "mixing": "mixbn"},
    "mixed_gn": {"norm": "gn", "clean_portion": 1.0, "mixing": "joint"},
    "fast": {"norm": "bn", "clean_portion": 0.0, "mixing": "joint"},
}


def get_config(runlocal=False, arg="fmnist,adv_only"):
    dataset, _, variant = arg.partition(",")
    if dataset not in DATASETS or variant not in VARIANTS:
        raise ValueError(f"Expected DATASET,VARIANT with DATASET in {sorted(DATASETS)} and "
                         f"VARIANT in {sorted(VARIANTS)}. Received: {arg!r}")
    d, v = DATASETS[dataset], VARIANTS[variant]
    eps = d["epsilon"]
    if variant == "fast":
        attack = {"name": "fgsm_rs", "epsilon": eps}
    else:
        attack = {"name": "pgd", "epsilon": eps, "step_size": d["step"], "steps": d["steps"]}
    return {
        "data": {**d["data"], "batch_size": 128, "train_subset": 2000 if runlocal else None},
        "model": {"depth": 20, "family": "cifar", "norm": v["norm"]},
        "attack": attack,
        "eval_attack": {"name": "pgd", "epsilon": eps, "step_size": d["eval_step"], "steps": 20},
        "trainer": {"clean_portion": v["clean_portion"], "mixing": v["mixing"],
                    "weight_decay": 5e-4, "catastrophic_overfitting": variant == "fast"},
        "optimizer": {"learning_rate": 0.1, "schedule": "cosine", "warmup_epochs": 1,
                      "epochs": 1 if runlocal else d["epochs"]},
        "eval": {"val_subset": 200 if runlocal else 1000,
                 "test_subset": 500 if runlocal else None},
    }
