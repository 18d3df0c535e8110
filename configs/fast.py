"""Fast (single-step) adversarial training on CIFAR-10 (JPEG q75), L-inf 8/255.

    advscale train --config configs/fast.py:preactresnet18,nfgsm
    advscale train --config configs/fast.py:preactresnet18,mixbn_nfgsm
    advscale train --config configs/fast.py:preactresnet18,fgsmrs
    advscale train --config configs/fast.py:resnet20,nfgsm
    advscale train --config configs/fast.py:preactresnet18,mixbn_nfgsm_ft

The argument after ':' is ARCH,RECIPE.

Recipes (both: SGD momentum 0.9, weight decay 5e-4, batch 128, a cyclic
learning rate 0 -> 0.2 -> 0 peaking at 2/5 of the run, as Wong et al. 2020;
trainer.precision "auto": mixed bfloat16 on a TPU, a GPU of compute
capability 8.0 or newer or a CPU with avx512_bf16 or amx_bf16; mixed float16
on a 7.x GPU; float32 elsewhere. Wong et al. trained in mixed precision; on
a CPU without native bfloat16 it is several times slower than float32
(results/bench_precision_amd_epyc.json, from `python benchmarks/precision.py`:
5.2x for resnet20, 8.0x for preactresnet18, measured with TensorFlow's oneDNN
kernels off, before the package turned them on there). The choice is recorded in the
work directory's config.json and kept when the run resumes elsewhere;
`--set trainer.precision=float32` (or another) fixes it by hand, and must be
given under multi_worker):
  fgsmrs       FGSM from a uniform random start, step 1.25 epsilon, projected
               (Wong et al. 2020, "Fast is better than free")
  nfgsm        N-FGSM: noise from the 2-epsilon ball, step epsilon, no
               projection (de Jorge et al. 2022), which avoids catastrophic
               overfitting at 8/255 without extra cost
  mixbn_*      the same attack, plus the clean images of every batch, with
               MixBN (clean -> BN_clean, adversarial -> BN_adv)
  *_ft         fine-tuning instead of training from scratch: the run starts
               from the zoo's adversarial-only entry of the same ARCH and
               attack (init_from "zoo:ARCH.ATTACK_cifar10jpeg", which must
               be in `advscale zoo list`; its BNs fill both MixBN domains),
               and trains FINETUNE_EPOCHS epochs with the cyclic learning
               rate peaking at FINETUNE_LR; e.g. preactresnet18,mixbn_nfgsm_ft:
               a MixBN PreActResNet-18 from zoo/preactresnet18.nfgsm_cifar10jpeg.
               Its wall time here is not measured yet.
Every run is guarded by the catastrophic-overfitting monitor (PGD-10 on a
held-out batch each epoch; it stops and restores the best weights).

Architectures: preactresnet18 (Wong et al.'s PreActResNet-18, 11.2M
parameters) and resnet20 (the zoo's CIFAR ResNet-20). Inputs are in [0, 1];
the model standardises them with CIFAR-10's channel mean and std.

Measured wall time here (2 cores, CIFAR-10 JPEG q75, 50,000 training images):
each zoo card's training record gives its run's; the epoch time of
preactresnet18,nfgsm follows from the benchmark's images/s (390 steps of 128
images, plus the validation on 500 images).
"""

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2471, 0.2435, 0.2616]
EPSILON = 8 / 255

ARCHS = {
    "preactresnet18": {"family": "preact", "depth": 18, "epochs": 15},
    "resnet20": {"family": "cifar", "depth": 20, "epochs": 30},
}
RECIPES = {
    "fgsmrs": {"name": "fgsm_rs", "epsilon": EPSILON},
    "nfgsm": {"name": "n_fgsm", "epsilon": EPSILON},
}


# *_ft recipes: the epochs and the cyclic learning rate's peak of a fine-tuning run.
FINETUNE_EPOCHS = 3
FINETUNE_LR = 0.05


def get_config(runlocal=False, arg="preactresnet18,nfgsm"):
    arch, _, recipe = arg.partition(",")
    finetune = recipe.endswith("_ft")
    recipe = recipe[:-len("_ft")] if finetune else recipe
    mixbn = recipe.startswith("mixbn_")
    attack = recipe[len("mixbn_"):] if mixbn else recipe
    if arch not in ARCHS or attack not in RECIPES:
        raise ValueError(f"Expected ARCH,RECIPE with ARCH in {sorted(ARCHS)} and RECIPE in "
                         f"{sorted(RECIPES)} (or mixbn_RECIPE, and either with _ft). "
                         f"Received: {arg!r}")
    a = ARCHS[arch]
    epochs = FINETUNE_EPOCHS if finetune else a["epochs"]
    return {
        "data": {"dataset": "cifar10", "source": "folder", "path": "../shared/data/cifar10-jpeg",
                 "batch_size": 128, "train_subset": 1000 if runlocal else None},
        "model": {"family": a["family"], "depth": a["depth"], "norm": "mixbn" if mixbn else "bn",
                  "mean": CIFAR_MEAN, "std": CIFAR_STD},
        "attack": RECIPES[attack],
        "eval_attack": {"name": "pgd", "epsilon": EPSILON, "step_size": 2 / 255, "steps": 20},
        "trainer": {"clean_portion": 1.0 if mixbn else 0.0,
                    "mixing": "mixbn" if mixbn else "joint",
                    "weight_decay": 5e-4, "catastrophic_overfitting": True,
                    "precision": "auto"},
        "optimizer": {"learning_rate": FINETUNE_LR if finetune else 0.2, "momentum": 0.9,
                      "nesterov": False, "schedule": "cyclic", "warmup_epochs": 0,
                      "epochs": 1 if runlocal else epochs},
        "init_from": f"zoo:{arch}.{attack}_cifar10jpeg" if finetune else None,
        # Validation picks the best checkpoint (robust overfitting); the zoo's
        # publish step measures the test set, so the run's own test pass is small.
        "eval": {"val_subset": 100 if runlocal else 500,
                 "test_subset": 100 if runlocal else 1000},
    }
