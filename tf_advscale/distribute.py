"""Distribution strategies for training: one name in the config picks one.

    strategy = make_strategy("mirrored")          # all local GPUs (or CPUs)
    strategy = make_strategy("multi_worker")      # the cluster in TF_CONFIG
    strategy = make_strategy("tpu", tpu="grpc://...")   # untested here

Under any of them ``AdversarialModel`` generates its adversarial examples per
replica inside the step, MixBN splits each replica's batch, and
``norm_kwargs={"synchronized": True}`` makes BN (and each MixBN domain)
use statistics over all replicas. The global batch is the per-replica batch
times ``strategy.num_replicas_in_sync``.

TPUStrategy: the code path exists (``make_strategy("tpu")``, the config's
``distribute.strategy = "tpu"``) but has not been run: no TPU here.
"""

import os
import platform

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name="default", tpu=None, devices=None):
    """The ``tf.distribute`` strategy called ``name``.

    Args:
        name: ``"default"`` (no distribution), ``"mirrored"`` (synchronous
            data parallelism over ``devices``, default all local GPUs, else
            the CPU), ``"multi_worker"`` (MultiWorkerMirroredStrategy over
            the cluster in the ``TF_CONFIG`` environment variable) or
            ``"tpu"`` (TPUStrategy; ``tpu`` is the TPU name or address given
            to ``TPUClusterResolver``).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy. Expected one of {STRATEGIES}. Received: {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)



def resolve_jit(value):
    """``True``/``False`` as given; ``"auto"``: XLA only where an accelerator
    (GPU or TPU) is present. On the 2-core CPU here plain graph mode was
    faster than XLA for both the train step and the attack loop
    (``benchmarks/xla.py``), so CPUs run without it."""
    if value == "auto":
        return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    if not isinstance(value, bool):
        raise ValueError(f"jit_compile must be True, False or 'auto'. Received: {value!r}")
    return value


# CPU flags of native bfloat16 arithmetic, as Linux's /proc/cpuinfo names them.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_info(cpuinfo="/proc/cpuinfo"):
    """``{"model": name, "flags": frozenset}`` of the CPU, from Linux's
    ``/proc/cpuinfo`` (its first processor); where that cannot be read
    (other systems), the platform's processor name and no flags."""
    model = flags = None
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and flags is None:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(),
            "flags": flags or frozenset()}


def describe_cpu(kernels=True):
    """``"CPU model, oneDNN on"`` (or ``off``; ``tf_advscale.cpu_kernels``):
    the CPU and whether TensorFlow's oneDNN kernels run on it in this
    process, which changed the speed of a training step by 1.5-2x here;
    the model alone with ``kernels=False``."""
    from tf_advscale import cpu_kernels
    said = cpu_kernels.describe() if kernels else None
    return cpu_info()["model"] + (f", {said}" if said else "")


def describe_machine(kernels=True):
    """``"x86_64 2 cpus (CPU model, oneDNN on)"``: what benchmark JSONs record
    as their machine (two 2-core machines here have differed six-fold in
    speed); ``kernels=False`` leaves out the oneDNN setting (a benchmark
    whose runs set it each in their own process)."""
    return f"{platform.machine()} {os.cpu_count()} cpus ({describe_cpu(kernels)})"


_FAILED = -2  # a worker that could not read its checkpoints
_EMPTY = -1


def common_step(strategy, steps, slots=16):
    """The newest of ``steps`` (this worker's checkpointed global steps) that
    every worker of ``strategy`` also holds; 0 if no worker holds any. Workers
    call it together (a collective): a worker killed between the chief's save
    and its own resumes from the same step as the others. ``steps=None`` says
    this worker failed to read its checkpoints; then every worker raises
    instead of waiting for it. See ``agreed_step`` for the rule."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1. Received: slots={slots!r}")
    if steps is None:
        mine = [_FAILED] * slots
    else:
        mine = sorted({int(s) for s in steps}, reverse=True)[:slots]
        mine += [_EMPTY] * (slots - len(mine))
    local = tf.constant([mine], tf.int64)

    @tf.function
    def gather():
        return strategy.run(
            lambda: tf.distribute.get_replica_context().all_gather(local, axis=0))

    rows = strategy.experimental_local_results(gather())[0].numpy()
    return agreed_step([[int(v) for v in row] for row in rows])


def agreed_step(rows):
    """The resume step from every replica's checkpointed steps (one row per
    replica, padded with -1; a row of -2: that worker failed to read them).

    The newest step present in every row; 0 when no row holds any step (a
    fresh start). Refused (``RuntimeError``) when a worker failed, or when
    some hold checkpoints but none in common, which would silently throw
    their training away (a worker whose state was lost, or ``keep=1``)."""
    if any(_FAILED in row for row in rows):
        bad = sorted({i for i, row in enumerate(rows) if _FAILED in row})
        raise RuntimeError(f"Replica(s) {bad} could not read their checkpoints (see their "
                           "logs); no worker resumes without them")
    held = [{v for v in row if v >= 0} for row in rows]
    common = set.intersection(*held) if held else set()
    if common:
        return max(common)
    if any(held):
        raise RuntimeError(
            "The workers hold checkpoints but none of the same step (global steps per "
            f"replica: {[sorted(h) for h in held]}): resuming would discard training. Restore "
            "a common checkpoint (or move all of them aside to start afresh)")
    return 0


def task():
    """``(type, index)`` of this process in TF_CONFIG (``("chief", 0)`` if none)."""
    import json
    import os
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    t = config.get("task") or {}
    if not t:
        return "chief", 0
    kind, index = t.get("type", "worker"), int(t.get("index", 0))
    cluster = config.get("cluster", {})
    if kind == "worker" and index == 0 and "chief" not in cluster:
        return "chief", 0  # without a chief, worker 0 is the chief
    return kind, index


def worker_index():
    """This process's index among the workers in TF_CONFIG (0 if none)."""
    return task()[1]
