"""Runs one experiment config: data, model, ``model.fit``, final evaluation.

Everything lands in the work directory:

    config.json      the full config that ran
    state/           step-level training state (``tf_advscale.checkpoint``):
                     a killed run, rerun with the same command, resumes at
                     its last checkpoint (data position and RNG included)
    best.keras       best validation checkpoint (robust accuracy if attacked)
    final.keras      the model after the last epoch
    history.csv      per-epoch metrics;  tb/  TensorBoard logs
    metrics.json     final test metrics, written last and atomically, counted by
                     ``evaluate.run_attacks`` (as ``advscale eval`` counts)
    final_eval/      the final evaluation's finished batches (it resumes)
    run.log          the runner's messages (resuming, final evaluation),
                     timestamped; they also go to the console
    init.json        with ``init_from``: the weights the run started from
                     (their sha256), also in metrics.json's ``init``

Every file is written through a temporary name and a rename. A work
directory holding a run of a different config is refused.
"""

import contextlib
import functools
import json
import logging
import os
import platform
import sys
import time

import keras
import tensorflow as tf

import tf_advscale
from tf_advscale import callbacks as callbacks_lib
from tf_advscale import checkpoint as ckpt_lib
from tf_advscale import data as data_lib
from tf_advscale import distribute, recipe
from tf_advscale import evaluate as evaluate_lib
from tf_advscale.files import save_model_atomic, source_commit, to_json, write_json  # noqa: F401
from tf_advscale.config import ConfigError, differences, merge
from tf_advscale.layers import mixbn
from tf_advscale.models import count_params

INIT_RECORD = "init.json"


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


def _data_kwargs(config):
    d = config["data"]
    replicas = tf.distribute.get_strategy().num_replicas_in_sync  # global batch
    return dict(source=d["source"], path=d["path"], batch_size=d["batch_size"] * replicas,
                image_size=d["image_size"], num_parallel_calls=d["num_parallel_calls"],
                data_dir=d["data_dir"], manual_dir=d["manual_dir"], seed=config["seed"])


def _train_and_validation_ids(config):
    """``(training subset, validation subset)`` as ``data.load`` takes them:
    with ``data.val_split: "train"``, ``eval.val_subset`` training images held
    out (``data.holdout_ids``; ``data.train_subset`` then counts the first
    images of the rest) and the validation ids; else ``data.train_subset``
    and ``eval.val_subset`` of ``data.eval_split``."""
    d, val_n = config["data"], config["eval"]["val_subset"]
    if d["val_split"] is None:
        return d["train_subset"], val_n
    if d["val_split"] != "train":
        raise ConfigError("data.val_split must be None (validation reads data.eval_split) or "
                          f"'train'. Received: data.val_split={d['val_split']!r}")
    args = (d["dataset"], d["source"], d["path"], d["data_dir"], d["manual_dir"], val_n,
            d["train_subset"])
    try:
        hash(args)
    except TypeError:  # a wrong type: holdout_ids names the value
        return _holdout.__wrapped__(*args)
    return _holdout(*args)


@functools.lru_cache(maxsize=None, typed=True)  # once per process, not at every (re)load
def _holdout(dataset, source, path, data_dir, manual_dir, val_n, train_subset):
    n = data_lib.split_size(dataset, "train", source, path, data_dir, manual_dir)
    try:
        ids = data_lib.holdout_ids(n, val_n, train_subset)
        for a in ids:
            a.flags.writeable = False  # shared by every caller
        return ids
    except data_lib.DataError as e:
        raise ConfigError(f"data.val_split='train' holds eval.val_subset={val_n!r} of the "
                          f"{n} training images out and trains on data.train_subset="
                          f"{train_subset!r} of the rest: {e}") from None


def load_train(config, start_epoch=0, start_step=0):
    """The training stream from (start_epoch, start_step) to the last epoch."""
    d = config["data"]
    return data_lib.load(d["dataset"], "train", augment=d["augment"],
                         subset=_train_and_validation_ids(config)[0],
                         epochs=config["optimizer"]["epochs"], start_epoch=start_epoch,
                         start_step=start_step, **_data_kwargs(config))


def load_data(config):
    d = config["data"]
    common = _data_kwargs(config)
    train, train_info = load_train(config)
    val_split = "train" if d["val_split"] == "train" else d["eval_split"]
    val, val_info = data_lib.load(d["dataset"], val_split,
                                  subset=_train_and_validation_ids(config)[1], shuffle=False,
                                  augment=False, drop_remainder=False, **common)
    test, test_info = data_lib.load(d["dataset"], d["eval_split"],
                                    subset=config["eval"]["test_subset"] or d["test_subset"],
                                    **common)
    return (train, train_info), (val, val_info), (test, test_info)


def _started(workdir):
    """Whether ``workdir`` holds a run that trained (checkpoints or results)."""
    return any(os.path.exists(os.path.join(workdir, n))
               for n in ("state", "metrics.json", "final.keras"))


def _saved_config(workdir):
    """``workdir``'s ``config.json`` with the defaults of keys added since it
    was written; None where there is none or it never completed its write."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            old = json.load(f)
        except ValueError:
            return None
    try:
        return json.loads(json.dumps(merge(old), default=to_json))
    except ConfigError:
        return old


def check_workdir(workdir, config):
    """Refuses a work directory that holds a run of a different config."""
    old = _saved_config(workdir)
    if old is None:
        return  # none, or it never completed its first write: nothing to protect
    new = json.loads(json.dumps(config, default=to_json))
    if old == new:
        return
    if not _started(workdir):
        return
    diff = sorted(differences(old, new))
    raise ConfigError(
        f"Work directory {workdir} holds a run of a different config (differs at "
        f"{', '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}). Use another --workdir, "
        "or delete that directory to start over.")


def settle_precision(config, workdir):
    """``config`` with ``trainer.precision="auto"`` made concrete, and the
    line that says how. A run that already trained in ``workdir`` (the runs
    ``check_workdir`` protects) keeps the precision its ``config.json``
    records, so that a resume on other hardware does not switch precision
    halfway; a new run takes ``recipe.resolve_precision``'s choice for this
    machine. A concrete precision is left as given (``check_workdir``
    refuses one that differs from the started run's). Under
    ``multi_worker`` "auto" is refused: each worker would decide on its own
    hardware, and workers that differ would not train one model. A name
    that is not a precision is refused here, before config.json is written."""
    t = config["trainer"]
    if recipe.check_precision(t["precision"]) != "auto":
        return config, None
    strategy = config["distribute"]["strategy"]
    if strategy == "multi_worker":
        raise ConfigError("trainer.precision 'auto' is decided per machine; under "
                          "distribute.strategy='multi_worker' name one of "
                          f"{[p for p in recipe.PRECISIONS if p != 'auto']}. Received: 'auto'")
    saved = (_saved_config(workdir) or {}) if _started(workdir) else {}
    precision = saved.get("trainer", {}).get("precision")
    if precision in recipe.PRECISIONS and precision != "auto":
        how = f"trainer.precision auto: {precision}, as the run in {workdir} started"
    else:
        precision = recipe.resolve_precision("auto", strategy=strategy)
        how = f"trainer.precision auto: {precision} on this machine"
    return dict(config, trainer=dict(t, precision=precision)), how


def final_eval_settings(config, attacks, route):
    """What the final evaluation's saved batches are fingerprinted by.
    ``data.val_split`` is left out at its default, as configs before it had
    none: their killed final evaluations resume."""
    data = {k: v for k, v in config["data"].items() if (k, v) != ("val_split", None)}
    return {"attacks": {k: repr(v) for k, v in attacks.items()}, "route": route,
            "seed": config["seed"], "data": data, "eval": config["eval"]}


def final_evaluation(model, test_ds, config, workdir, verbose=0):
    """Clean and eval-attack accuracy on the test set, per route for MixBN
    models, counted by ``evaluate.run_attacks``: the function ``advscale
    eval``, the zoo and ``reproduce`` use, so a robust image is one classified
    correctly both clean and attacked. Resumable: finished batches are kept in
    ``WORKDIR/final_eval/ROUTE``."""
    attacks = {} if model.eval_attack is None else {"eval_attack": model.eval_attack}
    routes = ("adversarial", "clean") if model.has_mixbn else ("model",)
    out = {}
    for route in routes:
        if model.has_mixbn:
            mixbn.set_route(model.model, route)
        correct, _ = evaluate_lib.run_attacks(
            model, test_ds, None, attacks, seed=config["seed"],
            workdir=os.path.join(workdir, "final_eval", route),
            settings=final_eval_settings(config, attacks, route), verbose=bool(verbose))
        out[f"route_{route}"] = {
            "clean_accuracy": float(correct["clean"].mean()),
            "adv_accuracy": float(correct["eval_attack"].mean()) if attacks else None}
    if not model.has_mixbn:
        return out["route_model"]
    route = config["eval"]["route"] or "adversarial"
    mixbn.set_route(model.model, route)
    out.update(out[f"route_{route}"])
    return out


def _metrics(model, config, test_info, results, train_seconds, eval_seconds, commit):
    """The record ``metrics.json`` holds: results, what produced them, versions."""
    return {
        "results": results,
        "test_images": test_info["num_examples"],
        "dataset": f"{test_info['dataset']} ({test_info['source']})",
        "eval_attack": repr(model.eval_attack),
        "evaluation": "tf_advscale.evaluate.run_attacks: robust = correct clean and attacked, "
                      "per image; the attack runs on the images correct clean",
        "train_attack": repr(model.attack),
        "params": count_params(model.model),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "epochs": config["optimizer"]["epochs"],
        "package_version": tf_advscale.__version__,
        "commit": commit,
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }


def _truncate_history(path, epoch):
    """Drops history.csv rows of epochs >= ``epoch`` (written by a run that
    was killed before its epoch-end checkpoint); atomic."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    keep = lines[:1] + [line for line in lines[1:]
                        if line.split(",", 1)[0].strip().isdigit()
                        and int(line.split(",", 1)[0]) < epoch]
    if keep != lines:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)


class _Clock:
    """Training wall time, summed over the runs of a resumed work directory."""

    def __init__(self):
        self.before, self.since = 0.0, None

    def start(self):
        self.since = time.time()

    def get_state(self):
        return {"seconds": self.before + (time.time() - self.since if self.since else 0.0)}

    def set_state(self, state):
        self.before = float(state["seconds"])
        self.since = time.time()

    def supersede(self, states):
        """After an agreed resume from an older checkpoint: the discarded
        newer segment's time was spent too, and is counted."""
        self.before = max([self.before] + [float(s["seconds"]) for s in states])


class _Commits:
    """The source commits a run trained with, one per segment of a resumed
    work directory (recorded when the segment starts, not when it ends)."""

    def __init__(self):
        self.commits = [source_commit()]

    def get_state(self):
        return {"commits": self.commits}

    def set_state(self, state):
        self.commits = list(dict.fromkeys(list(state["commits"]) + self.commits))

    def describe(self):
        """One commit, or the segments' commits in order ("A then B")."""
        known = [c for c in self.commits if c]
        return " then ".join(known) or None


class _Machines:
    """The CPU model (and whether oneDNN ran, ``distribute.describe_cpu``) of
    each training segment of a resumed work directory, in order (runs move between machines whose speeds differ several-fold, and
    the training time sums them all). ``start`` records this machine when it
    is about to train; a run resumed from a checkpoint written before this
    record existed begins with "not recorded"."""

    NOT_RECORDED = "not recorded"

    def __init__(self):
        self.models, self.restored = [], False

    def get_state(self):
        return {"cpus": self.models}

    def set_state(self, state):
        self.models, self.restored = list(state["cpus"]), True

    def resumed_without_record(self):
        """After a checkpoint without this state was restored."""
        if not self.restored and not self.models:
            self.models = [self.NOT_RECORDED]

    def start(self):
        here = distribute.describe_cpu()
        if self.models[-1:] != [here]:
            self.models.append(here)

    def describe(self):
        return " then ".join(self.models) or None


# The stdlib ``logging`` module, not ``absl.logging``: absl's file handler
# names its own files (``NAME.HOST.USER.log.INFO.DATE.PID``) and sends to the
# console only once absl flags are parsed, which this CLI does not do.
_log = logging.getLogger("tf_advscale.runner")


@contextlib.contextmanager
def run_log(workdir):
    """Sends ``_log``'s messages to stdout, as ``print`` did, and appends them,
    timestamped, to ``WORKDIR/run.log`` (not ``train.log``: a caller may
    redirect the console there, and two writers would interleave)."""
    to_file = logging.FileHandler(os.path.join(workdir, "run.log"), encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handlers = [to_file, logging.StreamHandler(sys.stdout)]
    saved = _log.level, _log.propagate
    _log.setLevel(logging.INFO)
    _log.propagate = False  # else a caller's root handler (basicConfig, absl.app) prints it twice
    for handler in handlers:
        _log.addHandler(handler)
    try:
        yield _log
    finally:
        for handler in handlers:
            _log.removeHandler(handler)
            handler.close()
        _log.setLevel(saved[0])
        _log.propagate = saved[1]


def run(config, workdir, verbose=None):
    """Trains ``config`` into ``workdir``; rerun after a crash, it resumes."""
    dist = config["distribute"]
    kind, index = distribute.task()
    if dist["strategy"] == "multi_worker" and kind != "chief":
        # Every worker keeps its own state (to resume); the chief's is the run's.
        workdir = os.path.join(workdir, f"{kind}{index}")
    # A run that trained restores its own weights: the source may be gone.
    fresh = not _started(workdir)
    recipe.check_init_from(config["init_from"], exists=fresh)
    recipe.check_init_skip(config)
    os.makedirs(workdir, exist_ok=True)
    config, settled = settle_precision(config, workdir)
    check_workdir(workdir, config)
    write_json(os.path.join(workdir, "config.json"), config)
    setup_runtime(config)
    # Before any tensor exists (multi-worker collectives, a TPU system).
    strategy = distribute.make_strategy(dist["strategy"], tpu=dist["tpu"])
    # init_from's model, read outside the strategy's scope (its variables are
    # read, never trained) wherever it exists: a started run may still begin at
    # step 0 (no usable checkpoint, or workers agreeing on none). A list, which
    # _run empties, so that the source is freed once copied.
    init = [recipe.load_init_source(config["init_from"])] \
        if config["init_from"] and (fresh or recipe.init_source_exists(config["init_from"])) \
        else []
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config["trainer"]["precision"])
    try:
        with strategy.scope(), run_log(workdir) as log:
            if settled:
                log.info("%s", settled)
            return _run(config, workdir, verbose, init)
    finally:
        keras.config.set_dtype_policy(previous)


def _warm_start(model, config, workdir, init, val, best, monitor_co):
    """Sets a fresh run's initial weights from ``init_from`` (``init``: a
    list holding ``recipe.load_init_source``'s pair, emptied here) and writes
    what they came from to ``init.json``. Validation and the catastrophic-
    overfitting monitor then read the starting weights once, so that
    ``best.keras`` is the source until training beats it and a collapse in
    the first epoch is measured against the source (and rolled back to it)."""
    if not init:
        raise ConfigError(f"init_from={config['init_from']!r}: {workdir} starts at step 0 again "
                          "(no usable checkpoint), and the weights it starts from are gone")
    record = recipe.warm_start(model.model, *init.pop(), skip=config["init_skip"])
    write_json(os.path.join(workdir, INIT_RECORD), record)
    _log.info("Initial weights from %s (sha256 %s)%s%s", record["init_from"], record["sha256"],
              ", its BatchNormalizations filling both MixBN domains"
              if record["bn_into_mixbn"] else
              f", its MixBN {record['domain']} domain" if record.get("domain") else "",
              f"; {record['skipped']} left at their initializers" if record["skipped"] else "")
    readings = []
    if val is not None:
        logs = model.evaluate(val, return_dict=True, verbose=0)
        key = best.monitor[len("val_"):]
        if key in logs:
            best.set_model(model)
            best.on_epoch_end(-1, {best.monitor: logs[key]})
            readings.append(f"{best.monitor} {logs[key]:.4f}")
    if monitor_co is not None:
        monitor_co.set_model(model)
        monitor_co.check()
        readings.append(f"held-out robust accuracy {monitor_co.history[-1]:.4f} "
                        f"(clean {monitor_co.clean_history[-1]:.4f})")
    if readings:
        _log.info("The starting weights read %s", "; ".join(readings))


def _run(config, workdir, verbose, init):
    (train, train_info), (val, _), (test, test_info) = load_data(config)
    steps_per_epoch = train_info["steps_per_epoch"]
    per_execution = config["trainer"]["steps_per_execution"]
    every = config["checkpoint"]["every_steps"]
    if steps_per_epoch % per_execution or (every and every % per_execution):
        raise ConfigError(
            f"trainer.steps_per_execution={per_execution} must divide the {steps_per_epoch} "
            f"steps per epoch and checkpoint.every_steps={every}")
    model = recipe.build(config, train_info)

    monitor = "val_adv_accuracy" if config["eval_attack"] else "val_clean_accuracy"
    best = callbacks_lib.BestModel(os.path.join(workdir, "best.keras"), monitor=monitor, mode="max")
    clock, commits, machines = _Clock(), _Commits(), _Machines()
    tracked = {"best_model": best, "clock": clock, "commits": commits, "machines": machines}
    callbacks = [
        keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tb"), write_graph=False),
        best,
    ]
    monitor_co = recipe.overfitting_monitor(config, val)
    if monitor_co is not None:
        callbacks.append(monitor_co)
        tracked["catastrophic_overfitting"] = monitor_co
    c = config["checkpoint"]
    state = ckpt_lib.TrainingState(os.path.join(workdir, "state"), steps_per_epoch,
                                   every_steps=c["every_steps"], keep=c["keep"], tracked=tracked)
    agree = None
    if config["distribute"]["strategy"] == "multi_worker":
        if c["keep"] < 2:  # the chief prunes before a slower worker saves
            raise ConfigError("checkpoint.keep must be >= 2 under multi_worker, so that "
                              "every worker still holds the step they resume from. "
                              f"Received: {c['keep']!r}")
        strategy = tf.distribute.get_strategy()  # run() entered its scope
        agree = lambda steps: distribute.common_step(strategy, steps)  # noqa: E731
    epoch, step = state.load(agree=agree)
    _truncate_history(os.path.join(workdir, "history.csv"), epoch)
    if epoch or step:
        _log.info("Resuming %s at epoch %s, step %s of %s", workdir, epoch, step, steps_per_epoch)
        machines.resumed_without_record()
        init.clear()  # its checkpoint has the weights: the source is not needed
    elif config["init_from"]:
        _warm_start(model, config, workdir, init, val, best, monitor_co)
    if (epoch, step) < (config["optimizer"]["epochs"], 0):
        machines.start()  # this machine trains a segment
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    clock.start()
    def make_dataset(e, s):  # a fresh run trains on the stream already built
        return train if (e, s) == (0, 0) else load_train(config, e, s)[0]

    ckpt_lib.resumable_fit(
        model, make_dataset, config["optimizer"]["epochs"],
        steps_per_epoch, state, callbacks=callbacks, validation_data=val,
        validation_freq=config["eval"]["val_every"], verbose=verbose, shuffle=False)
    train_time = clock.get_state()["seconds"]
    save_model_atomic(model, os.path.join(workdir, "final.keras"))

    start = time.time()
    # Under multi_worker every worker evaluates (into its own directory; the
    # chief's is the run's). A worker that exits before the chief can have the
    # coordination service report its task as failed to the chief.
    _log.info("Final evaluation on %s test images", f"{test_info['num_examples']:,}")
    results = final_evaluation(model, test, config, workdir, verbose=verbose)
    metrics = _metrics(model, config, test_info, results, train_time, time.time() - start,
                       commits.describe())
    metrics["cpu"] = machines.describe()
    if os.path.exists(os.path.join(workdir, INIT_RECORD)):
        with open(os.path.join(workdir, INIT_RECORD)) as f:
            metrics["init"] = json.load(f)
    write_json(os.path.join(workdir, "metrics.json"), metrics)
    return model, metrics
