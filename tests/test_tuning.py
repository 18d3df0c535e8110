"""keras-tuner depth search with a robustness objective, end to end."""

import pytest

from tf_advscale import data
from tf_advscale.tuning import DepthSearch, make_tuner, summarize

ATTACK = {"name": "pgd", "epsilon": 0.1, "step_size": 0.05, "steps": 1}
EVAL = {"name": "pgd", "epsilon": 0.1, "step_size": 0.025, "steps": 3}
# Trainable parameters of CIFAR ResNet-8/14 at width 0.5 on 28x28x1 images (filters
# 8, 16, 32), counted by hand: e.g. ResNet-8 = stem 72 + 16, stage 1 1,152 + 32,
# stage 2 3,456 + 64 + 128 + 32, stage 3 13,824 + 128 + 512 + 64, dense 330.
PARAMS = {8: 19_810, 14: 44_226}


@pytest.fixture(scope="module")
def tiny_data():
    train, _ = data.load("fashion_mnist_sample", "train", batch_size=64, subset=256, seed=0)
    val, _ = data.load("fashion_mnist_sample", "test", batch_size=100, subset=100, seed=0)
    return train, val


@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_two_trial_search_runs_end_to_end(kind, tiny_data, tmp_path):
    train, val = tiny_data
    hypermodel = DepthSearch((28, 28, 1), 10, ATTACK, EVAL, depths=(8, 14), widths=(0.5,))
    tuner = make_tuner(kind, hypermodel, max_trials=2, max_epochs=2, directory=str(tmp_path),
                       project_name=kind)
    kwargs = {} if kind == "hyperband" else {"epochs": 1}
    tuner.search(train, validation_data=val, verbose=0, **kwargs)
    rows = summarize(tuner)
    # Two trials (hyperband: one bracket of two at max_epochs=2), the two depths.
    assert sorted(row["depth"] for row in rows) == [8, 14]
    for row in rows:
        assert row["width"] == 0.5
        assert row["val_adv_accuracy"] <= row["val_clean_accuracy"]
        for key in ("val_adv_accuracy", "val_clean_accuracy"):  # over the 100 images
            assert abs(row[key] * 100 - round(row[key] * 100)) < 1e-4, (key, row[key])
        assert row["score"] == row["val_adv_accuracy"]  # the objective is robustness
        assert row["train_seconds"] > 0 and row["images_per_second"] > 0
        assert row["params"] == PARAMS[row["depth"]]
    assert rows[0]["score"] == max(r["score"] for r in rows)


def test_bad_search_spaces_are_refused():
    with pytest.raises(ValueError, match=r"6n\+2.*\[9\]|6n\+2.*\(9,\)"):
        DepthSearch((28, 28, 1), 10, ATTACK, EVAL, depths=(9,))
    with pytest.raises(ValueError, match="eval_attack is needed"):
        DepthSearch((28, 28, 1), 10, ATTACK, None)
    with pytest.raises(ValueError, match="Unknown tuner.*'grid'"):
        make_tuner("grid", DepthSearch((28, 28, 1), 10, ATTACK, EVAL))
