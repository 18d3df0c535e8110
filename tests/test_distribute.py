"""tf.distribute: one mirrored step equals one device; model.fit across two workers."""

import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from tf_advscale import distribute

from helpers.cli_process import checkout_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"


@pytest.mark.slow
def test_mirrored_step_equals_the_single_device_step():
    # A fresh process: TensorFlow's collectives do not survive a second
    # MirroredStrategy in one process (the MixBN layer tests create one).
    r = subprocess.run([sys.executable, str(HELPERS / "mirrored_step.py")],
                       env=checkout_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for case in ("bn", "mixbn"):  # one BN; MixBN with its clean/adversarial split
        assert out[case]["replicas"] == 2
        assert out[case]["max_update"] > 1e-2, out  # the step moved the weights
        assert out[case]["max_difference"] < 1e-4, out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_workers(script, arg, logs, *more):
    """Runs ``script arg [more...]`` as the two workers of a local cluster;
    returns their logs."""
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs, paths = [], [logs / f"{script.stem}{i}.log" for i in range(2)]
    try:
        for i in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            log = open(paths[i], "w")
            procs.append(subprocess.Popen(
                [sys.executable, str(script), str(arg), *map(str, more)],
                env=checkout_env(TF_CONFIG=json.dumps(config)), stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True))
        for i, p in enumerate(procs):
            code = p.wait(timeout=300)
            assert code == 0, paths[i].read_text()[-3000:]
    finally:
        for p in procs:  # never leave a worker behind
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [p.read_text() for p in paths]


@pytest.mark.slow
def test_fit_under_multi_worker_mirrored_strategy_on_two_workers(tmp_path):
    _two_workers(HELPERS / "multiworker_fit.py", tmp_path, tmp_path)
    w0, w1 = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    h0, h1 = (json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2))
    assert h0 == h1 and len(h0["loss"]) == 2 and all(np.isfinite(h0["loss"]))


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="Unknown strategy.*'horovod'"):
        distribute.make_strategy("horovod")


def test_jit_choice():
    import tensorflow as tf
    accelerator = bool(tf.config.list_logical_devices("GPU") or
                       tf.config.list_logical_devices("TPU"))
    assert distribute.resolve_jit("auto") is accelerator
    assert distribute.resolve_jit(True) is True and distribute.resolve_jit(False) is False
    with pytest.raises(ValueError, match="'yes'"):
        distribute.resolve_jit("yes")


def _final_weights(workdir):
    """(trainable, all) weights of a run's final model, as arrays."""
    import keras
    from tf_advscale.training import AdversarialModel  # noqa: F401 (registers the class)
    model = keras.saving.load_model(workdir / "final.keras", compile=False)
    return ([np.array(v) for v in model.trainable_weights],
            [np.array(v) for v in model.weights])


@pytest.mark.slow
def test_multi_worker_run_resumes_every_worker_from_the_same_step(tmp_path):
    """A worker killed between the chief's checkpoint and its own: on restart
    both resume from the newest step they both hold, and end as an
    uninterrupted run does."""
    run = tmp_path / "run"
    _two_workers(HELPERS / "multiworker_run.py", run, tmp_path)
    uninterrupted = [_final_weights(run), _final_weights(run / "worker1")]
    chief, worker = run / "state", run / "worker1" / "state"
    newest = sorted(p.name for p in worker.glob("ckpt-*"))[-1]
    older = sorted(p.name for p in worker.glob("ckpt-*"))[-2]
    assert newest in {p.name for p in chief.glob("ckpt-*")}
    shutil.rmtree(worker / newest)  # the worker died before writing it
    logs = _two_workers(HELPERS / "multiworker_run.py", run, tmp_path)
    step = int(older.split("-")[1])
    epoch, within = divmod(step, json.loads((chief / older / "manifest.json").read_text())
                           ["steps_per_epoch"])
    for log in logs:
        assert f"at epoch {epoch}, step {within} of" in log, log[-2000:]
    assert (chief / f".superseded-{newest}" / "manifest.json").exists()  # kept, not lost
    resumed = [_final_weights(run), _final_weights(run / "worker1")]
    for (_, before), (_, after) in zip(uninterrupted, resumed):
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)
    # Trained weights are the same on both workers. (BN moving statistics are
    # each worker's own, from its share of the batch, unless synchronized.)
    for a, b in zip(resumed[0][0], resumed[1][0]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_multi_worker_run_starts_every_worker_from_init_from(tmp_path):
    """init_from under MultiWorkerMirroredStrategy: the source is read before
    any worker's collectives need it and outside the strategy's scope (read
    inside, or before the strategy exists, it hangs or is refused), and both
    workers start from it and train alike."""
    from tf_advscale.models import resnet
    src = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), family="cifar")
    for v in src.trainable_variables:
        v.assign(v + np.random.default_rng(5).normal(0, 0.05, v.shape).astype("float32"))
    src.save(tmp_path / "src.keras")
    run = tmp_path / "run"
    logs = _two_workers(HELPERS / "multiworker_run.py", run, tmp_path, tmp_path / "src.keras")
    for log, workdir in zip(logs, (run, run / "worker1")):
        assert f"Initial weights from {tmp_path / 'src.keras'}" in (workdir / "run.log").read_text()
        assert json.loads((workdir / "init.json").read_text())["bn_into_mixbn"] is False
    trained = [_final_weights(run)[0], _final_weights(run / "worker1")[0]]
    for a, b in zip(*trained):
        np.testing.assert_array_equal(a, b)


def test_common_step_is_the_newest_step_every_worker_holds():
    import tensorflow as tf
    strategy = tf.distribute.get_strategy()  # one worker: its own newest step
    assert distribute.common_step(strategy, [50, 100]) == 100
    assert distribute.common_step(strategy, []) == 0
    with pytest.raises(RuntimeError, match=r"Replica\(s\) \[0\] could not read"):
        distribute.common_step(strategy, None)
    with pytest.raises(ValueError, match="slots"):
        distribute.common_step(strategy, [1], slots=0)


@pytest.mark.parametrize("rows,expected", [
    ([[200, 100, -1], [100, 0, -1]], 100),     # one worker missed the newest save
    ([[200, 100, -1], [200, 100, -1]], 200),
    ([[-1, -1], [-1, -1]], 0),                 # a fresh start
])
def test_agreed_step(rows, expected):
    assert distribute.agreed_step(rows) == expected


@pytest.mark.parametrize("rows,match", [
    ([[200, -1], [-1, -1]], "none of the same step"),     # a worker lost its state
    ([[300, 200], [100, -1]], "none of the same step"),
    ([[200, 100], [-2, -2]], r"Replica\(s\) \[1\] could not read"),
])
def test_agreed_step_refuses_to_discard_training(rows, match):
    with pytest.raises(RuntimeError, match=match):
        distribute.agreed_step(rows)


def test_benchmarks_record_the_cpu_model(monkeypatch):
    """Two 2-core machines here differed six-fold: a benchmark's machine says which."""
    monkeypatch.setattr(distribute, "cpu_info", lambda path=None: {"model": "AMD EPYC",
                                                                    "flags": frozenset()})
    from tf_advscale import cpu_kernels
    monkeypatch.setattr(cpu_kernels, "onednn_enabled", lambda: True)
    assert distribute.describe_machine() == \
        f"{platform.machine()} {os.cpu_count()} cpus (AMD EPYC, oneDNN on)"
    assert distribute.describe_machine(kernels=False) == \
        f"{platform.machine()} {os.cpu_count()} cpus (AMD EPYC)"
    monkeypatch.setattr(cpu_kernels, "onednn_enabled", lambda: None)
    assert distribute.describe_machine() == \
        f"{platform.machine()} {os.cpu_count()} cpus (AMD EPYC)"
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        if '"machine"' in text:
            assert re.search(r'"machine": distribute\.describe_machine\((kernels=False)?\)',
                             text), path.name
