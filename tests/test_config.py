import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_advscale import attacks, config
from tf_advscale.config import ConfigError

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
# configs/reproduce.py describes experiments for `advscale reproduce` (tests/test_reproduce.py).
TRAIN_CONFIGS = [p for p in CONFIGS if p.name != "reproduce.py"]


def test_the_config_files_are_the_known_ones():
    # A new config file: add its name here (and its launch command to its docstring).
    assert [p.name for p in CONFIGS] == ["adversarial.py", "cifar10_standard.py", "fast.py",
                                         "fmnist_standard.py", "reproduce.py"]


def _launch_commands():
    """Every `advscale train --config ...` command in the configs' docstrings."""
    out = []
    for path in TRAIN_CONFIGS:
        for line in path.read_text().splitlines():
            if "advscale train --config configs/" in line:
                out.append(line.split("--config ")[1].split()[0])
    return out


def test_every_config_file_documents_its_launch_command():
    documented = {c.split(":")[0] for c in _launch_commands()}
    assert documented == {f"configs/{p.name}" for p in TRAIN_CONFIGS}
    assert "advscale reproduce" in (CONFIGS[0].parent / "reproduce.py").read_text()


@pytest.mark.parametrize("spec", _launch_commands())
@pytest.mark.parametrize("runlocal", [False, True])
def test_every_config_loads_and_validates(spec, runlocal):
    cfg = config.load(str(CONFIGS[0].parent.parent / spec), runlocal=runlocal)
    assert set(cfg) == set(config.DEFAULTS)
    attacks.from_spec(cfg["attack"])
    if cfg["eval_attack"] is not None:
        attacks.from_spec(cfg["eval_attack"])
    from tf_advscale import recipe
    recipe.check_init_from(cfg["init_from"])  # a fine-tuning config's source exists


def test_config_arguments_are_checked():
    with pytest.raises(ConfigError, match="'fmnist,mixed'"):
        config.load(str(CONFIGS[0].parent / "adversarial.py:fmnist,mixed"))


def test_unknown_keys_are_errors_with_suggestions():
    with pytest.raises(ConfigError, match="'optimizer.epoch'.*'optimizer.epochs'"):
        config.merge({"optimizer": {"epoch": 3}})
    with pytest.raises(ConfigError, match="'mdoel'"):
        config.merge({"mdoel": {}})
    with pytest.raises(ConfigError, match="must be a dict"):
        config.merge({"data": 3})


def test_overrides():
    cfg = config.load(None, overrides=["optimizer.epochs=3", "attack.steps=2",
                                       "data.dataset=cifar10", "eval_attack=None"])
    assert cfg["optimizer"]["epochs"] == 3 and cfg["attack"]["steps"] == 2
    assert cfg["attack"]["name"] == "pgd"  # the rest of the attack is kept
    assert cfg["data"]["dataset"] == "cifar10" and cfg["eval_attack"] is None
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.load(None, overrides=["optimizer.epochs"])
    with pytest.raises(ConfigError, match="optimizer.epoks"):
        config.load(None, overrides=["optimizer.epoks=3"])


@pytest.mark.parametrize("body,match", [
    ("def get_config(:\n", "syntax error"),
    ("x = 1\n", "must define get_config"),
    ("def get_config(runlocal=False):\n    return [1]\n", "must return a dict"),
])
def test_malformed_config_files(tmp_path, body, match):
    p = tmp_path / "bad.py"
    p.write_text(body)
    with pytest.raises(ConfigError, match=match):
        config.load(str(p))
    with pytest.raises(ConfigError, match="not found"):
        config.load(str(tmp_path / "missing.py"))


_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=5))
_keys = st.sampled_from(sorted(config.DEFAULTS) + ["epochs", "dataset", "x", "attack_bn"])
_trees = st.recursive(_leaf, lambda c: st.dictionaries(_keys, c, max_size=4), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _trees, max_size=5))
def test_fuzz_merge_only_raises_config_errors(update):
    try:
        cfg = config.merge(update)
    except ConfigError:
        return
    assert set(cfg) == set(config.DEFAULTS)


@pytest.mark.parametrize("path", [p for p in TRAIN_CONFIGS])
def test_runlocal_is_small_end_to_end(path):
    """--runlocal shrank training but evaluated on every test image, for minutes."""
    arg = {"adversarial.py": ":fmnist,adv_only", "fast.py": ":preactresnet18,nfgsm"}.get(
        path.name, "")
    cfg = config.load(str(path) + arg, runlocal=True)
    assert cfg["data"]["train_subset"] and cfg["data"]["train_subset"] <= 2000
    assert cfg["eval"]["val_subset"] <= 500
    assert cfg["eval"]["test_subset"] or cfg["data"]["test_subset"], path.name
