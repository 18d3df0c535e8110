"""TensorFlow's oneDNN CPU kernels, asked for before TensorFlow is imported.

TensorFlow turns its oneDNN optimisations on by itself only on x86 CPUs
with AVX-512-class features (AVX512_VNNI, AVX512_BF16, AMX); on the others
they stay off unless ``TF_ENABLE_ONEDNN_OPTS=1`` is in the environment when
TensorFlow is imported. On this project's 2-core AMD EPYC (AVX2, no
AVX-512) they make the N-FGSM training step markedly faster, the
PreActResNet-18's most (``benchmarks/onednn.py``,
``results/bench_onednn_amd_epyc.json``). So importing ``tf_advscale`` sets
``TF_ENABLE_ONEDNN_OPTS=1`` first, unless the environment already names a
value (the user's choice, ``0`` included), TensorFlow is already imported
(too late: it read the variable then), or the machine is not x86-64.
oneDNN's results differ from the default kernels' by float rounding, so a
run records whether it was on (``describe``) with each training segment.

This module imports nothing from TensorFlow at its top, so that the
package can call ``prefer_onednn`` before TensorFlow loads.
"""

import os
import platform
import sys

ENV = "TF_ENABLE_ONEDNN_OPTS"
X86_64 = ("x86_64", "amd64")


def prefer_onednn(environ=None, modules=None, machine=None):
    """Sets ``environ[ENV] = "1"`` (default ``os.environ``) where that can
    still take effect and nobody chose otherwise; returns whether it set it."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    machine = platform.machine() if machine is None else machine
    if ENV in environ or "tensorflow" in modules or machine.lower() not in X86_64:
        return False
    environ[ENV] = "1"
    return True


def onednn_enabled():
    """Whether this process's TensorFlow uses its oneDNN kernels (None where
    TensorFlow does not say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def describe():
    """``"oneDNN on"``, ``"oneDNN off"``, or None where TensorFlow does not say."""
    on = onednn_enabled()
    return None if on is None else f"oneDNN {'on' if on else 'off'}"
