"""The paper's published numbers that the experiments compare with."""

# The paper's numbers (ResNet-152 on ImageNet, targeted PGD-2000; PAPER.md).
PAPER = {
    "clean_portion": {0.0: 39.2, 0.2: 32.1, 0.4: 29.1, 0.6: 15.3, 0.8: 20.3, 1.0: 20.9},
    "attack_strength": {"adv_only": {10: 52.5, 100: 41.7, 500: 39.6, 1000: 38.9, 2000: 39.2},
                        "mixed_bn": {10: 56.2, 100: 35.4, 500: 26.6, 1000: 23.5, 2000: 20.9}},
    "mixbn": {"mbn_adv_robust": 38.3, "adv_only_robust": 39.2, "one_bn_robust": 20.9,
              "mbn_clean_clean": 79.3, "standard_clean": 78.9},
    "alp": {"one_bn": 20.9, "one_bn_alp": 23.0, "mbn": 38.3, "mbn_alp": 35.3},
    "depth": {"depths": [152, 200, 338, 518, 638], "robust": [42.2, 43.8, 44.6, 46.2, 46.7],
              "clean": [79.0, 79.3, 79.5, 79.8, 79.7]},
}
