import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=ROOT):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "tf_advscale.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_default_config_end_to_end(tmp_path):
    work = tmp_path / "run"
    r = _run("train", "--workdir", str(work), "--set", "optimizer.epochs=1",
             "--set", "data.train_subset=256", "--set", "data.batch_size=64",
             "--set", "eval.val_subset=64", "--set", "eval.test_subset=64")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["test_images"] == 64
    assert metrics["results"]["adv_accuracy"] is not None
    assert metrics["params"] == 77_754  # CIFAR ResNet-8 on 1-channel images
    for name in ("config.json", "final.keras", "history.csv"):
        assert (work / name).exists(), name
    said = "Final evaluation on 64 test images"  # on the console and in the run log
    assert said in r.stdout.splitlines() and (work / "run.log").read_text().endswith(said + "\n")
    config = json.loads((work / "config.json").read_text())
    assert config["optimizer"]["epochs"] == 1
    # The trained model, compiled optimizer and schedule included, reloads, and
    # its predictions on the run's 64 test images give the reported accuracy.
    import keras
    import numpy as np
    import tf_advscale
    from tf_advscale import runner
    model = keras.saving.load_model(work / "final.keras")
    assert isinstance(model, tf_advscale.training.AdversarialModel)
    test, _ = runner.load_data(config)[2]
    correct = [np.argmax(model.predict(x, verbose=0), -1) == np.asarray(y) for x, y in test]
    correct = np.concatenate(correct)
    assert len(correct) == 64
    assert metrics["results"]["clean_accuracy"] == pytest.approx(correct.mean(), abs=1e-6)
    # Its robust accuracy is what evaluate.run_attacks (advscale eval's
    # function) counts for the same attack, images, batches and seed; the
    # run's batches are kept for a resumed final evaluation.
    from tf_advscale import evaluate
    x = np.concatenate([np.asarray(x) for x, _ in test])
    y = np.concatenate([np.asarray(y) for _, y in test])
    again, _ = evaluate.run_attacks(model, x, y, {"eval_attack": model.eval_attack},
                                    batch_size=64, seed=config["seed"], verbose=False)
    assert metrics["results"]["adv_accuracy"] == pytest.approx(again["eval_attack"].mean(),
                                                               abs=1e-6)
    assert sorted(os.listdir(work / "final_eval" / "model" / "batches")) == ["batch_00000.npz"]


def test_unknown_config_key_is_a_clear_error(tmp_path):
    r = _run("train", "--workdir", str(tmp_path), "--set", "optimizer.epochz=1")
    assert r.returncode == 2
    assert "optimizer.epochz" in r.stderr and "optimizer.epochs" in r.stderr
    assert not (tmp_path / "metrics.json").exists()


# Calls setup.py's console-script function with ARGS, then says on stderr
# whether TensorFlow (or tf_advscale, which imports it) was imported.
ENTRY = """
import sys
from {module} import {function} as main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("tensorflow imported:", "tensorflow" in sys.modules or "tf_advscale" in sys.modules,
      file=sys.stderr)
sys.exit(code)
"""


def _entry_point(*args):
    """``advscale ARGS`` through the entry point setup.py declares."""
    from helpers.cli_process import checkout_env
    with open(os.path.join(ROOT, "setup.py")) as f:
        module, function = re.search(r'"advscale=([\w.]+):(\w+)"', f.read()).groups()
    code = ENTRY.format(module=module, function=function)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=checkout_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_models_lists_the_registry():
    r = _entry_point("models")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resnet638" in r.stdout and "cifar_resnet20" in r.stdout
    r = _run("models")  # python -m tf_advscale.cli still works
    assert r.returncode == 0 and "resnet638" in r.stdout and "cifar_resnet20" in r.stdout


def test_help_does_not_import_tensorflow():
    r = _entry_point("--help")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("usage: advscale")
    for command in ("train", "eval", "models", "zoo", "reproduce"):
        assert command in r.stdout
    assert "tensorflow imported: False" in r.stderr
    r = _entry_point("eval", "--help")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--model" in r.stdout and "(default: 1000)" in r.stdout
    assert "(default: test)" in r.stdout
    assert "tensorflow imported: False" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["reproduce", "nonsense"], "invalid choice: 'nonsense'"),
    (["eval", "--model", "m.keras", "--out", "o", "--epsilon", "8/0"],
     "not a number or fraction: '8/0'"),
    (["eval"], "the following arguments are required: --model, --out"),
    (["trian"], "invalid choice: 'trian'"),
], ids=["experiment", "epsilon", "required", "command"])
def test_argument_errors_do_not_import_tensorflow(args, message):
    r = _entry_point(*args)
    assert r.returncode == 2
    assert message in r.stderr and "usage: advscale" in r.stderr
    assert "tensorflow imported: False" in r.stderr


def test_parsing_a_valid_command_does_not_import_tensorflow():
    code = ("import sys, advscale_cli\n"
            "a = advscale_cli.build_parser().parse_args(sys.argv[1:])\n"
            "print(a.command, a.experiment, 'tensorflow' in sys.modules)")
    from helpers.cli_process import checkout_env
    r = subprocess.run([sys.executable, "-c", code, "reproduce", "depth_search", "--runlocal"],
                       cwd=ROOT, env=checkout_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["reproduce", "depth_search", "False"]


def test_reproduce_choices_are_the_experiments():
    """advscale_cli's copy of the experiment names (it must not import
    TensorFlow to read them) equals tf_advscale.reproduce's."""
    import advscale_cli
    from tf_advscale import reproduce
    assert advscale_cli.REPRODUCE_EXPERIMENTS == tuple(reproduce.EXPERIMENTS)


@pytest.mark.slow
def test_accelerator_benchmark_runs_at_its_tiny_size(tmp_path):
    """benchmarks/accelerator.sh, the GPU script, end to end on the CPU at --tiny."""
    import json
    import subprocess

    from helpers.cli_process import ROOT, checkout_env
    out = tmp_path / "acc.json"
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "accelerator.sh"), "--tiny",
                          "--out", str(out)], capture_output=True, text=True, timeout=600,
                         cwd=ROOT, env=checkout_env())
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["what"].startswith("tiny")
    rows = result["fast_training_preactresnet18_nfgsm"]
    assert {(r["precision"], r["xla"]) for r in rows} >= {
        ("float32", False), ("float32", True), ("mixed_bfloat16", False),
        ("mixed_bfloat16", True)}
    assert all(r["steps_per_s"] > 0 for r in rows)
    assert result["resnet_pgd7_step"]["images_per_s"] > 0
    aa = result["autoattack"]
    assert 0 <= aa["autoattack_accuracy"] <= aa["clean_accuracy"] and aa["n"] == 4


def test_eval_takes_epsilon_and_data_from_zoo_metadata(tmp_path):
    from tf_advscale.cli import eval_defaults
    zoo_model = os.path.join(ROOT, "zoo", "resnet20.pgd3_cifar10jpeg", "model.keras")
    assert eval_defaults(zoo_model, None, None)[:2] == ("cifar10", 8 / 255)
    fmnist = os.path.join(ROOT, "zoo", "resnet20.pgd3_fmnist", "model.keras")
    assert eval_defaults(fmnist, None, None)[1] == pytest.approx(0.1)
    assert eval_defaults(fmnist, None, 0.2)[1:] == (0.2, "--epsilon")
    plain = str(tmp_path / "m.keras")
    assert eval_defaults(plain, None, None)[:2] == ("fashion_mnist", 0.1)
    assert eval_defaults(plain, "cifar10", None)[1] == 8 / 255
    # L2 attacks: an L-inf entry's epsilon is not theirs; CIFAR's usual L2 radius
    # is, and a data set without one asks for --epsilon.
    assert eval_defaults(zoo_model, None, None, "l2")[:2] == ("cifar10", 0.5)
    assert eval_defaults(fmnist, None, 1.5, "l2")[1] == 1.5
    with pytest.raises(SystemExit, match="L2 attacks on fashion_mnist need --epsilon"):
        eval_defaults(fmnist, None, None, "l2")


def test_eval_help_shows_defaults():
    out = subprocess.run([sys.executable, "-m", "tf_advscale.cli", "eval", "--help"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "(default: 1000)" in out.stdout and "(default: test)" in out.stdout


def test_zoo_info_prints_a_summary_and_json_on_request(capsys):
    from tf_advscale import cli
    name = "resnet20.mixbn_pgd3_cifar10jpeg"
    assert cli.main(["zoo", "info", name]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{name}: cifar ResNet-20 (mixbn), 274,042 parameters")
    assert "threat model: Linf epsilon 8/255" in text
    assert "route clean: clean 86.22, AutoAttack " in text
    assert "routes: adversarial, clean (default adversarial)" in text
    assert f"{name}/model.keras" in text and len(text.splitlines()) < 10
    assert cli.main(["zoo", "info", name, "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["params"] == 274_042
    # The AutoAttack part follows the record: its number and image count where
    # a route was measured, "not measured" where it was not.
    aa = meta["evaluation"].setdefault("autoattack", {}).setdefault("results", {})
    aa["adversarial"] = {"autoattack": 0.2975, "n": 1234}
    aa.pop("clean", None)
    text = cli.zoo_summary(meta, "somewhere/model.keras")
    assert "route adversarial: clean 71.15, AutoAttack 29.75 (1,234 test images)" in text
    assert "route clean: clean 86.22, AutoAttack not measured, worst case 0.00" in text
