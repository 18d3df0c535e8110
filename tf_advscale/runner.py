"""Runs one experiment config: data, model, ``model.fit``, final evaluation.

Everything lands in the work directory:

    config.json      the full config that ran
    backup/          Keras BackupAndRestore state (a killed run resumes)
    best.keras       best validation checkpoint (robust accuracy if attacked)
    final.keras      the model after the last epoch
    history.csv      per-epoch metrics;  tb/  TensorBoard logs
    metrics.json     final test metrics, written last and atomically
"""

import json
import os
import platform
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tf_advscale
from tf_advscale import data as data_lib
from tf_advscale.layers import mixbn
from tf_advscale.models import count_params, resnet
from tf_advscale.training import AdversarialModel, CatastrophicOverfittingMonitor, LRSchedule


def write_json(path, obj):
    """Writes JSON atomically: a crash never leaves a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def source_commit():
    """The git commit of the package source, with "+dirty" if modified; None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def setup_runtime(config):
    """Threads, seeds and (optionally) op determinism, before any TF work."""
    threads = config["threads"]
    try:
        if threads.get("intra_op"):
            tf.config.threading.set_intra_op_parallelism_threads(int(threads["intra_op"]))
        if threads.get("inter_op"):
            tf.config.threading.set_inter_op_parallelism_threads(int(threads["inter_op"]))
    except RuntimeError:
        pass  # already initialised in this process (tests); keep what is set
    keras.utils.set_random_seed(int(config["seed"]))
    if config["deterministic"]:
        tf.config.experimental.enable_op_determinism()


def load_data(config):
    d = config["data"]
    common = dict(source=d["source"], path=d["path"], batch_size=d["batch_size"],
                  image_size=d["image_size"], num_parallel_calls=d["num_parallel_calls"],
                  data_dir=d["data_dir"], manual_dir=d["manual_dir"], seed=config["seed"])
    train, train_info = data_lib.load(d["dataset"], "train", augment=d["augment"],
                                      subset=d["train_subset"], **common)
    val, val_info = data_lib.load(d["dataset"], "test", subset=config["eval"]["val_subset"],
                                  **common)
    test, test_info = data_lib.load(d["dataset"], "test",
                                    subset=config["eval"]["test_subset"] or d["test_subset"],
                                    **common)
    return (train, train_info), (val, val_info), (test, test_info)


def build_model(config, info):
    m = config["model"]
    classifier = resnet(depth=m["depth"], num_classes=info["num_classes"], family=m["family"],
                        input_shape=info["shape"], norm=m["norm"], norm_kwargs=m["norm_kwargs"],
                        width=m["width"], preact=m["preact"],
                        zero_init_residual=m["zero_init_residual"])
    t = config["trainer"]
    return AdversarialModel(
        classifier, attack=config["attack"], eval_attack=config["eval_attack"],
        clean_portion=t["clean_portion"], mixing=t["mixing"], alp_weight=t["alp_weight"],
        label_smoothing=t["label_smoothing"], weight_decay=t["weight_decay"],
        attack_bn=t["attack_bn"], attack_route=t["attack_route"],
        attack_jit_compile=t["attack_jit_compile"])


def compile_model(model, config, steps_per_epoch):
    o = config["optimizer"]
    if o["name"] != "sgd":
        raise ValueError(f"optimizer.name: only 'sgd' is supported. Received: {o['name']!r}")
    schedule = LRSchedule(o["learning_rate"], steps_per_epoch, o["epochs"], o["schedule"],
                          o["warmup_epochs"], o["decay_epochs"])
    optimizer = keras.optimizers.SGD(schedule, momentum=o["momentum"], nesterov=o["nesterov"])
    model.compile(optimizer=optimizer, jit_compile=config["trainer"]["jit_compile"],
                  steps_per_execution=config["trainer"]["steps_per_execution"])


def evaluate(model, test_ds, route=None):
    """Clean and eval-attack accuracy; for MixBN models per route."""
    if not model.has_mixbn:
        r = model.evaluate(test_ds, verbose=0, return_dict=True)
        return {"clean_accuracy": r["clean_accuracy"],
                "adv_accuracy": r["adv_accuracy"] if model.eval_attack is not None else None}
    out = {}
    for domain in ("adversarial", "clean"):
        mixbn.set_route(model.model, domain)
        r = model.evaluate(test_ds, verbose=0, return_dict=True)
        out[f"route_{domain}"] = {
            "clean_accuracy": r["clean_accuracy"],
            "adv_accuracy": r["adv_accuracy"] if model.eval_attack is not None else None}
    mixbn.set_route(model.model, route or "adversarial")
    out.update(out[f"route_{route or 'adversarial'}"])
    return out


def run(config, workdir, verbose=None):
    """Trains ``config`` into ``workdir`` (resuming if a backup is there)."""
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config)
    setup_runtime(config)
    (train, train_info), (val, _), (test, test_info) = load_data(config)
    bs = config["data"]["batch_size"]
    steps_per_epoch = train_info["num_examples"] // bs
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {bs} is larger than the training set "
                         f"({train_info['num_examples']} images)")
    model = build_model(config, train_info)
    compile_model(model, config, steps_per_epoch)

    monitor = "val_adv_accuracy" if config["eval_attack"] else "val_clean_accuracy"
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(workdir, "best.keras"), monitor=monitor,
                                        mode="max", save_best_only=True),
        keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tb"), write_graph=False),
    ]
    if config["trainer"]["catastrophic_overfitting"]:
        x, y = next(iter(val))
        callbacks.append(CatastrophicOverfittingMonitor(x, y))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.time()
    model.fit(train, epochs=config["optimizer"]["epochs"], validation_data=val,
              validation_freq=config["eval"]["val_every"], callbacks=callbacks, verbose=verbose, shuffle=False)
    train_time = time.time() - start
    model.save(os.path.join(workdir, "final.keras"))

    start = time.time()
    results = evaluate(model, test, config["eval"]["route"])
    metrics = {
        "results": results,
        "test_images": test_info["num_examples"],
        "dataset": f"{test_info['dataset']} ({test_info['source']})",
        "eval_attack": repr(model.eval_attack),
        "train_attack": repr(model.attack),
        "params": count_params(model.model),
        "train_seconds": round(train_time, 1),
        "eval_seconds": round(time.time() - start, 1),
        "epochs": config["optimizer"]["epochs"],
        "package_version": tf_advscale.__version__,
        "commit": source_commit(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    write_json(os.path.join(workdir, "metrics.json"), metrics)
    return model, metrics
