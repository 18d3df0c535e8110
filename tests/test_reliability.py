"""Reliability: crash and resume, determinism, bad input, safe checkpoints."""

import json
import os
import pathlib
import shutil
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tf_advscale import attacks, checkpoint, config, data, files, zoo
from tf_advscale.models import resnet
from tf_advscale.training import AdversarialModel

from helpers.cli_process import advscale, kill_when

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A tiny deterministic run: 1,024 sample images, batch 128 -> 8 steps per
# epoch, 2 epochs, a checkpoint every 2 steps.
RUN = ["--set", "optimizer.epochs=2", "--set", "data.train_subset=1024",
       "--set", "checkpoint.every_steps=2", "--set", "deterministic=True",
       "--set", "eval.val_subset=200", "--set", "eval.test_subset=200"]


def _train(workdir, wait=True):
    return advscale(workdir, ["train", "--workdir", str(workdir), *RUN], wait=wait, timeout=600)


def _final_state(workdir):
    ckpts = checkpoint.TrainingState(workdir / "state", 8).checkpoints()
    with np.load(os.path.join(ckpts[0], "variables.npz"), allow_pickle=False) as f:
        return os.path.basename(ckpts[0]), {k: f[k] for k in f.files}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _train(straight)

    proc = _train(killed, wait=False)
    # Kill as soon as the step-4 checkpoint (mid-epoch 0 of 8 steps) exists.
    kill_when(proc, lambda: (killed / "state" / "ckpt-000000004").is_dir(),
              "the step-4 checkpoint")
    assert not (killed / "metrics.json").exists()

    _train(killed)
    log = pathlib.Path(f"{killed}.log").read_text()
    resumed = [line for line in log.splitlines() if line.startswith("Resuming")]
    assert resumed and "epoch 0, step" in resumed[0], resumed  # resumed inside epoch 0

    name_a, state_a = _final_state(straight)
    name_b, state_b = _final_state(killed)
    assert name_a == name_b == "ckpt-000000016"
    assert state_a.keys() == state_b.keys()
    for key in state_a:  # weights, BN statistics, optimizer slots, step counter
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    metrics_a = json.loads((straight / "metrics.json").read_text())
    metrics_b = json.loads((killed / "metrics.json").read_text())
    assert metrics_a["results"] == metrics_b["results"]
    assert (straight / "history.csv").read_text() == (killed / "history.csv").read_text()
    for name in ("final.keras", "best.keras"):
        wa = keras.saving.load_model(straight / name).get_weights()
        wb = keras.saving.load_model(killed / name).get_weights()
        for a, b in zip(wa, wb):
            np.testing.assert_array_equal(a, b)

    # Rerunning a finished run trains nothing more and reports the same.
    _train(killed)
    assert json.loads((killed / "metrics.json").read_text())["results"] == metrics_a["results"]
    assert _final_state(killed)[0] == "ckpt-000000016"


# -- checkpoints: atomic, verified, never unpickled ---------------------------

def _tiny_model(width=4):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(width),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _fit_steps(model, state, steps):
    x = np.random.default_rng(0).normal(size=(4 * steps, 6)).astype("float32")
    y = np.arange(4 * steps) % 3
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[state])


def test_checkpoint_round_trip_and_keep(tmp_path):
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2, keep=2)
    _fit_steps(model, state, 6)
    assert [os.path.basename(p) for p in state.checkpoints()] == ["ckpt-000000006",
                                                                    "ckpt-000000004"]
    other = _tiny_model()
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    assert fresh.load() == (1, 0)
    assert fresh.restore_into(other)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(other.optimizer.iterations.numpy()) == 6


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    model = _tiny_model()
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2, keep=2)
    _fit_steps(model, state, 6)
    newest = tmp_path / "ckpt-000000006" / "variables.npz"
    blob = bytearray(newest.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte
    newest.write_bytes(bytes(blob))
    # A crash while writing: a half-written temporary directory is ignored.
    (tmp_path / ".ckpt-000000008.tmp123").mkdir()
    (tmp_path / ".ckpt-000000008.tmp123" / "variables.npz").write_bytes(b"PK\x03")
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    with pytest.warns(UserWarning, match=r"ckpt-000000006.*sha256"):
        assert fresh.load() == (0, 4)


def test_agreed_resume_step_moves_newer_checkpoints_aside(tmp_path):
    model = _tiny_model()
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2, keep=2)
    _fit_steps(model, state, 6)  # ckpt 4 and 6
    seen = []
    agree = lambda steps: seen.append(steps) or 4  # another worker only has 4  # noqa: E731
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    with pytest.warns(UserWarning, match="global step 4.*ckpt-000000006 aside"):
        assert fresh.load(agree=agree) == (0, 4)
    assert seen == [[6, 4]]  # every valid checkpoint was offered
    assert fresh.restore_into(_tiny_model())
    assert (tmp_path / ".superseded-ckpt-000000006" / "manifest.json").exists()  # not lost
    assert [os.path.basename(p) for p in fresh.checkpoints()] == ["ckpt-000000004"]
    # A step this worker does not hold: a clear error, nothing moved.
    with pytest.raises(checkpoint.CheckpointError, match="agreed global step 2"):
        checkpoint.TrainingState(tmp_path, steps_per_epoch=6).load(agree=lambda steps: 2)
    assert [os.path.basename(p) for p in fresh.checkpoints()] == ["ckpt-000000004"]


def test_a_resumed_run_records_the_commit_of_each_segment(tmp_path, monkeypatch):
    """The commit is read when a segment starts (the code it trains with), and
    a resumed run lists its segments' commits in order, each once."""
    from tf_advscale import runner

    monkeypatch.setattr(runner, "source_commit", lambda: "aaa")
    first = runner._Commits()
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2,
                                     tracked={"commits": first})
    monkeypatch.setattr(runner, "source_commit", lambda: "bbb")  # changed while it trains
    _fit_steps(_tiny_model(), state, 2)
    assert first.describe() == "aaa"
    for head, expected in (("bbb", "aaa then bbb"), ("aaa", "aaa"), (None, "aaa")):
        monkeypatch.setattr(runner, "source_commit", lambda: head)
        resumed = runner._Commits()
        again = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, tracked={"commits": resumed})
        assert again.load() == (0, 2) and again.restore_into(_tiny_model())
        assert resumed.describe() == expected
    monkeypatch.setattr(runner, "source_commit", lambda: None)  # outside git (a pip install)
    assert runner._Commits().describe() is None


def test_a_resumed_run_records_the_cpu_of_each_segment(tmp_path, monkeypatch):
    """Training time sums segments on machines whose speeds differ several-
    fold: the run lists the CPU model of each segment that trains, in order,
    a repeat once; a checkpoint from before the record says so."""
    from tf_advscale import cpu_kernels, distribute, runner

    def cpu(model, onednn=None):
        monkeypatch.setattr(distribute, "cpu_info", lambda path=None: {"model": model,
                                                                        "flags": frozenset()})
        monkeypatch.setattr(cpu_kernels, "onednn_enabled", lambda: onednn)

    cpu("Intel Xeon")
    first = runner._Machines()
    assert first.describe() is None  # nothing trained yet
    first.start()
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2,
                                     tracked={"machines": first})
    _fit_steps(_tiny_model(), state, 2)
    assert first.describe() == "Intel Xeon"
    for here, expected in (("AMD EPYC", "Intel Xeon then AMD EPYC"), ("Intel Xeon", "Intel Xeon")):
        cpu(here)
        resumed = runner._Machines()
        again = checkpoint.TrainingState(tmp_path, steps_per_epoch=6,
                                         tracked={"machines": resumed})
        assert again.load() == (0, 2) and again.restore_into(_tiny_model())
        resumed.resumed_without_record()  # it has one: no change
        assert resumed.describe() == "Intel Xeon"  # restored; this machine has not trained
        resumed.start()
        assert resumed.describe() == expected
    _fit_steps(_tiny_model(), checkpoint.TrainingState(
        tmp_path / "old", steps_per_epoch=6, every_steps=2, tracked={"commits": runner._Commits()}),
        2)
    cpu("AMD EPYC")
    resumed = runner._Machines()
    again = checkpoint.TrainingState(tmp_path / "old", steps_per_epoch=6,
                                     tracked={"machines": resumed})
    assert again.load() == (0, 2) and again.restore_into(_tiny_model())
    resumed.resumed_without_record()
    resumed.start()
    assert resumed.describe() == "not recorded then AMD EPYC"
    cpu("AMD EPYC", onednn=True)  # the same CPU with other kernels is another segment
    resumed.start()
    assert resumed.describe() == "not recorded then AMD EPYC then AMD EPYC, oneDNN on"


def test_the_commit_is_the_packages_own_never_an_enclosing_repositorys(tmp_path):
    """A pip install inside another git repository (a virtual environment in
    a user's project) records no commit rather than the project's."""
    import shutil
    import subprocess
    from tf_advscale import runner
    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def repo(path):
        path.mkdir(parents=True)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
        subprocess.run(git + ["init", "-q"], check=True)
        subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "x"], check=True)
        return subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()

    head = repo(tmp_path / "project")
    installed = tmp_path / "project" / ".venv" / "site-packages" / "tf_advscale"
    installed.mkdir(parents=True)
    assert runner.source_commit(str(installed)) is None
    checkout = tmp_path / "project" / "tf_advscale"  # the package at the repository root
    checkout.mkdir()
    assert runner.source_commit(str(checkout)) == head
    assert runner.source_commit(str(tmp_path)) is None  # outside any repository


def test_package_tree_follows_the_package_source_only(tmp_path):
    """What saved evaluation batches record as their code: the package
    folder's git tree, unchanged by commits of results elsewhere, changed by a
    commit or an uncommitted edit of the package; None outside a checkout."""
    import shutil
    import subprocess
    from tf_advscale.files import package_tree
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "project"
    pkg = root / "tf_advscale"
    pkg.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]

    def commit(path, text):
        path.write_text(text)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)

    subprocess.run(git + ["init", "-q"], check=True)
    commit(pkg / "a.py", "A = 1\n")
    first = package_tree(str(pkg))
    assert first.startswith("tree ") and "edits" not in first
    commit(root / "results.json", "{}")
    assert package_tree(str(pkg)) == first  # a results commit is not a code change
    (pkg / "a.py").write_text("A = 2\n")
    edited = package_tree(str(pkg))
    assert edited.startswith(first + " + edits ")
    (pkg / "b.py").write_text("")  # an untracked module too
    assert package_tree(str(pkg)) not in (first, edited)
    commit(pkg / "a.py", "A = 2\n")
    assert package_tree(str(pkg)).startswith("tree ") and package_tree(str(pkg)) != first
    assert package_tree(str(tmp_path)) is None


def test_an_agreed_older_resume_keeps_the_time_of_the_set_aside_segment(tmp_path):
    """The training clock resumes from the older checkpoint's state, plus the
    time of the newer segment it discards: that time was spent."""
    from tf_advscale.runner import _Clock

    class Ticking:  # each save reads 10 s more
        def __init__(self):
            self.seconds = 0.0

        def get_state(self):
            self.seconds += 10.0
            return {"seconds": self.seconds}

    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2, keep=3,
                                     tracked={"clock": Ticking()})
    _fit_steps(_tiny_model(), state, 6)  # ckpt 2, 4, 6 at 10, 20, 30 s
    clock = _Clock()
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, tracked={"clock": clock})
    with pytest.warns(UserWarning, match="aside"):
        assert fresh.load(agree=lambda steps: 2) == (0, 2)
    assert fresh.restore_into(_tiny_model())
    assert clock.before == 30.0  # not ckpt 2's 10 s
    clock = _Clock()  # agreed on no checkpoint at all: a fresh start, the time still counted
    scratch = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, tracked={"clock": clock})
    with pytest.warns(UserWarning, match="aside"):
        assert scratch.load(agree=lambda steps: 0) == (0, 0)
    assert clock.before == 10.0  # ckpt 2's, set aside in turn
    _fit_steps(_tiny_model(), checkpoint.TrainingState(  # ckpt 2 again, for the plain resume
        tmp_path, steps_per_epoch=6, every_steps=2, tracked={"clock": Ticking()}), 2)
    clock = _Clock()  # a plain resume reads the checkpoint's own time
    plain = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, tracked={"clock": clock})
    assert plain.load() == (0, 2) and plain.restore_into(_tiny_model())
    saved = json.loads((tmp_path / "ckpt-000000002" / "manifest.json").read_text())
    assert clock.before == saved["tracked"]["clock"]["seconds"]


def test_checkpoints_moved_aside_are_pruned_to_the_newest_keep(tmp_path):
    """Repeated agreed resumes (or corrupt files) cannot fill the disk: of
    the checkpoints moved aside, the newest ``keep`` of each kind stay."""
    model = _tiny_model()
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2, keep=2)
    _fit_steps(model, state, 6)  # ckpt 4 and 6
    for step in (8, 10, 12):  # three interrupted segments, each superseded
        shutil.copytree(tmp_path / "ckpt-000000006", tmp_path / f"ckpt-{step:09d}")
        manifest = json.loads((tmp_path / f"ckpt-{step:09d}" / "manifest.json").read_text())
        manifest.update(global_step=step, epoch=step // 6, step=step % 6)
        (tmp_path / f"ckpt-{step:09d}" / "manifest.json").write_text(json.dumps(manifest))
        with pytest.warns(UserWarning, match="aside"):
            checkpoint.TrainingState(tmp_path, steps_per_epoch=6, keep=2).load(
                agree=lambda steps: 6)
    aside = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".superseded"))
    assert aside == [".superseded-ckpt-000000010", ".superseded-ckpt-000000012"]
    assert [p.name for p in sorted(tmp_path.glob("ckpt-*"))] == [
        "ckpt-000000004", "ckpt-000000006"]


def test_a_worker_that_cannot_read_its_checkpoints_tells_the_others(tmp_path):
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2)
    _fit_steps(_tiny_model(), state, 2)
    seen = []
    with pytest.raises(checkpoint.CheckpointMismatch):
        checkpoint.TrainingState(tmp_path, steps_per_epoch=5).load(agree=seen.append)
    assert seen == [None]  # the collective was joined with "failed", then the error raised


def test_checkpoint_of_another_data_layout_is_refused_not_discarded(tmp_path):
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2)
    _fit_steps(_tiny_model(), state, 2)
    with pytest.raises(checkpoint.CheckpointError, match="6 steps per epoch; this run has 5"):
        checkpoint.TrainingState(tmp_path, steps_per_epoch=5).load()
    assert (tmp_path / "ckpt-000000002").is_dir()  # still there


def test_positions_count_steps_even_when_the_optimizer_skips_some(tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])  # float16
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1), initial_scale=2.0**60),  # overflows: steps skipped
            loss="sparse_categorical_crossentropy")
        state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2)
        _fit_steps(model, state, 6)
        assert int(model.optimizer.iterations.numpy()) < 6
    finally:
        keras.config.set_dtype_policy(previous)
    assert checkpoint.TrainingState(tmp_path, steps_per_epoch=6).load() == (1, 0)


def test_an_early_stop_is_remembered(tmp_path):
    class StopAtThree(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                self.model.stop_training = True

    x = np.random.default_rng(0).normal(size=(24, 6)).astype("float32")
    y = np.arange(24) % 3

    def make(e, s):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    model = _tiny_model()
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    histories = checkpoint.resumable_fit(model, make, 3, 6, state, callbacks=[StopAtThree()],
                                         verbose=0)
    assert len(histories) == 1 and len(histories[0].history["loss"]) == 1
    again = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    assert checkpoint.resumable_fit(_tiny_model(), make, 3, 6, again, verbose=0) == []
    assert again.position[:2] == (0, 3) and again.stopped


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2)
    _fit_steps(_tiny_model(width=4), state, 2)
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    fresh.load()
    with pytest.raises(checkpoint.CheckpointError, match=r"shape \[6, 4\].*shape \[6, 5\]"):
        fresh.restore_into(_tiny_model(width=5))


def _named_model(*names):
    """Dense layers of equal shapes, named and created in the order given."""
    model = keras.Sequential([keras.Input((6,))]
                             + [keras.layers.Dense(6, name=n) for n in names]
                             + [keras.layers.Dense(3, name="out")])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _state_by_path(model):
    """Model and optimizer values by (group, path without Keras's ``_N``)."""
    return {checkpoint._key(g, v.path): v.numpy()
            for g, v in checkpoint._state_variables(model) if g != "metrics"}


def test_checkpoint_variables_are_matched_by_path_not_position(tmp_path):
    keras.utils.set_random_seed(0)
    model = _named_model("p", "q")
    _fit_steps(model, checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2), 2)
    other = _named_model("q", "p")  # same paths and shapes, created in the other order
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    fresh.load()
    assert fresh.restore_into(other)
    saved, restored = _state_by_path(model), _state_by_path(other)
    assert saved.keys() == restored.keys()
    assert ("optimizer", "sgd/sequential_p_kernel_momentum") in saved  # slots too
    for key in saved:
        np.testing.assert_array_equal(saved[key], restored[key], err_msg=str(key))


def test_metric_accumulators_are_restored_only_when_both_sides_have_them(tmp_path):
    keras.utils.set_random_seed(0)
    model = _named_model("p", "q")
    _fit_steps(model, checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2), 2)
    saved = {checkpoint._key(g, v.path): v.numpy()
             for g, v in checkpoint._state_variables(model) if g == "metrics"}
    assert len(saved) == 4 and all(value != 0 for value in saved.values())
    unbuilt, built = _named_model("p", "q"), _named_model("p", "q")
    built.evaluate(np.zeros((4, 6), "float32"), np.zeros(4), verbose=0)  # builds its metrics
    built.reset_metrics()
    for other, restored in ((unbuilt, False), (built, True)):
        fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
        fresh.load()
        assert fresh.restore_into(other)
        values = {checkpoint._key(g, v.path): v.numpy()
                  for g, v in checkpoint._state_variables(other) if g == "metrics"}
        assert len(values) == (4 if restored else 2)
        for key, value in values.items():
            assert value == (saved[key] if restored else 0), key


class _TwinWeights(keras.layers.Layer):
    """Two weights of the same name, hence the same path."""

    def build(self, input_shape):
        self.a = self.add_weight(shape=(6,), name="w", initializer="random_normal")
        self.b = self.add_weight(shape=(6,), name="w", initializer="random_normal")

    def call(self, x):
        return x * self.a + self.b


def test_checkpoint_variables_of_equal_paths_are_matched_in_order(tmp_path):
    def make():
        model = keras.Sequential([keras.Input((6,)), _TwinWeights(name="twin"),
                                  keras.layers.Dense(3, name="out")])
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss="sparse_categorical_crossentropy")
        return model

    keras.utils.set_random_seed(0)
    model = make()
    twin = model.layers[0]
    assert twin.a.path == twin.b.path and twin.a.path.endswith("/twin/w")
    _fit_steps(model, checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2), 2)
    other = make()
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    fresh.load()
    assert fresh.restore_into(other)
    twins, twins_back = model.layers[0], other.layers[0]
    assert not np.array_equal(twins.a.numpy(), twins.b.numpy())
    np.testing.assert_array_equal(twins.a.numpy(), twins_back.a.numpy())
    np.testing.assert_array_equal(twins.b.numpy(), twins_back.b.numpy())
    for a, b in zip(model.optimizer.variables, other.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("names, match", [
    (("p", "r"), r"model:sequential\w*/q/kernel, .*_q_bias_momentum saved but not in this model; "
                 r"model:sequential\w*/r/kernel, .*_r_bias_momentum in this model but not saved"),
    (("p",), r"model:sequential\w*/q/kernel, .* saved but not in this model; none in this"),
    (("p", "q", "s"), r"none saved but not in this model; model:sequential\w*/s/kernel, "),
])
def test_checkpoint_with_a_renamed_missing_or_extra_variable_is_refused(tmp_path, names, match):
    _fit_steps(_named_model("p", "q"),
               checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2), 2)
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    fresh.load()
    other = _named_model(*names)
    before = [v.numpy() for v in other.variables]
    with pytest.raises(checkpoint.CheckpointError, match=match) as error:
        fresh.restore_into(other)
    assert "\n" not in str(error.value)
    for v, value in zip(other.variables, before):  # nothing was assigned
        np.testing.assert_array_equal(v.numpy(), value)


def test_checkpoint_loading_never_unpickles(tmp_path):
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2)
    _fit_steps(_tiny_model(), state, 2)
    path = tmp_path / "ckpt-000000002"
    manifest = json.loads((path / "manifest.json").read_text())
    with open(path / "variables.npz", "wb") as f:  # an object array: needs pickle
        np.savez(f, **{f"v{i}": np.array([{"x": i}], dtype=object)
                       for i in range(len(manifest["variables"]))})
    manifest["sha256"] = files.sha256(path / "variables.npz")  # even with a valid hash
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="unreadable"):
        assert checkpoint.TrainingState(tmp_path, steps_per_epoch=6).load() == (0, 0)


def test_interrupted_model_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = _tiny_model()
    path = tmp_path / "best.keras"
    files.save_model_atomic(model, path)
    before = path.read_bytes()

    def crash(self, filepath, *args, **kwargs):
        pathlib.Path(filepath).write_bytes(b"PK\x03\x04 half")
        raise OSError("disk full")
    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        files.save_model_atomic(model, path)
    assert path.read_bytes() == before


def test_workdir_of_another_config_is_refused(tmp_path):
    from tf_advscale import runner
    cfg = config.load(None)
    (tmp_path / "state").mkdir()
    runner.write_json(tmp_path / "config.json", cfg)
    other = config.load(None, overrides=["optimizer.epochs=9"])
    with pytest.raises(config.ConfigError, match=r"optimizer.epochs \(6 -> 9\)"):
        runner.check_workdir(str(tmp_path), other)
    runner.check_workdir(str(tmp_path), cfg)  # the same config resumes


# -- determinism ----------------------------------------------------------------

def test_attack_draws_are_a_function_of_the_seed(sample):
    x = sample[0][:16]
    # A fixed draw of the untrained model: with some draws APGD (below)
    # broke none of the 16 images, and returned them all unchanged whatever
    # its seed (an unbroken image is returned clean, as AutoAttack's are).
    keras.utils.set_random_seed(0)
    model = resnet(depth=8, num_classes=10, input_shape=x.shape[1:])
    # Labels the untrained model gets right, so every attack has work to do
    # (APGD returns an already-misclassified image unchanged).
    y = np.argmax(model(x, training=False), -1).astype(np.int32)
    for attack in (attacks.PGD(epsilon=0.1, step_size=0.02, steps=2, restarts=2),
                   attacks.PGD(epsilon=0.1, step_size=0.02, steps=2, targeted=True),
                   attacks.PGD(epsilon=0.5, step_size=0.2, steps=1, norm="l2",
                               random_start=0.5),
                   attacks.APGD(epsilon=0.1, steps=3)):
        a = attack(model, x, y, seed=[3, 7]).numpy()
        b = attack(model, x, y, seed=[3, 7]).numpy()
        c = attack(model, x, y, seed=[3, 8]).numpy()
        assert not np.array_equal(a, x), f"{attack} changed no image: the seed cannot show"
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c), attack


def test_training_step_seeds_follow_the_optimizer_step(sample):
    x, y = sample[0][:32], sample[1][:32]

    def run(seed):
        keras.utils.set_random_seed(1)
        model = AdversarialModel(resnet(depth=8, num_classes=10, input_shape=x.shape[1:]),
                                 attack={"name": "pgd", "epsilon": 0.1, "step_size": 0.05,
                                         "steps": 1}, seed=seed)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        return model.get_weights()

    tf.random.set_seed(123)  # stateful generators elsewhere must not matter
    a = run(5)
    tf.random.set_seed(999)
    b = run(5)
    c = run(6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_resumable_stream_equals_the_uninterrupted_one():
    full, info = data.load("fashion_mnist_sample", "train", batch_size=100, epochs=3, seed=4)
    assert info["steps_per_epoch"] == 20 and full.cardinality().numpy() == 60
    batches = [(x.numpy(), y.numpy()) for x, y in full]
    part, _ = data.load("fashion_mnist_sample", "train", batch_size=100, epochs=3, seed=4,
                        start_epoch=1, start_step=7)
    rest = [(x.numpy(), y.numpy()) for x, y in part]
    assert len(rest) == 33
    for (xa, ya), (xb, yb) in zip(batches[27:], rest):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(batches[0][1], batches[20][1])  # epochs are reshuffled


# -- bad input: every error names the value and what was expected --------------

def _adv_model(norm="bn", **kwargs):
    return AdversarialModel(resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), norm=norm),
                            attack={"name": "pgd", "epsilon": 0.1, "step_size": 0.05,
                                    "steps": 1}, **kwargs)


def _fit(model, x, y, batch_size=8):
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)


def _images(n=8, shape=(28, 28, 1), value=0.5):
    return np.full((n, *shape), value, np.float32)


def _labels(n=8, value=1):
    return np.full((n,), value, np.int32)


def _empty_folder(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    return data.load("x", "train", source="folder", path=str(tmp_path))


def _not_an_image(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "a.jpg").write_text("hello, I am text")
    ds, _ = data.load("x", "train", source="folder", path=str(tmp_path))
    next(iter(ds))


def _corrupt_checkpoint(tmp_path):
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2)
    _fit_steps(_tiny_model(), state, 2)
    (tmp_path / "ckpt-000000002" / "variables.npz").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint.TrainingState(tmp_path, steps_per_epoch=6).load()


def _wrong_architecture_checkpoint(tmp_path):
    state = checkpoint.TrainingState(tmp_path, steps_per_epoch=6, every_steps=2)
    _fit_steps(_tiny_model(width=4), state, 2)
    fresh = checkpoint.TrainingState(tmp_path, steps_per_epoch=6)
    fresh.load()
    fresh.restore_into(_tiny_model(width=7))


BAD_INPUTS = {
    "wrong image shape": (lambda t: _fit(_adv_model(), _images(shape=(32, 32, 3)), _labels()),
                          Exception, r"32, 32, 3"),
    "0-255 uint8 images": (lambda t: _fit(_adv_model(), _images(value=255).astype(np.uint8),
                                          _labels()), Exception, r"divide by 255.*255"),
    "negative pixel values": (lambda t: _fit(_adv_model(), _images(value=-1.0), _labels()),
                              Exception, r"\[0, 1\].*-1"),
    "NaN images": (lambda t: _fit(_adv_model(), _images(value=np.nan), _labels()),
                   Exception, r"NaN or Inf"),
    "Inf images": (lambda t: _fit(_adv_model(), _images(value=np.inf), _labels()),
                   Exception, r"NaN or Inf"),
    "label too large": (lambda t: _fit(_adv_model(), _images(), _labels(value=12)),
                        Exception, r"< 10 classes.*12"),
    "negative label": (lambda t: _fit(_adv_model(), _images(), _labels(value=-3)),
                       Exception, r">= 0.*-3"),
    "empty data set": (_empty_folder, data.DataError, r"train/cat has no images"),
    "empty subset": (lambda t: data.load("fashion_mnist_sample", "train", subset=[]),
                     data.DataError, r"received 0 ids"),
    "subset larger than the data": (lambda t: data.load("fashion_mnist_sample", "test",
                                                        subset=501),
                                    data.DataError, r"subset=501"),
    "file that is not an image": (_not_an_image, tf.errors.InvalidArgumentError,
                                  r"not a JPEG/PNG/GIF/BMP.*a\.jpg"),
    "batch too small to split for MixBN": (
        lambda t: _fit(_adv_model(norm="mixbn", clean_portion=0.2, mixing="mixbn"),
                       _images(n=2), _labels(n=2), batch_size=2),
        Exception, r"batch of 2 images.*clean_portion=0.2"),
    "negative epsilon": (lambda t: attacks.PGD(epsilon=-0.1), ValueError, r"epsilon=-0.1"),
    "epsilon in 0-255 units": (lambda t: attacks.PGD(epsilon=8), ValueError,
                               r"8/255.*epsilon=8"),
    "NaN step size": (lambda t: attacks.PGD(step_size=float("nan")), ValueError,
                      r"step_size=nan"),
    "step size in 0-255 units": (lambda t: attacks.PGD(epsilon=8 / 255, step_size=2.0),
                                 ValueError, r"step_size=2.0"),
    "unknown config key": (lambda t: config.load(None, overrides=["optimizer.epochz=1"]),
                           config.ConfigError, r"optimizer.epochz.*optimizer.epochs"),
    "config value of the wrong type": (lambda t: config.merge({"optimizer": 3}),
                                       config.ConfigError, r"optimizer.*Received: 3"),
    "unknown model depth": (lambda t: resnet(depth=7), ValueError, r"depth=7"),
    "corrupted checkpoint": (_corrupt_checkpoint, UserWarning,
                             r"variables.npz: sha256 [0-9a-f]{64} does not match"),
    "wrong-architecture checkpoint": (_wrong_architecture_checkpoint, checkpoint.CheckpointError,
                                      r"shape \[6, 4\].*shape \[6, 7\]"),
    "unknown zoo name": (lambda t: zoo.load("resnet20.no_such_model"), zoo.ZooError,
                         r"Unknown zoo model 'resnet20.no_such_model'"),
    "zoo name that is a path": (lambda t: zoo.load("../../etc/passwd"), zoo.ZooError,
                                r"Invalid zoo name '../../etc/passwd'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_naming_the_value(case, tmp_path):
    fn, error, match = BAD_INPUTS[case]
    with pytest.raises(error, match=match):
        fn(tmp_path)


# -- fuzzing the loaders --------------------------------------------------------

def _fuzz(examples):
    """Hypothesis settings for these tests (tmp_path is reused across examples)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@_fuzz(150)
@given(blob=st.binary(max_size=64))
def test_fuzz_idx_reader_raises_only_data_errors(blob, tmp_path):
    path = tmp_path / "f-idx3-ubyte"
    path.write_bytes(blob)
    try:
        out = data.read_idx(path)
    except data.DataError as e:
        assert str(path) in str(e)
    else:
        assert out.dtype == np.uint8


@_fuzz(100)
@given(dims=st.lists(st.integers(0, 5), min_size=1, max_size=3), extra=st.integers(-3, 3),
       gz=st.booleans())
def test_fuzz_idx_headers_that_lie_about_their_size(dims, extra, gz, tmp_path):
    import gzip
    import struct
    body = bytes(max(0, int(np.prod(dims)) + extra))
    blob = bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + body
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    if len(body) == int(np.prod(dims)):
        assert data.read_idx(path).shape == tuple(dims)
    else:
        with pytest.raises(data.DataError, match="IDX header says shape"):
            data.read_idx(path)


@_fuzz(60)
@given(text=st.text(max_size=80))
def test_fuzz_config_files_raise_only_config_errors(text, tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(text)
    try:
        config.load(str(path))
    except config.ConfigError:
        pass


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_fuzz_overrides_raise_only_config_errors(text):
    try:
        config.load(None, overrides=[text])
    except config.ConfigError:
        pass


MAGIC_NUMBERS = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


@_fuzz(40)
@given(magic=st.sampled_from((b"",) + MAGIC_NUMBERS),
       blob=st.binary(max_size=200))
def test_fuzz_folder_images_decode_or_fail_cleanly(magic, blob, tmp_path):
    folder = tmp_path / "fuzz" / "train" / "c"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.jpg").write_bytes(magic + blob)
    ds, _ = data.load("x", "train", source="folder", path=str(tmp_path / "fuzz"),
                      shuffle=False, augment=False, cache=False)
    try:
        for x, _ in ds:
            assert 0.0 <= float(tf.reduce_min(x)) <= float(tf.reduce_max(x)) <= 1.0
    except tf.errors.InvalidArgumentError as e:
        if not (magic + blob).startswith(MAGIC_NUMBERS):
            assert "x.jpg" in str(e)  # refused by its first bytes, naming the file
