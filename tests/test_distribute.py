"""tf.distribute: one mirrored step equals one device; model.fit across two workers."""

import json
import os
import pathlib
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


def test_fit_under_multi_worker_mirrored_strategy_on_two_workers(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    try:
        for i in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            log = open(tmp_path / f"worker{i}.log", "w")
            procs.append(subprocess.Popen(
                [sys.executable, str(HELPERS / "multiworker_fit.py"), str(tmp_path)],
                env=checkout_env(TF_CONFIG=json.dumps(config)), stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True))
        for i, p in enumerate(procs):
            code = p.wait(timeout=300)
            assert code == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]
    finally:
        for p in procs:  # never leave a worker behind
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
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
