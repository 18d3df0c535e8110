"""advscale reproduce's medium scale: its config, runs shared with the zoo,
experiments and seeds per scale, the plan listing, and the report with two
scales side by side. Nothing here trains: zoo models are built untrained and
results come from a stand-in for evaluate_run."""

import copy
import json
import pathlib
import shutil

import numpy as np
import pytest

from tf_advscale import attacks, cli, files, zoo
from tf_advscale import config as config_lib
from tf_advscale import reproduce
from tf_advscale.models import count_params, resnet
from tf_advscale.evaluate import stage_key
from tf_advscale.reproduce import Eval, Run, estimate, share
from tf_advscale.reproduce.experiments import curve_attacks

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "reproduce.py")


def _config(scale):
    return config_lib.load_file(f"{CONFIG}:{scale}")


def _plan(tmp_path, config=None, seeds=None, dataset="sample"):
    return reproduce.Plan(config or _config("tiny"), dataset, str(tmp_path), seeds)


# -- the medium scale's config ------------------------------------------------------------

def test_medium_scale_is_the_zoo_recipe_on_all_of_cifar10(tmp_path):
    plan = _plan(tmp_path, _config("medium"), dataset="cifar10")
    c = plan.train_config(Run(), 0)
    assert c["data"]["train_subset"] is None and c["data"]["dataset"] == "cifar10"
    assert c["data"]["path"] == "../shared/data/cifar10-jpeg" and c["model"]["depth"] == 20
    assert c["optimizer"]["epochs"] == 20 and c["attack"]["steps"] == 3
    assert c["attack"]["epsilon"] == 8 / 255 and c["attack"]["step_size"] == 3 / 255
    assert (plan.eval["n"], plan.eval["curve_n"]) == (10000, 1000)
    assert plan.eval["curve_steps"][0] == 10 and plan.eval["curve_steps"][-1] == 1000
    assert plan.eval["curve_attacks"] == ["pgd", "paper-pgd"]
    assert plan.config["depths"] == [20, 56] and plan.config["clean_portions"] == [0.0, 1.0]
    assert plan.seeds == [0, 1] and plan.experiment_seeds("depth") == [0]
    assert plan.experiment_seeds("mixbn") == [0, 1]
    assert reproduce.experiments_of(plan.config) == ["clean_portion", "attack_strength",
                                                      "mixbn", "depth"]
    # Its run keys (depth 20) are also the small scale's: its own folder.
    assert plan.root == str(tmp_path / "medium" / "cifar10")
    small = _plan(tmp_path, _config("small"), dataset="cifar10")
    assert small.root == str(tmp_path / "cifar10")


def test_medium_seed_0_runs_are_the_zoos_and_the_rest_train(monkeypatch):
    monkeypatch.delenv("TF_ADVSCALE_ZOO", raising=False)  # the repository's zoo only
    plan = _plan("unused", _config("medium"), dataset="cifar10")
    expected = {Run(): "resnet20.pgd3_cifar10jpeg",
                Run(clean_portion=1.0): "resnet20.mixed_pgd3_cifar10jpeg",
                Run("mixbn", 1.0): "resnet20.mixbn_pgd3_cifar10jpeg"}
    for run, entry in expected.items():
        assert share.closest(plan.train_config(run, 0)) == (entry, [])
        assert share.closest(plan.train_config(run, 1)) == (entry, ["seed (0 -> 1)"])
    # The zoo's standard run trained 15 epochs, the medium scale's 20.
    name, diff = share.closest(plan.train_config(Run(standard=True), 0))
    assert (name, diff) == ("resnet20.standard_cifar10jpeg", ["optimizer.epochs (15 -> 20)"])
    assert share.closest(plan.train_config(Run(depth=56), 0))[1] == ["model.depth (20 -> 56)"]


def test_an_experiment_the_scale_does_not_run_is_one_clear_error(tmp_path, capsys):
    plan = _plan(tmp_path, _config("medium"), dataset="cifar10")
    with pytest.raises(ValueError, match=r"'norms' does not run at the medium scale: expected "
                                         r"one of \['clean_portion', 'attack_strength', "
                                         r"'mixbn', 'depth'\] \(or all\)"):
        reproduce.run_experiment(plan, "norms")
    assert cli.main(["reproduce", "alp", "--config", f"{CONFIG}:medium",
                     "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'alp' does not run at the medium scale" in err
    assert not (tmp_path / "medium").exists()
    with pytest.raises(ValueError, match="Unknown experiments \\['nope'\\]"):
        reproduce.experiments_of({**_config("medium"), "experiments": ["depth", "nope"]})


# -- what defines a recipe ----------------------------------------------------------------

def test_recipe_ignores_bookkeeping_and_keeps_what_decides_the_weights():
    plan = _plan("unused")
    base = plan.train_config(Run(), 0)
    same = copy.deepcopy(base)
    same.update(deterministic=False, threads={"intra_op": 1, "inter_op": 2},
                checkpoint={"every_steps": 7, "keep": 1}, eval_attack=None)
    same["eval"].update(val_subset=1000, test_subset=None)
    same["data"].update(test_subset=10, num_parallel_calls=4)
    same["trainer"].update(jit_compile=True, steps_per_execution=2)
    assert share.recipe(same) == share.recipe(base)
    for section, key, value in [("optimizer", "learning_rate", 0.05), ("data", "train_subset", 10),
                                ("trainer", "clean_portion", 0.5), ("model", "width", 0.5),
                                ("trainer", "precision", "mixed_bfloat16")]:
        other = copy.deepcopy(base)
        other[section][key] = value
        assert share.recipe(other) != share.recipe(base), key
    assert share.recipe({**base, "seed": 1}) != share.recipe(base)
    # Validation held out of the training images takes them from training:
    # then how many is part of the recipe.
    held = copy.deepcopy(base)
    held["data"]["val_split"] = "train"
    assert share.recipe(held) != share.recipe(base)
    fewer = copy.deepcopy(held)
    fewer["eval"]["val_subset"] += 1
    assert share.recipe(fewer) != share.recipe(held)
    # So does the catastrophic-overfitting monitor, which may roll the weights
    # back on the first validation batch.
    monitored = copy.deepcopy(base)
    monitored["trainer"]["catastrophic_overfitting"] = True
    for section, key, value in [("eval", "val_subset", 1000), ("data", "eval_split", "train")]:
        other = copy.deepcopy(monitored)
        other[section][key] = value
        assert share.recipe(other) != share.recipe(monitored), key
    # ... but not the evaluation split where validation reads the hold-out.
    monitored["data"]["val_split"] = "train"
    other = copy.deepcopy(monitored)
    other["data"]["eval_split"] = "validation"
    assert share.recipe(other) == share.recipe(monitored)
    # MixBN's kwargs at their defaults are the same recipe as no kwargs.
    mix = plan.train_config(Run("mixbn", 1.0), 0)
    assert mix["model"]["norm_kwargs"] == {"separate_stats": True, "separate_affine": True}
    assert share.recipe({**mix, "model": {**mix["model"], "norm_kwargs": {}}}) == \
        share.recipe(mix)
    ablation = plan.train_config(Run("mixbn", 1.0, separate_stats=False), 0)
    assert share.recipe(ablation)["model"]["norm_kwargs"] == {"separate_stats": False}


# -- runs shared with a zoo entry (a temporary zoo) --------------------------------------

def _entry(root, name, config, seconds=12.0):
    directory = root / name
    directory.mkdir(parents=True)
    model = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1))
    path = directory / "model.keras"
    files.save_model_atomic(model, path)
    meta = {"name": name, "params": count_params(model), "default_route": None,
            "architecture": {"norm": "bn"},
            "training": {"train_seconds": seconds, "hardware": "x86_64 2 cpus (Xeon)"},
            "recipe": {"config": json.loads(json.dumps(config, default=files.to_json))},
            "source": {"file": "model.keras", "sha256": files.sha256(path),
                       "bytes": path.stat().st_size}}
    (directory / "metadata.json").write_text(json.dumps(meta))
    return path


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A zoo holding the tiny plan's adversarial-only seed-0 run (with other
    bookkeeping) and its 100%-clean run with another learning rate; training
    is refused, unless a test allows it."""
    root = tmp_path / "zoo"
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(root))
    plan = _plan(tmp_path / "work")
    same = plan.train_config(Run(), 0)
    same.update(deterministic=False, checkpoint={"every_steps": 100, "keep": 2})
    other = plan.train_config(Run(clean_portion=1.0), 0)
    other["optimizer"]["learning_rate"] = 0.05
    paths = {"same": _entry(root, "resnet8.tiny_sample", same),
             "other": _entry(root, "resnet8.other_sample", other)}
    trained = []
    from tf_advscale import runner
    monkeypatch.setattr(runner, "run", lambda config, path, verbose=None: trained.append(path))
    return plan, paths, trained


def test_a_run_with_a_zoo_entrys_recipe_is_not_trained(tiny_zoo):
    plan, paths, trained = tiny_zoo
    path = reproduce.train(plan, Run(), 0)
    assert trained == []
    rec = share.record(path)
    assert rec["entry"] == "resnet8.tiny_sample"
    assert rec["sha256"] == files.sha256(paths["same"]) and rec["train_seconds"] == 12.0
    assert rec["ignored_differences"] == ["checkpoint.every_steps (100 -> 4)",
                                          "deterministic (False -> True)"]
    assert reproduce.train(plan, Run(), 0) == path and trained == []  # reused, not relinked
    # One recipe key differs: trained as usual, nothing shared.
    other = reproduce.train(plan, Run(clean_portion=1.0), 0)
    assert trained == [other] and share.record(other) is None
    # Seed 1 is no entry's.
    assert reproduce.train(plan, Run(), 1) in trained


def test_a_shared_run_is_evaluated_on_the_zoos_model(tiny_zoo):
    plan, paths, _ = tiny_zoo
    result = reproduce.evaluate_run(plan, Run(), 0, Eval(n=64))
    model, _ = zoo.load("resnet8.tiny_sample")
    x, y = plan.test_data(64)
    expected = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    assert result["clean"] == pytest.approx(expected) and result["n"] == 64
    path = plan.run_dir(Run(), 0)
    assert list((pathlib.Path(path) / "evals").glob("*.json"))
    cost = reproduce.compute_cost(plan, {})
    assert cost["shared"] == {"bn-c0-d8/seed0": "resnet8.tiny_sample"} and cost["runs"] == {}


def test_a_shared_runs_model_is_verified_before_use(tiny_zoo):
    plan, paths, _ = tiny_zoo
    path = reproduce.train(plan, Run(), 0)
    original = paths["same"].read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    paths["same"].write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="has sha256 .* the metadata says"):
        reproduce.evaluate_run(plan, Run(), 0, Eval(n=64))
    # The entry's file is not the one the run was linked to (republished since).
    paths["same"].write_bytes(original)
    assert share.run_model(path) is not None
    record = pathlib.Path(path) / share.RECORD
    record.write_text(json.dumps({**share.record(path), "sha256": "0" * 64}))
    with pytest.raises(zoo.ZooError, match="not the 0{64} that .* was evaluated with"):
        share.run_model(path)


def test_a_shared_run_whose_config_changed_is_refused(tiny_zoo):
    plan, _, trained = tiny_zoo
    reproduce.train(plan, Run(), 0)
    plan.train["optimizer"]["epochs"] = 2  # the config was edited after the run was shared
    with pytest.raises(config_lib.ConfigError, match="shares zoo entry 'resnet8.tiny_sample'.*"
                                                     "optimizer.epochs"):
        reproduce.train(plan, Run(), 0)
    assert trained == []


def test_a_partly_trained_run_resumes_rather_than_switching_to_the_zoo(tiny_zoo):
    plan, _, trained = tiny_zoo
    state = pathlib.Path(plan.run_dir(Run(), 0)) / "state"
    state.mkdir(parents=True)  # a run killed mid-training, before the entry existed
    path = reproduce.train(plan, Run(), 0)
    assert trained == [path] and share.record(path) is None


def test_plan_lists_shared_runs_runs_to_train_and_their_cost(tiny_zoo, tmp_path):
    plan, _, trained = tiny_zoo
    lines = estimate.describe(plan, ["clean_portion", "diagnosis"])
    text = "\n".join(lines)
    assert trained == [] and not (tmp_path / "work" / "sample").exists()  # nothing computed
    assert "bn-c0-d8/seed0: will be shared with zoo entry resnet8.tiny_sample" in text
    assert ("bn-c100-d8/seed0: to train (closest zoo entry resnet8.other_sample differs at "
            "optimizer.learning_rate (0.05 -> 0.1))") in text
    assert "(diagnosis not listed: per-layer statistics" in text
    # 2,000 images x 1 epoch x (2 steps + 1) + validation and test: 64 x (1 + 10) each.
    passes = estimate.train_passes(plan, plan.train_config(Run(), 0))
    assert passes == 2000 * 3 + 2 * 64 * 11
    rate = passes / 12.0  # the shared entry's training time
    hundred = estimate.train_passes(plan, plan.train_config(Run(clean_portion=1.0), 0))
    assert f"~{hundred / rate / 3600:.1f} h" in text
    assert "evaluations (4):" in text and text.count(": to do;") == 4
    assert "to compute: 3 runs to train" in text and "image passes/s" in text
    # Runs move between machines several-fold apart: the rate says where it was measured.
    assert "that rate was measured on x86_64 2 cpus (Xeon); this machine: " in text
    reproduce.train(plan, Run(), 0)
    assert "bn-c0-d8/seed0: shared with zoo entry resnet8.tiny_sample" in \
        "\n".join(estimate.describe(plan, ["clean_portion"]))


def _give_autoattack(root, name, plan, n=64, **edits):
    """Adds an AutoAttack record to zoo entry ``name``, as ``advscale zoo
    autoattack NAME --n N`` writes it (``edits`` change its fields)."""
    path = root / name / "metadata.json"
    meta = json.loads(path.read_text())
    meta["threat_model"] = {"norm": "Linf", "epsilon_float": plan.epsilon}
    aa = {"test_images": n, "subset_seed": 0, "command": f"advscale zoo autoattack {name}",
          "date": "2026-12-06",
          "results": {"default": {"clean": 0.5, "autoattack": 0.25, "n": n,
                                  "after_each": {"apgd-ce": 0.3, "square": 0.25}}}}
    for k, v in edits.items():
        (meta["threat_model"] if k == "epsilon_float" else aa)[k] = v
    meta["evaluation"] = {"autoattack": aa}
    path.write_text(json.dumps(meta))


def test_a_shared_runs_autoattack_is_read_from_its_entrys_record(tiny_zoo, tmp_path,
                                                                 monkeypatch):
    """A run shared with a zoo entry that has run AutoAttack on the images the
    plan would (the seed-0 draw of as many test images, at the plan's
    epsilon) takes the entry's result, and is not attacked again; any other
    evaluation is computed."""
    plan, _, _ = tiny_zoo
    root = tmp_path / "zoo"
    _give_autoattack(root, "resnet8.tiny_sample", plan)
    attacked = []

    def run_attacks(model, x, y, attacks, *args, **kwargs):
        attacked.append((sorted(attacks), len(y)))
        return {"clean": np.ones(len(y), bool), **{a: np.zeros(len(y), bool) for a in attacks}}, \
            {a: 1.0 for a in attacks}

    from tf_advscale import evaluate as ev_lib
    monkeypatch.setattr(ev_lib, "run_attacks", run_attacks)
    aa = Eval(attacks=("autoattack",), n=64)
    listing = "\n".join(estimate.describe(plan, ["clean_portion"]))  # before any run is linked
    assert "evaluations (4):" in listing and listing.count(": to do;") == 4  # no AutoAttack here
    plan.planned = {"runs": {}, "evals": {}, "shared_evals": {}}
    reproduce.evaluate_run(plan, Run(), 0, aa)
    reproduce.evaluate_run(plan, Run(), 1, aa)
    assert list(plan.planned["shared_evals"].values()) == [
        "zoo entry resnet8.tiny_sample's AutoAttack record (advscale zoo autoattack "
        "resnet8.tiny_sample, 2026-12-06)"]
    assert len(plan.planned["evals"]) == 1  # seed 1: no entry's
    # Seed 1's AutoAttack is costed at the share the seed-0 entry kept after
    # APGD-CE (0.3); a recipe no entry shares at 35%.
    plan.planned = None
    one, other = plan.train_config(Run(), 1), plan.train_config(Run(clean_portion=1.0), 1)
    assert estimate.eval_passes(plan, one, aa) == 64 * (1 + 100 + 0.3 * 5000)
    assert estimate.eval_passes(plan, other, aa) == 64 * (1 + 100 + 0.35 * 5000)
    got = reproduce.evaluate_run(plan, Run(), 0, aa)
    assert attacked == [] and got["autoattack"] == 0.25 and got["clean"] == 0.5
    assert got["autoattack/square"] == 0.25 and got["n"] == 64
    assert reproduce.evaluate_run(plan, Run(), 0, aa) == got  # now read from its file
    cost = reproduce.compute_cost(plan, {})
    assert cost["shared_evals"] == {
        "bn-c0-d8/seed0/evals/single_moving_n64_autoattack_" + plan.eval_tag() + ".json":
        "resnet8.tiny_sample"}
    assert not any("autoattack" in k for k in cost["evals"])
    # Another number of images (attacked here), another epsilon (or none),
    # another draw, another copy of the data, a route the record lacks,
    # another split: not the entry's.
    reproduce.evaluate_run(plan, Run(), 0, Eval(attacks=("autoattack",), n=32))
    path = plan.run_dir(Run(), 0)
    for edits in ({"epsilon_float": 0.5}, {"epsilon_float": None}, {"subset_seed": 1},
                  {"data_override": {"source": "tfds", "path": None}},
                  {"results": {"clean": {}}}, {"results": {"default": {"n": 64}}}):
        _give_autoattack(root, "resnet8.tiny_sample", plan, **edits)
        assert share.autoattack(path, None, 64, plan.epsilon, "test") is None, edits
    _give_autoattack(root, "resnet8.tiny_sample", plan)
    assert share.autoattack(path, None, 64, plan.epsilon, "train") is None
    assert share.autoattack(path, "clean", 64, plan.epsilon, "test") is None
    assert attacked == [(["autoattack"], 32)]
    # The entry's model is no longer the one the run was linked to.
    record = pathlib.Path(path) / share.RECORD
    record.write_text(json.dumps({**share.record(path), "sha256": "0" * 64}))
    with pytest.raises(zoo.ZooError, match="not the 0{64} that .* was evaluated with"):
        share.autoattack(path, None, 64, plan.epsilon, "test")


def test_a_run_trained_here_never_takes_a_zoo_entrys_autoattack(tiny_zoo, tmp_path):
    """A run trained (or started) here before an entry of its recipe was
    published is its own model: it is never linked, and neither planning nor
    evaluation reads the entry's AutoAttack for it."""
    plan, _, _ = tiny_zoo
    _give_autoattack(tmp_path / "zoo", "resnet8.tiny_sample", plan)
    path = pathlib.Path(plan.run_dir(Run(), 0))
    config = plan.train_config(Run(), 0)
    assert share.would_link(str(path), config) == "resnet8.tiny_sample"
    for done in ("metrics.json", "state", "final.keras"):
        if done == "state":
            (path / done).mkdir(parents=True)
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / done).write_text(json.dumps({"train_seconds": 1.0}))
        assert share.would_link(str(path), config) is None
        assert share.autoattack(str(path), None, 64, plan.epsilon, "test", config) is None
        text = "\n".join(estimate.describe(plan, ["clean_portion"]))
        assert "bn-c0-d8/seed0: will be shared" not in text and "will be read from" not in text
        shutil.rmtree(path / done) if done == "state" else (path / done).unlink()
    # A linked run whose entry is broken since: nothing read from it.
    reproduce.train(plan, Run(), 0)
    assert share.autoattack(str(path), None, 64, plan.epsilon, "test")["autoattack"] == 0.25
    (tmp_path / "zoo" / "resnet8.tiny_sample" / "metadata.json").write_text("{")
    assert share.autoattack(str(path), None, 64, plan.epsilon, "test") is None


def test_plan_command_prints_the_listing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_ADVSCALE_ZOO", raising=False)
    assert cli.main(["reproduce", "plan", "--config", f"{CONFIG}:medium",
                     "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cifar10, medium scale, seeds [0, 1]: clean_portion, "
                          "attack_strength, mixbn, depth")
    assert "runs (10):" in out and out.count("will be shared with zoo entry") == 3
    assert "bn-c0-d56/seed0: to train" in out and "bn-c0-d56/seed1" not in out  # depth: 1 seed
    assert not (tmp_path / "medium").exists()


def test_medium_reads_the_papers_pgd_curve_off_one_trajectory(monkeypatch):
    monkeypatch.delenv("TF_ADVSCALE_ZOO", raising=False)
    eps = 8 / 255
    long = "paper-pgd-20-50-100-200-500-1000"
    got = curve_attacks("paper-pgd", [10, 20, 50, 100, 200, 500, 1000], eps, True)
    assert got[10] == ("paper-pgd-10", "paper-pgd-10")  # its own step size: run apart
    assert got[20] == (long, f"{long}/step-20") and got[1000] == (long, f"{long}/step-1000")
    # Untargeted pgd-K steps by 2.5 epsilon / K: no two share a trajectory.
    assert curve_attacks("pgd", [10, 20], eps, True) == {10: ("pgd-10",) * 2, 20: ("pgd-20",) * 2}
    assert curve_attacks("paper-pgd", [20, 50], eps) == {20: ("paper-pgd-20",) * 2,
                                                         50: ("paper-pgd-50",) * 2}
    plan = _plan("unused", _config("medium"), dataset="cifar10")
    assert plan.eval["curve_one_trajectory"]
    planned, _ = estimate.planned_work(plan, ["attack_strength"])
    evs = {ev.attacks for ev in planned["evals"].values()}
    assert ("paper-pgd-10", long) in evs
    ev = next(e for e in planned["evals"].values() if e.attacks == ("paper-pgd-10", long))
    config = plan.train_config(Run(), 1)
    assert estimate.eval_passes(plan, config, ev) == 1000 * (1 + 10 + 1000)


def test_the_plan_counts_each_attacks_passes_per_image():
    steps = {"pgd-50": 50, "pgd-20-r3": 60, "pgd-20-l2": 20, "paper-pgd-20-50-1000": 1000,
             "paper-pgd-10": 10, "apgd-ce": 100, "apgd-t": 900, "fab-t-l2": 900,
             "square-5000-l2": 5000, "square": 1000, "fgsm": 1,
             "autoattack": estimate.autoattack_passes()}
    assert {a: estimate._steps(a) for a in steps} == steps


def test_a_curve_read_off_one_trajectory_is_the_curve_of_separate_runs(tmp_path, monkeypatch):
    """With a stand-in whose accuracy depends on K alone, the experiment finds
    each K's point under its stage's key: the same curves as separate attacks."""
    asked = []

    def fake(plan, run, seed, ev):
        asked.append(ev.attacks)
        return _fake(plan, run, seed, ev)

    monkeypatch.setattr(reproduce.plan, "evaluate_run", fake)
    apart = reproduce.run_experiment(_plan(tmp_path / "a"), "attack_strength")
    assert set(asked) == {("pgd-2", "pgd-5"), ("paper-pgd-2", "paper-pgd-5")}
    config = _config("tiny")
    config["datasets"]["sample"]["eval"]["curve_one_trajectory"] = True
    asked.clear()
    one = reproduce.run_experiment(_plan(tmp_path / "b", config), "attack_strength")
    assert set(asked) == {("pgd-2", "pgd-5"), ("paper-pgd-2-5",)}
    assert one["curves"] == apart["curves"] and one["table"] == apart["table"]
    assert one["setup"]["curve_one_trajectory"] and "curve_one_trajectory" not in apart["setup"]


# -- experiments per scale, and the report with two scales --------------------------------

def _fake(plan, run, seed, ev):
    """evaluate_run's stand-in: robust accuracy falls with the clean portion,
    more at the "medium" scale, and rises with depth."""
    plan.train_config(run, seed)
    drop = 0.3 if plan.config["scale"] == "medium" else 0.1
    mixed = 0.1 if run.norm == "mixbn" and ev.route != "clean" else run.clean_portion
    robust = 0.5 - drop * mixed + 0.001 * (run.depth or plan.base_depth) + 0.002 * seed
    out = {"clean": (0.9 if run.standard else 0.8) + 0.002 * seed, "n": ev.n or 64}
    out.update({a: robust - 0.0001 * int(a.rsplit("-", 1)[1]) for a in ev.attacks})
    for a in ev.attacks:  # the step counts a trajectory was read at
        for st in attacks.make(a, plan.epsilon).stage_names():
            out[stage_key(a, st)] = robust - 0.0001 * int(st.rsplit("-", 1)[1])
    return out


def _medium_like():
    """The tiny scale dressed as a second scale with the medium scale's switches."""
    c = _config("tiny")
    medium = _config("medium")
    c.update({k: medium[k] for k in ("experiments", "experiment_seeds", "mixbn_ablations",
                                     "folder")}, scale="medium")
    c["experiments"] = ["clean_portion", "mixbn", "depth"]
    return c


def test_depth_runs_one_seed_where_the_scale_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce.plan, "evaluate_run", _fake)
    plan = _plan(tmp_path, _medium_like())
    d = reproduce.run_experiment(plan, "depth")
    assert d["setup"]["seeds"] == [0] and plan.seeds == [0, 1]
    assert all(f["verdict"].endswith("(1 seed: no spread)") for f in d["findings"])
    assert d["rows"][0]["adv_robust"]["values"] == [pytest.approx(50.75)]  # depth 8, pgd-5
    m = reproduce.run_experiment(plan, "mixbn")
    assert m["setup"]["seeds"] == [0, 1] and len(m["findings"]) == 2  # no ablations
    assert not any("separate" in k for k in m["rows"])
    assert (tmp_path / "medium" / "sample" / "mixbn" / "results.json").exists()


def test_report_shows_both_scales_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce.plan, "evaluate_run", _fake)
    tiny = _plan(tmp_path, seeds=[0, 1])
    for name in ("clean_portion", "attack_strength", "mixbn", "depth"):
        reproduce.run_experiment(tiny, name)
    medium = _medium_like()
    datasets = {"sample": {"label": "The Sample"}}
    out = tmp_path / "R.md"
    reproduce.write_report(str(tmp_path), str(out), datasets, scales={"medium": medium})
    text = out.read_text()
    assert "- **sample** (medium scale): Fashion-MNIST sample (shipped" in text
    assert "; depth runs 1 seed; experiments clean_portion, mixbn, depth: not run yet." in text
    side = text.split("## The scales side by side (sample)", 1)[1].split("\n## ", 1)[0]
    assert "| tiny | tiny: verdict | medium | medium: verdict | paper |" in side
    assert "attack_strength" not in side  # not a medium experiment
    assert "1. Tiny scale: +10.0 (" in side and "medium scale: not run yet." in side
    assert "| not measured at this scale | - |" in side  # MixBN's ablation claim
    assert "_scales.png" not in side

    for name in ("clean_portion", "mixbn", "depth"):
        reproduce.run_experiment(_plan(tmp_path, medium), name)
    reproduce.write_report(str(tmp_path), str(out), datasets, scales={"medium": medium})
    text = out.read_text()
    side = text.split("## The scales side by side (sample)", 1)[1].split("\n## ", 1)[0]
    # Robustness drops 10 points at tiny scale, 30 at "medium": the same rule judges both,
    # and only the second is within a factor of two of the paper's relative drop.
    assert "| +10.0 (50.9 ± 0.1 vs 40.9 ± 0.1, pgd-5) | reproduced in direction |" in side
    assert "| +30.0 (50.9 ± 0.1 vs 20.9 ± 0.1, pgd-5) | reproduced in magnitude |" in side
    assert ("1. From tiny to medium scale the effect grows from +10 to +30 points "
            "(the paper: +18.3); the verdict goes from *reproduced in direction* to "
            "*reproduced in magnitude*.") in side
    assert "3. From tiny to medium scale the effect stays at -10 points (the paper: +0.4)" in side
    assert ("6. From tiny to medium scale the effect stays at +0.6 points (the paper: +3.8); "
            "the verdict goes from *reproduced in direction* to *reproduced in direction "
            "(1 seed: no spread)*.") in side
    for plot in ("clean_portion", "mixbn", "depth"):
        png = tmp_path / "medium" / "sample" / plot / f"{plot}_scales.png"
        assert png.exists() and f"(medium/sample/{plot}/{plot}_scales.png)" in side
    assert "## depth (sample, medium scale)" in text and "## depth (sample)" in text


def test_committed_report_is_what_report_regenerates(tmp_path):
    """REPRODUCTION.md is `advscale reproduce report` of the committed results."""
    shutil.copytree(ROOT / "results" / "reproduce", tmp_path / "results" / "reproduce")
    config = _config("small")
    scales = {s: _config(s) for s in config["compared_scales"]}
    reproduce.write_report(str(tmp_path / "results" / "reproduce"),
                           str(tmp_path / "REPRODUCTION.md"), config["datasets"], scales)
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert text == (ROOT / "REPRODUCTION.md").read_text()
    # Each scale's claim says what it compares where the scales differ.
    assert "[depth 56 minus depth 20]" in text
