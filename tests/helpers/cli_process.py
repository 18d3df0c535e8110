"""Runs ``python -m tf_advscale.cli ARGS`` from the repository root in its own
process group (so a test can SIGKILL it and its children), logging to
``WORKDIR.log``."""

import os
import pathlib
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def checkout_env(**extra):
    """The environment for a child Python that must import this checkout
    (not an installed copy) of tf_advscale."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            **extra}


def advscale(workdir, args, wait=True, timeout=900):
    env = checkout_env()
    cmd = [sys.executable, "-m", "tf_advscale.cli", *args]
    log = open(f"{workdir}.log", "a")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    if wait:
        try:
            assert proc.wait(timeout=timeout) == 0, \
                pathlib.Path(f"{workdir}.log").read_text()[-3000:]
        finally:
            log.close()
    return proc


def kill_when(proc, ready, what, timeout=600):
    """SIGKILLs ``proc``'s process group as soon as ``ready()`` is true."""
    try:
        deadline = time.time() + timeout
        while not ready():
            assert proc.poll() is None, f"the process ended before {what}"
            assert time.time() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
