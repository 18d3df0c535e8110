"""tf_advscale.cpu_kernels: importing the package asks TensorFlow for its
oneDNN CPU kernels where it would leave them off, and only there."""

import platform
import subprocess
import sys

import pytest

from helpers.cli_process import ROOT, checkout_env
from tf_advscale import cpu_kernels


@pytest.mark.parametrize("environ, modules, machine, sets", [
    ({}, {}, "x86_64", True),
    ({}, {}, "AMD64", True),
    ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}, "x86_64", False),  # the user's choice
    ({"TF_ENABLE_ONEDNN_OPTS": "1"}, {}, "x86_64", False),
    ({}, {"tensorflow": object()}, "x86_64", False),  # too late: TensorFlow read it
    ({}, {}, "aarch64", False),
], ids=["x86_64", "windows", "user_off", "user_on", "tf_imported", "arm"])
def test_prefer_onednn_sets_the_variable_only_where_it_takes_effect_unchosen(
        environ, modules, machine, sets):
    before = dict(environ)
    assert cpu_kernels.prefer_onednn(environ, modules, machine) is sets
    assert environ == (dict(before, TF_ENABLE_ONEDNN_OPTS="1") if sets else before)


def _onednn_after_import(**env):
    environ = {k: v for k, v in checkout_env(**env).items()
               if k != cpu_kernels.ENV or k in env}
    code = ("import tf_advscale, keras; from tf_advscale import cpu_kernels, distribute; "
            "print(cpu_kernels.onednn_enabled(), distribute.describe_cpu().endswith("
            "'oneDNN ' + ('on' if cpu_kernels.onednn_enabled() else 'off')))")
    out = subprocess.run([sys.executable, "-c", code], env=environ, cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout.split()[-2:]


@pytest.mark.skipif(platform.machine().lower() not in cpu_kernels.X86_64,
                    reason="TF_ENABLE_ONEDNN_OPTS is left alone off x86-64")
def test_importing_the_package_first_turns_onednn_on_unless_the_user_said_0():
    assert _onednn_after_import() == ["True", "True"]
    assert _onednn_after_import(TF_ENABLE_ONEDNN_OPTS="0") == ["False", "True"]


def test_every_benchmark_imports_the_package_before_tensorflow():
    """A benchmark measures the package as a user runs it: with the oneDNN
    setting ``import tf_advscale`` makes, so no module-level import of
    TensorFlow or Keras may come first (imports inside functions, as in a
    benchmark's child process, are not checked here)."""
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
    for path in sorted(root.glob("*.py")):
        order = []
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                order += [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                order.append(node.module.split(".")[0])
        first = [m for m in order if m in ("tf_advscale", "tensorflow", "keras")][:1]
        assert first in ([], ["tf_advscale"]), (path.name, first)
