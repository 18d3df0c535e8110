"""recipe.build: the one place a config becomes a compiled AdversarialModel."""

import inspect
import pathlib

import keras
import pytest

from tf_advscale import config as config_lib
from tf_advscale import recipe, runner
from tf_advscale.config import ConfigError
from tf_advscale.training import AdversarialModel

ROOT = pathlib.Path(__file__).resolve().parents[1]
INFO = {"num_classes": 10, "shape": (28, 28, 1), "steps_per_epoch": 10}


def test_every_trainer_key_is_an_argument_or_handled_by_name():
    """A trainer key that is neither reaches no one: the tuner once dropped
    label_smoothing and attack_bn this way."""
    args = set(inspect.signature(AdversarialModel.__init__).parameters)
    keys = set(config_lib.DEFAULTS["trainer"])
    assert keys - set(recipe.NOT_TRAINER_ARGS) <= args
    assert set(recipe.NOT_TRAINER_ARGS) <= keys
    assert not set(recipe.NOT_TRAINER_ARGS) & args


def test_model_keys_are_resnet_arguments():
    c = config_lib.merge({"model": {"depth": 8, "width": 0.5, "activation": "silu",
                                    "mean": 0.25, "std": 0.75}})
    model = recipe.build(c, INFO)
    backbone = model.model.backbone.get_config()
    assert (backbone["width"], backbone["activation"]) == (0.5, "silu")
    std = model.model.backbone.get_layer("standardize").get_config()
    assert (std["mean"], std["std"]) == (0.25, 0.75)


def test_a_trainer_key_no_one_consumes_is_refused():
    c = config_lib.merge({})
    c["trainer"]["label_smothing"] = 0.1  # as if DEFAULTS had gained a key no one routes
    with pytest.raises(ConfigError, match=r"\['label_smothing'\]"):
        recipe.build(c, INFO)
    with pytest.raises(ValueError, match=r"\['dpeth'\]"):
        recipe.build(config_lib.merge({}), INFO, dpeth=14)


def test_mixed_float16_builds_float16_layers_and_a_loss_scale_and_restores_the_policy():
    c = config_lib.merge({"model": {"depth": 8}, "trainer": {"precision": "mixed_float16"}})
    model = recipe.build(c, INFO)
    assert model.model.backbone.get_layer("stem_conv").compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ConfigError, match="'float16'"):
        recipe.build(config_lib.merge({"trainer": {"precision": "float16"}}), INFO)


def test_runner_trains_the_model_recipe_builds(tmp_path, monkeypatch):
    seen = {}

    class Built(Exception):
        pass

    def build(config, info, **model):
        seen.update(config=config, info=info, model=model)
        raise Built

    monkeypatch.setattr(recipe, "build", build)
    c = config_lib.merge({"data": {"train_subset": 64, "batch_size": 32},
                          "eval": {"val_subset": 32, "test_subset": 32}})
    with pytest.raises(Built):
        runner.run(c, str(tmp_path))
    assert seen["config"] == c and seen["model"] == {}
    assert (seen["info"]["num_classes"], seen["info"]["steps_per_epoch"]) == (10, 2)


def test_the_overfitting_monitor_watches_the_first_validation_batch():
    import tensorflow as tf

    from tf_advscale.callbacks import CatastrophicOverfittingMonitor
    x = tf.random.uniform((12, 28, 28, 1))
    y = tf.range(12) % 10
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    off = config_lib.merge({})
    on = config_lib.merge({"trainer": {"catastrophic_overfitting": True}})
    assert recipe.overfitting_monitor(off, val) is None
    monitor = recipe.overfitting_monitor(on, val)
    assert isinstance(monitor, CatastrophicOverfittingMonitor)
    assert (monitor.images.numpy() == x[:5].numpy()).all()
    with pytest.raises(ValueError, match="Received: tuple"):
        recipe.overfitting_monitor(on, (x, y))


CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 fma {extra}

processor\t: 1
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 fma {extra}
"""


def _cpu(tmp_path, extra=""):
    path = tmp_path / f"cpuinfo{len(extra)}"
    path.write_text(CPUINFO.format(extra=extra))
    return str(path)


@pytest.fixture
def no_accelerator(monkeypatch):
    import tensorflow as tf
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])


def test_cpu_info_reads_the_model_and_flags_and_survives_no_file(tmp_path):
    from tf_advscale import distribute
    info = distribute.cpu_info(_cpu(tmp_path, "avx512_bf16"))
    assert info["model"] == "Some CPU"
    assert {"avx2", "avx512_bf16"} <= info["flags"] and "amx_bf16" not in info["flags"]
    missing = distribute.cpu_info(str(tmp_path / "absent"))
    assert missing["flags"] == frozenset() and missing["model"]


@pytest.mark.parametrize("extra, expected", [("", "float32"), ("avx512_bf16", "mixed_bfloat16"),
                                             ("amx_tile amx_bf16", "mixed_bfloat16"),
                                             ("avx512f avx512_vnni", "float32")])
def test_auto_precision_on_a_cpu_is_bfloat16_only_where_it_is_native(
        tmp_path, no_accelerator, extra, expected):
    assert recipe.resolve_precision("auto", cpuinfo=_cpu(tmp_path, extra)) == expected


@pytest.mark.parametrize("capabilities, expected", [([(9, 0)], "mixed_bfloat16"),
                                                    ([(8, 0), (8, 6)], "mixed_bfloat16"),
                                                    ([(7, 5)], "mixed_float16"),
                                                    ([(8, 0), (7, 0)], "mixed_float16"),
                                                    ([(6, 1)], "float32"), ([None], "float32")])
def test_auto_precision_on_gpus_follows_the_oldest_compute_capability(
        tmp_path, monkeypatch, capabilities, expected):
    import tensorflow as tf
    gpus = [f"GPU:{i}" for i in range(len(capabilities))]
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: gpus if kind == "GPU" else [])
    details = {gpu: ({"compute_capability": c} if c else {}) for gpu, c in zip(gpus, capabilities)}
    monkeypatch.setattr(tf.config.experimental, "get_device_details", details.__getitem__)
    # A CPU with native bfloat16 does not decide it where a GPU is present.
    assert recipe.resolve_precision("auto", cpuinfo=_cpu(tmp_path, "amx_bf16")) == expected


def test_auto_precision_under_the_tpu_strategy_is_bfloat16_before_the_tpu_is_connected(
        tmp_path, no_accelerator):
    assert recipe.resolve_precision("auto", strategy="tpu", cpuinfo=_cpu(tmp_path)) == \
        "mixed_bfloat16"


def test_auto_precision_does_not_start_the_tensorflow_runtime():
    """runner.run settles "auto" before setup_runtime sets the thread counts
    and before a multi-worker strategy configures collectives: both need a
    runtime that has not started."""
    import subprocess
    import sys
    code = ("import tensorflow as tf\n"
            "from tensorflow.python.eager import context\n"
            "from tf_advscale import recipe\n"
            "print(recipe.resolve_precision('auto'))\n"
            "assert context.context()._context_handle is None, 'runtime started'\n"
            "tf.config.threading.set_inter_op_parallelism_threads(1)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] in recipe.PRECISIONS


def test_concrete_precisions_pass_and_others_are_refused():
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert recipe.resolve_precision(name) == name
    with pytest.raises(ConfigError, match="'bf16'"):
        recipe.resolve_precision("bf16")


def test_auto_precision_builds_under_the_resolved_policy(monkeypatch, no_accelerator):
    from tf_advscale import distribute
    monkeypatch.setattr(distribute, "cpu_info",
                        lambda path=None: {"model": "x", "flags": frozenset({"amx_bf16"})})
    c = config_lib.merge({"model": {"depth": 8}, "trainer": {"precision": "auto"}})
    model = recipe.build(c, INFO)
    assert model.model.backbone.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"


def test_auto_precision_is_settled_once_per_work_directory(tmp_path, monkeypatch, no_accelerator):
    """A run started where "auto" meant float32 keeps float32 when it resumes
    on a machine where "auto" means mixed bfloat16; a new run there gets
    bfloat16. The work directory's config.json records the concrete choice."""
    import json

    from tf_advscale import distribute
    seen = []

    class Built(Exception):
        pass

    def build(config, info, **model):
        seen.append((config["trainer"]["precision"], keras.config.dtype_policy().name))
        raise Built

    def machine(flags):
        monkeypatch.setattr(distribute, "cpu_info",
                            lambda path=None: {"model": "x", "flags": frozenset(flags)})

    monkeypatch.setattr(recipe, "build", build)
    c = config_lib.merge({"data": {"train_subset": 64, "batch_size": 32},
                          "eval": {"val_subset": 32, "test_subset": 32},
                          "trainer": {"precision": "auto"}})
    started, fresh = tmp_path / "started", tmp_path / "fresh"
    machine({"avx2"})
    with pytest.raises(Built):
        runner.run(c, str(started))
    saved = json.loads((started / "config.json").read_text())["trainer"]["precision"]
    assert saved == "float32" and seen[-1] == ("float32", "float32")
    (started / "state").mkdir()  # the run has checkpoints: it is resumed below
    machine({"avx2", "amx_bf16"})
    with pytest.raises(Built):
        runner.run(c, str(started))
    assert seen[-1] == ("float32", "float32")
    assert f"as the run in {started} started" in (started / "run.log").read_text()
    with pytest.raises(Built):
        runner.run(c, str(fresh))
    assert seen[-1] == ("mixed_bfloat16", "mixed_bfloat16")
    assert json.loads((fresh / "config.json").read_text())["trainer"]["precision"] == \
        "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    # A precision named outright is not overridden by the started run's.
    bf16 = config_lib.merge({**c, "trainer": {**c["trainer"], "precision": "mixed_bfloat16"}})
    with pytest.raises(ConfigError, match="differs at trainer.precision"):
        runner.run(bf16, str(started))


def test_auto_precision_keeps_a_finished_run_s_and_an_old_config_s_default(
        tmp_path, monkeypatch, no_accelerator):
    """A run that left only its results (no state/) counts as started, as
    check_workdir counts it; a config.json written before trainer.precision
    existed ran in the default, float32."""
    import json

    from tf_advscale import distribute
    monkeypatch.setattr(distribute, "cpu_info",
                        lambda path=None: {"model": "x", "flags": frozenset({"amx_bf16"})})
    c = config_lib.merge({"trainer": {"precision": "auto"}})
    finished, old = tmp_path / "finished", tmp_path / "old"
    for workdir, saved in ((finished, config_lib.merge({})), (old, config_lib.merge({}))):
        workdir.mkdir()
        (workdir / "metrics.json").write_text("{}")
        if workdir == old:
            del saved["trainer"]["precision"]
        (workdir / "config.json").write_text(json.dumps(saved, default=str))
    for workdir in (finished, old):
        settled, how = runner.settle_precision(c, str(workdir))
        assert settled["trainer"]["precision"] == "float32", how
    settled, how = runner.settle_precision(c, str(tmp_path / "new"))
    assert settled["trainer"]["precision"] == "mixed_bfloat16" and "this machine" in how
    assert c["trainer"]["precision"] == "auto"  # the caller's config is not changed


def test_auto_precision_is_refused_under_multi_worker(tmp_path):
    c = config_lib.merge({"trainer": {"precision": "auto"},
                          "distribute": {"strategy": "multi_worker"}})
    with pytest.raises(ConfigError, match="multi_worker.*Received: 'auto'"):
        runner.settle_precision(c, str(tmp_path))


def test_a_precision_that_is_not_one_is_refused_before_the_workdir_gets_a_config(tmp_path):
    c = config_lib.merge({"trainer": {"precision": "bfloat16"}})
    with pytest.raises(ConfigError, match="trainer.precision must be one of.*Received: 'bfloat16'"):
        runner.settle_precision(c, str(tmp_path))
    with pytest.raises(ConfigError, match="Received: 'bfloat16'"):
        runner.run(c, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "config.json").exists()
