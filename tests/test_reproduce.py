"""advscale reproduce: plans, verdicts, reports, and tiny end-to-end runs."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tf_advscale import config as config_lib
from tf_advscale import reproduce
from tf_advscale.reproduce import Run

from helpers.cli_process import advscale, kill_when

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "reproduce.py")


def _plan(tmp_path, scale="tiny", dataset="sample", seeds=None):
    config = config_lib.load_file(f"{CONFIG}:{scale}")
    return reproduce.Plan(config, dataset, str(tmp_path), seeds)


@pytest.mark.parametrize("scale,dataset", [("small", "fmnist"), ("small", "cifar10"),
                                           ("medium", "cifar10"), ("paper", "imagenet"),
                                           ("tiny", "sample")])
def test_every_run_of_every_scale_is_a_valid_training_config(tmp_path, scale, dataset):
    plan = _plan(tmp_path, scale, dataset)
    runs = [Run(), Run(clean_portion=1.0), Run("mixbn", 1.0), Run("gn", 1.0), Run("ln", 0.0),
            Run("mixbn", 1.0, separate_affine=False), Run("mixbn", 1.0, separate_stats=False),
            Run(clean_portion=1.0, alp=True), Run(clean_portion=1.0, attack_bn="train"),
            Run(standard=True), Run(depth=plan.config["depths"][-1])]
    keys = [r.key(plan.base_depth) for r in runs]
    assert len(set(keys)) == len(keys), keys
    for run in runs:
        c = plan.train_config(run, seed=1)  # merge() rejects unknown keys
        assert c["seed"] == 1 and c["model"]["norm"] == run.norm
        assert (c["attack"] is None) == run.standard
        assert c["trainer"]["mixing"] == ("mixbn" if run.norm == "mixbn" else "joint")
    mix = plan.train_config(Run("mixbn", 1.0, separate_stats=False), 0)
    assert mix["model"]["norm_kwargs"] == {"separate_stats": False, "separate_affine": True}
    if scale == "paper":
        c = plan.train_config(Run(), 0)
        assert c["attack"]["targeted"] and c["attack"]["steps"] == 30
        assert c["trainer"]["label_smoothing"] == 0.1
        assert c["data"]["eval_split"] == "validation" and plan.split == "validation"


def test_experiments_are_registered_once_in_the_order_all_runs_them():
    assert list(reproduce.EXPERIMENTS) == [
        "clean_portion", "attack_strength", "mixbn", "consistent_bn", "norms", "alp", "depth",
        "diagnosis", "depth_search"]
    assert reproduce.EXPERIMENTS["mixbn"].__name__ == "exp_mixbn"
    with pytest.raises(ValueError, match="'mixbn' is already registered"):
        reproduce.experiment("mixbn")(lambda plan: {})
    assert reproduce.EXPERIMENTS["mixbn"].__name__ == "exp_mixbn"


def test_unknown_dataset_and_scale_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'nope'"):
        _plan(tmp_path, "small", "nope")
    with pytest.raises(config_lib.ConfigError, match="huge"):
        config_lib.load_file(f"{CONFIG}:huge")
    with pytest.raises(ValueError, match="'nope'"):
        reproduce.run_experiment(_plan(tmp_path), "nope")


@pytest.mark.parametrize("ours,spread,paper,expected", [
    (10.0, 2.0, 18.3, "reproduced in magnitude"),
    (1.0, 0.2, 18.3, "reproduced in direction"),
    (1.0, 2.0, 18.3, "inconclusive (within the seed spread)"),
    (-5.0, 2.0, 18.3, "not reproduced"),
    (3.0, 1.0, None, "reproduced in direction"),
    (-3.0, 1.0, None, "not reproduced"),
])
def test_verdict(ours, spread, paper, expected):
    assert reproduce.verdict(ours, spread, paper, 20.9, 20.0) == expected


def _fake_results(robust_at):
    """evaluate_run replaced by a function of the recipe: no training."""
    def fake(plan, run, seed, ev):
        plan.train_config(run, seed)
        noise = 0.002 * seed
        out = {"clean": (0.9 if run.standard else 0.8) + noise, "n": ev.n or 100}
        for a in ev.attacks:
            steps = int(a.rsplit("-", 1)[1])
            out[a] = robust_at(run, ev, steps) + noise
        return out
    return fake


def test_analyses_and_report_from_synthetic_results(tmp_path, monkeypatch):
    # Robustness falls with the clean portion, and with attack steps faster for
    # the mixed model (the paper's shape): every verdict must say so.
    def robust(run, ev, steps):
        mixed = run.clean_portion
        if run.norm == "mixbn" and ev.route != "clean":
            mixed = 0.1
        weak_attack_bonus = 0.3 * (mixed > 0.9) * (steps < 5)
        return 0.5 - 0.2 * mixed - 0.02 * mixed * np.log10(steps) + weak_attack_bonus

    monkeypatch.setattr(reproduce.plan, "evaluate_run", _fake_results(robust))
    plan = _plan(tmp_path, seeds=[0, 1])
    r = reproduce.run_experiment(plan, "clean_portion")
    assert [row["clean_portion"] for row in r["rows"]] == [0.0, 1.0]
    assert r["rows"][0]["robust"]["mean"] == pytest.approx(50.1)
    assert r["rows"][1]["robust"]["values"] == [pytest.approx(28.6, abs=0.01),
                                                pytest.approx(28.8, abs=0.01)]
    assert r["findings"][0]["verdict"] == "reproduced in magnitude"
    assert "39.2" in r["table"]
    s = reproduce.run_experiment(plan, "attack_strength")
    crossing = [f for f in s["findings"] if f["claim"].startswith("The curves cross (pgd)")]
    assert crossing[0]["verdict"] == "reproduced in direction"
    m = reproduce.run_experiment(plan, "mixbn")
    assert m["recovered_fraction"] == pytest.approx(0.9, abs=0.01)
    for name in ("consistent_bn", "norms", "alp", "depth"):
        reproduce.run_experiment(plan, name)
    for name in ("clean_portion", "attack_strength", "mixbn"):
        out = tmp_path / "sample" / name
        assert (out / "results.json").exists() and (out / "table.md").exists()
        assert list(out.glob("*.png")), f"no plot for {name}"
    report = reproduce.write_report(str(tmp_path), str(tmp_path / "REPRODUCTION.md"),
                                    datasets={"sample": {"label": "The Sample"},
                                              "cifar10": {"label": "CIFAR-10 (JPEG q75)"}})
    text = pathlib.Path(report).read_text()
    # The data set named as the config labels it; epsilon and step as written.
    assert "- **sample** (tiny scale): The Sample (`fashion_mnist_sample`)" in text
    assert "training attack PGD-2, step 0.05, untargeted, epsilon 0.1;" in text
    assert [reproduce._number(v) for v in (8 / 255, 3 / 255, 0.04, 0.0, 0.2, 1.0)] == [
        "8/255", "3/255", "0.04", "0", "0.2", "1"]
    assert [reproduce._hours(s) for s in (129.2, 3600 * 3.7)] == ["2 min", "3.7 h"]
    assert "Not run yet" in text and "sample: diagnosis, depth_search; cifar10: all." in text
    assert "| clean_portion | sample |" in text and "reproduced in magnitude" in text
    assert "![clean_portion](sample/clean_portion/clean_portion.png)" in text

    # The opposite effect is reported as not reproduced.
    monkeypatch.setattr(reproduce.plan, "evaluate_run",
                        _fake_results(lambda run, ev, k: 0.3 + 0.2 * run.clean_portion))
    r = reproduce.run_experiment(_plan(tmp_path / "other", seeds=[0, 1]), "clean_portion")
    assert r["findings"][0]["verdict"] == "not reproduced"


def test_report_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="No experiment results"):
        reproduce.write_report(str(tmp_path), str(tmp_path / "R.md"))


def _reproduce(workdir, experiment, wait=True):
    return advscale(workdir, ["reproduce", experiment, "--runlocal", "--config", CONFIG,
                              "--workdir", str(workdir), "--results", str(workdir)], wait=wait)


def _results(workdir, name):
    r = json.loads((workdir / "sample" / name / "results.json").read_text())
    return {k: r[k] for k in ("rows", "findings", "table") if k in r}


# Minutes of subprocess training, over CI's budget: run by hand (-m long).
@pytest.mark.long
def test_clean_portion_killed_then_rerun_gives_the_same_results(tmp_path):
    """The tiny clean-portion experiment (2 portions x 2 seeds), killed while
    its third run trains, then rerun, equals an uninterrupted one."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _reproduce(straight, "clean_portion")
    proc = _reproduce(killed, "clean_portion", wait=False)
    target = killed / "sample" / "runs" / "bn-c100-d8" / "seed0" / "state"
    kill_when(proc, lambda: target.is_dir() and any(target.glob("ckpt-*")),
              "a checkpoint of the third run")
    assert not (killed / "sample" / "clean_portion" / "results.json").exists()
    _reproduce(killed, "clean_portion")
    assert _results(killed, "clean_portion") == _results(straight, "clean_portion")
    # Experiments share runs: attack_strength trains nothing new.
    before = sorted(p.name for p in (killed / "sample" / "runs").iterdir())
    _reproduce(killed, "attack_strength")
    assert sorted(p.name for p in (killed / "sample" / "runs").iterdir()) == before
    path = killed / "sample" / "attack_strength" / "results.json"
    r = json.loads(path.read_text())
    assert sorted(r["compute"]["runs"]) == [f"bn-c{c}-d8/seed{s}" for c in (0, 100)
                                            for s in (0, 1)]
    assert r["compute"]["train_seconds"] > 0 and r["compute"]["eval_seconds"] > 0
    # A rerun that reuses everything writes the same file, cost included.
    text = path.read_text()
    _reproduce(killed, "attack_strength")
    assert path.read_text() == text
    assert set(r["curves"]) == {"pgd", "paper-pgd"}
    for family in r["curves"].values():
        for curve in family.values():
            acc = [curve[k]["mean"] for k in sorted(curve, key=int)]
            assert acc[-1] <= acc[0] + 1e-9  # more steps never help the model here
    subprocess.run([sys.executable, "-m", "tf_advscale.cli", "reproduce", "report",
                    "--results", str(killed), "--out", str(tmp_path / "R.md")], cwd=ROOT,
                   check=True)
    assert "attack_strength" in (tmp_path / "R.md").read_text()


# Minutes of subprocess training, over CI's budget: run by hand (-m long).
@pytest.mark.long
def test_diagnosis_and_consistent_bn_run_end_to_end(tmp_path):
    plan = _plan(tmp_path, seeds=[0])
    d = reproduce.run_experiment(plan, "diagnosis")
    names = [row["name"] for row in d["rows"]]
    # CIFAR ResNet-8 in network order: stem, 3 blocks x 2 norms, 2 projections.
    assert len(names) == 9 and names[0] == "stem_norm" and names[-1].startswith("stage3")
    for row in d["rows"]:
        for route in ("adversarial", "clean"):
            noise = row[f"{route}_route_clean_vs_clean"]["mean_diff"]["mean"]
            assert np.isfinite(noise) and noise >= 0
        assert row["moving"]["mean_diff"]["mean"] > 0  # the two domains' statistics differ
    assert all(f["verdict"].endswith("(1 seed: no spread)") for f in d["findings"])
    assert len({line.count("|") for line in d["table"].splitlines()}) == 1  # a valid table
    c = reproduce.run_experiment(plan, "consistent_bn")
    rows = c["rows"]
    batch = rows["adversarial only; test BN: batch statistics"]["clean"]["mean"]
    moving = rows["adversarial only; test BN: moving statistics"]["clean"]["mean"]
    assert batch != moving  # the two BN modes are really different evaluations


def test_batch_statistics_leave_moving_statistics_alone():
    import keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 4)).astype("float32")
    before = [np.array(v) for v in model.non_trainable_variables]
    y = np.asarray(reproduce.BatchStatistics(model)(x))
    assert abs(y.mean()) < 1e-3 and abs(y.std() - 1) < 1e-2  # normalised by the batch
    for b, v in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(b, np.array(v))


@pytest.mark.slow
def test_depth_search_experiment_runs_two_trials_with_the_robust_objective(tmp_path):
    plan = _plan(tmp_path, seeds=[0, 1])
    r = reproduce.run_experiment(plan, "depth_search")
    assert r["setup"]["seeds"] == [0]  # one search, whatever the plan's seeds
    assert len(r["trials"]) == 2
    for t in r["trials"]:
        assert t["depth"] in (8, 14) and t["status"] == "COMPLETED"
        assert t["val_adv_accuracy"] <= t["val_clean_accuracy"]
        for key in ("val_adv_accuracy", "val_clean_accuracy"):  # over the 64 images
            assert (t[key] * 64).is_integer(), (key, t[key])
        # CIFAR ResNet-8/14 at width 0.5 on 28x28x1 (as in tests/test_tuning.py).
        assert t["train_seconds"] > 0 and t["params"] == {8: 19_810, 14: 44_226}[t["depth"]]
    assert r["trials"][0]["score"] == max(t["score"] for t in r["trials"])  # best first
    assert "val robust" in r["table"]


@pytest.mark.parametrize("d_lo,d_hi,expected", [
    (3.0, -10.0, "reproduced in direction"),
    (-3.0, -10.0, "not reproduced"),       # mixed weaker even at the weak attack
    (3.0, 5.0, "not reproduced"),          # mixed stronger at the strong attack
    (0.5, -10.0, "inconclusive (within the seed spread)"),
])
def test_crossing_verdict(d_lo, d_hi, expected):
    assert reproduce._crossing_verdict(d_lo, 1.0, d_hi, 1.0) == expected


@pytest.mark.slow
def test_a_finished_run_of_another_config_is_not_reused(tmp_path):
    from tf_advscale.config import ConfigError
    plan = _plan(tmp_path, seeds=[0])
    reproduce.train(plan, Run(), 0)
    plan.train["optimizer"]["epochs"] = 2  # the config was edited after the run
    with pytest.raises(ConfigError, match="optimizer.epochs"):
        reproduce.train(plan, Run(), 0)


@pytest.mark.slow
def test_autoattack_beside_the_main_attack_where_the_scale_asks(tmp_path, monkeypatch):
    """eval.autoattack_n (the medium scale: 1,000 images) adds AutoAttack to
    clean_portion, mixbn and depth: a column, a finding and a plot series,
    from evaluations the plan lists. The plumbing, on the tiny scale's runs
    with PGD-2 standing in for AutoAttack (tests/test_autoattack.py tests the
    attack itself; here it would only cost minutes of tracing)."""
    import re
    from tf_advscale import attacks as attacks_lib
    from tf_advscale.reproduce import estimate
    make = attacks_lib.make
    monkeypatch.setattr(attacks_lib, "make", lambda name, *a, **k: make(
        "pgd-2" if name == "autoattack" else name, *a, **k))
    plan = _plan(tmp_path, seeds=[0])
    plan.eval = {**plan.eval, "autoattack_n": 4}
    r = reproduce.run_experiment(plan, "clean_portion")
    assert "| AutoAttack (4 images) |" in r["table"].splitlines()[0]
    [aa] = [f for f in r["findings"] if f["claim"].startswith("Under AutoAttack too")]
    assert aa["paper"].startswith("not in the paper") and "AutoAttack, 4 images" in aa["ours"]
    from tf_advscale.reproduce import plots
    assert "ours, AutoAttack" in plots.of_result("clean_portion", r)["clean_portion"]["series"]
    done = {p.parts[-4]: json.loads(p.read_text())
            for p in pathlib.Path(tmp_path).rglob("*_n4_autoattack_*.json")}
    assert sorted(done) == ["bn-c0-d8", "bn-c100-d8"], done
    for row in r["rows"]:
        saved = done[f"bn-c{100 * row['clean_portion']:.0f}-d8"]
        assert saved["n"] == 4 and saved["autoattack"] <= saved["clean"]
        assert row["autoattack"]["values"] == [round(100 * saved["autoattack"], 2)]

    medium = _plan(tmp_path / "m", "medium", "cifar10")
    work, _ = estimate.planned_work(medium, ["clean_portion", "mixbn", "depth"])
    def which(path):
        return re.search(r"([\w-]+)/seed(\d)/evals/(\w+?)_moving_n1000_autoattack_",
                         path).groups()
    aa = [which(p) for p, ev in work["evals"].items() if ev.attacks == ("autoattack",)]
    # The seed-0 runs are the zoo's, whose own AutoAttack records are read.
    shared = [which(p) for p in work["shared_evals"]]
    assert sorted(shared) == [
        ("bn-c0-d20", "0", "single"), ("bn-c100-d20", "0", "single"),
        ("mixbn-c100-d20", "0", "adversarial"), ("mixbn-c100-d20", "0", "clean")], shared
    assert sorted(aa + shared) == [
        ("bn-c0-d20", "0", "single"), ("bn-c0-d20", "1", "single"), ("bn-c0-d56", "0", "single"),
        ("bn-c100-d20", "0", "single"), ("bn-c100-d20", "1", "single"),
        ("mixbn-c100-d20", "0", "adversarial"), ("mixbn-c100-d20", "0", "clean"),
        ("mixbn-c100-d20", "1", "adversarial"), ("mixbn-c100-d20", "1", "clean")], aa


def test_plan_measures_this_machines_rate_when_asked(tmp_path, capsys):
    """--measure-rate: hours at a rate timed here on the base run's step,
    not at that of runs trained elsewhere (machines differ several-fold)."""
    from advscale_cli import build_parser
    from tf_advscale import cli
    from tf_advscale.reproduce import estimate
    plan = _plan(tmp_path)
    rate = estimate.measure_rate(plan, steps=2)
    # Tiny: ResNet-8 on 28x28 images, batch 32, PGD-2 steps: hundreds to thousands a second.
    assert 10 < rate < 1e6
    text = "\n".join(estimate.describe(plan, ["clean_portion"], rate_here=rate))
    passes = estimate.train_passes(plan, plan.train_config(Run(), 0))
    assert f"{passes / 1e6:.2f}M passes, ~{passes / rate / 3600:.1f} h" in text
    assert f"at {rate:.0f} image passes/s, measured on this machine" in text
    args = build_parser().parse_args(["reproduce", "plan", "--runlocal", "--measure-rate",
                                      "--workdir", str(tmp_path / "w"), "--config", CONFIG])
    assert cli.run(args) == 0
    assert "image passes/s, measured on this machine" in capsys.readouterr().out
    args = build_parser().parse_args(["reproduce", "all", "--runlocal", "--measure-rate",
                                      "--config", CONFIG])
    with pytest.raises(SystemExit, match="--measure-rate goes with 'plan'. Received: 'all'"):
        cli.run(args)
    with pytest.raises(ValueError, match="steps and warmup must be ints >= 1"):
        estimate.measure_rate(plan, steps=0)
