"""The one recipe builder: a config and its data -> the compiled ``AdversarialModel``.

``advscale train`` (``runner``) and the depth search (``tuning.DepthSearch``)
build their models here, so that a key of the config means the same thing
to both. Config keys are constructor arguments:

    config["model"]     resnet(**config["model"])        (plus the data's classes and shape)
    config["trainer"]   AdversarialModel(**trainer)      (plus attack, eval_attack and seed
                                                          from the top level), less:
        jit_compile, steps_per_execution   model.compile's arguments
        precision                          the dtype policy the model is built under
                                           (mixed_float16: a dynamic loss scale;
                                           "auto": ``resolve_precision``)
        catastrophic_overfitting           a callback (``overfitting_monitor``) on held-out data
    config["optimizer"] keras SGD; its learning rate ``schedules.learning_rate``
    config["init_from"] the weights a fresh run starts from (``warm_start``)

A trainer key that is neither an ``AdversarialModel`` argument nor listed
above is an error here, not a key that some caller silently drops.
"""

import inspect
import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_advscale import distribute, schedules
from tf_advscale.config import ConfigError
from tf_advscale.models import resnet
from tf_advscale.callbacks import CatastrophicOverfittingMonitor
from tf_advscale.training import AdversarialModel

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
# Trainer keys that are not AdversarialModel's arguments, and where they go.
COMPILE_KEYS = ("jit_compile", "steps_per_execution")
NOT_TRAINER_ARGS = COMPILE_KEYS + ("precision", "catastrophic_overfitting")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision must be one of {PRECISIONS}. "
                          f"Received: {precision!r}")
    return precision


def resolve_precision(precision, strategy="default", cpuinfo="/proc/cpuinfo"):
    """``trainer.precision`` as a Keras dtype policy name. A concrete name is
    returned as given; ``"auto"`` picks by the hardware:

    - a TPU (``strategy="tpu"``, or one attached to this host), or GPUs of
      compute capability 8.0 or newer: ``mixed_bfloat16``;
    - GPUs of compute capability 7.x: ``mixed_float16`` (their tensor cores
      have float16, not bfloat16); with several GPUs the oldest decides;
    - an x86 CPU with native bfloat16 (``avx512_bf16`` or ``amx_bf16``):
      ``mixed_bfloat16``;
    - anything else: ``float32``, including GPUs that report no compute
      capability and ARM CPUs (bfloat16 there is not measured).

    Only physical devices are listed, so TensorFlow's runtime is not started
    (threads and collectives are still configurable afterwards).

    Measured: on a CPU without native bfloat16, mixed bfloat16 made the
    N-FGSM training step several times slower than float32
    (``results/bench_precision_amd_epyc.json``). It was faster on the CPU of
    ``results/bench_fast_training.json``, whose flags that file does not
    record; that native bfloat16 makes it faster is the rule's assumption.
    ``runner.run`` settles ``"auto"`` once per work directory, so that a
    run resumed on other hardware keeps the precision it started with.
    """
    check_precision(precision)
    if precision != "auto":
        return precision
    if strategy == "tpu" or tf.config.list_physical_devices("TPU"):
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        oldest = min(tuple(tf.config.experimental.get_device_details(gpu).get(
            "compute_capability") or (0, 0)) for gpu in gpus)
        if oldest >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if oldest >= (7, 0) else "float32"
    native = distribute.cpu_info(cpuinfo)["flags"] & set(distribute.BF16_CPU_FLAGS)
    return "mixed_bfloat16" if native else "float32"


def build(config, info, **model):
    """The compiled ``AdversarialModel`` that ``config`` describes.

    Args:
        config: a full config (``config.merge`` / ``config.load``);
            ``attack`` and ``eval_attack`` may also be ``Attack`` objects.
        info: of the training data: ``num_classes``, ``shape`` (H, W, C) and
            ``steps_per_epoch`` (the learning-rate schedule's unit), as
            ``data.load`` returns it.
        **model: ``config["model"]`` keys to override (a tuner's depth and width).

    The classifier and trainer are built under ``trainer.precision``'s
    dtype policy, ``"auto"`` resolved by ``resolve_precision`` (the caller's
    policy is restored afterwards).
    """
    unknown = sorted(set(model) - set(config["model"]))
    if unknown:
        raise ValueError(f"model overrides must be config['model'] keys. Received: {unknown}")
    precision = resolve_precision(config["trainer"]["precision"],
                                  strategy=config["distribute"]["strategy"])
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        classifier = resnet(num_classes=info["num_classes"], input_shape=info["shape"],
                            **{**config["model"], **model})
        trainer = AdversarialModel(classifier, **_trainer_kwargs(config))
        t = config["trainer"]
        trainer.compile(optimizer=_optimizer(config, info["steps_per_epoch"], precision),
                        jit_compile=distribute.resolve_jit(t["jit_compile"]),
                        steps_per_execution=t["steps_per_execution"])
    finally:
        keras.config.set_dtype_policy(previous)
    return trainer


def _trainer_kwargs(config):
    t = config["trainer"]
    kwargs = {k: v for k, v in t.items() if k not in NOT_TRAINER_ARGS}
    known = inspect.signature(AdversarialModel.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise ConfigError(f"trainer keys {unknown} are neither AdversarialModel arguments "
                          f"nor one of {NOT_TRAINER_ARGS}")
    kwargs["attack_jit_compile"] = distribute.resolve_jit(t["attack_jit_compile"])
    return dict(kwargs, attack=config["attack"], eval_attack=config["eval_attack"],
                seed=int(config["seed"]))


def _optimizer(config, steps_per_epoch, precision):
    o = config["optimizer"]
    if o["name"] != "sgd":
        raise ConfigError(f"optimizer.name: only 'sgd' is supported. Received: {o['name']!r}")
    schedule = schedules.learning_rate(
        o["learning_rate"], steps_per_epoch, o["epochs"], o["schedule"],
        warmup_epochs=o["warmup_epochs"], decay_epochs=o["decay_epochs"],
        peak_epoch=o["peak_epoch"])
    optimizer = keras.optimizers.SGD(schedule, momentum=o["momentum"], nesterov=o["nesterov"])
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # dynamic loss scale
    return optimizer


def overfitting_monitor(config, validation_data):
    """``trainer.catastrophic_overfitting``'s monitor, on the first batch of
    ``validation_data`` (a ``tf.data.Dataset`` of (images, labels)); None when off."""
    if not config["trainer"]["catastrophic_overfitting"]:
        return None
    if not isinstance(validation_data, tf.data.Dataset):
        raise ValueError("trainer.catastrophic_overfitting needs validation_data as a "
                         f"tf.data.Dataset. Received: {type(validation_data).__name__}")
    x, y = next(iter(validation_data))
    return CatastrophicOverfittingMonitor(x, y)


ZOO_PREFIX = "zoo:"


def check_init_from(value, exists=True):
    """Raises ConfigError unless ``init_from`` is None, ``"zoo:NAME"`` or the
    path of a .keras file; with ``exists``, unless that entry or file
    exists too (a resumed run needs neither: it restores its own weights)."""
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError("init_from must be None, 'zoo:NAME' or the path of a .keras file. "
                          f"Received: {value!r}")
    if value.startswith(ZOO_PREFIX):
        from tf_advscale import zoo
        try:
            zoo.check_name(value[len(ZOO_PREFIX):])
            if exists:
                zoo.info(value[len(ZOO_PREFIX):])
        except zoo.ZooError as e:
            raise ConfigError(f"init_from={value!r}: {e}") from e
    elif not value.endswith(".keras"):
        raise ConfigError(f"init_from={value!r}: only .keras files are read (or 'zoo:NAME')")
    elif exists and not os.path.isfile(os.path.expanduser(value)):
        raise ConfigError(f"init_from={value!r}: no such file")


def init_source_exists(value):
    """Whether ``init_from``'s entry or file is there to be read."""
    try:
        check_init_from(value)
    except ConfigError:
        return False
    return value is not None


def load_init_source(value):
    """``(classifier, record)`` for ``init_from`` (``check_init_from``'s
    forms): a zoo entry through ``zoo.load`` (its size, sha256 and
    architecture checked), or a .keras file holding a classifier or a
    trained ``AdversarialModel`` (whose classifier is taken); a file holding
    Python code is refused as the zoo refuses it. ``record`` says what was
    loaded: ``init_from``, ``sha256`` of the file and, for a zoo entry, its
    ``zoo_entry`` name. Load it outside a distribution strategy's scope: its
    variables are read, never trained."""
    from tf_advscale import files, zoo

    check_init_from(value)
    try:
        if value.startswith(ZOO_PREFIX):
            name = value[len(ZOO_PREFIX):]
            source, meta = zoo.load(name)
            return source, {"init_from": value, "zoo_entry": name,
                            "sha256": meta["source"]["sha256"]}
        path = os.path.expanduser(value)
        zoo.refuse_code(path, path)
        source = keras.saving.load_model(path, compile=False, safe_mode=True)
    except zoo.ZooError as e:
        raise ConfigError(f"init_from={value!r}: {e}") from e
    if isinstance(source, AdversarialModel):
        source = source.model
    return source, {"init_from": value, "zoo_entry": None, "sha256": files.sha256(path)}


def _standardisation(model):
    from tf_advscale.layers import walk
    from tf_advscale.models.resnet import Standardize
    return [(np.asarray(l.mean, "float64"), np.asarray(l.std, "float64"))
            for l in walk.sublayers(model) if isinstance(l, Standardize)]


def check_init_skip(config):
    """Raises ConfigError unless ``init_skip`` is a list of layer names,
    empty without ``init_from``."""
    skip = config["init_skip"]
    if not isinstance(skip, (list, tuple)) or not all(isinstance(n, str) and n for n in skip):
        raise ConfigError(f"init_skip must be a list of layer names. Received: {skip!r}")
    if skip and not config["init_from"]:
        raise ConfigError(f"init_skip={list(skip)!r} needs init_from (it names layers that "
                          "init_from leaves at their initializers)")


def _compared(model, skip):
    """``model``, or with ``skip`` the model up to the input of the first
    skipped layer (a layer of its top level), whose outputs are compared."""
    if not skip:
        return model
    index = {l.name: i for i, l in enumerate(model.layers)}
    missing = [n for n in skip if n not in index]
    if missing:
        raise ConfigError(f"init_skip={list(skip)!r}: {missing} are not layers of "
                          f"{model.name!r}'s top level ({[l.name for l in model.layers]}), "
                          "so the outputs before them cannot be compared")
    first = model.layers[min(index[n] for n in skip)]
    return keras.Model(model.inputs, first.input)


def warm_start(classifier, source, record=None, skip=()):
    """Sets ``classifier``'s weights from ``source`` (``load_init_source``'s
    classifier) with ``mixbn.copy_weights``: layer by layer, names and
    shapes equal, a BatchNormalization filling every domain of a MixBN, a
    MixBN ``source`` into a model without MixBN giving the domain of the
    route ``source`` is on (a zoo entry's default route as loaded, a
    .keras file's route as saved); the layers named in ``skip`` (``init_skip``; of the models' top level, e.g.
    ``["logits"]`` for another number of classes) keep their initializers.
    Then both models classify the same seeded random images in inference
    mode, on each of ``classifier``'s MixBN routes (its routes are restored
    afterwards), and must give the same logits (with ``skip``, the same
    inputs to the first skipped layer): this catches what the weights alone
    do not show (another activation, padding or BN epsilon). The input
    standardisation must be the same too. Returns ``record``
    (``load_init_source``'s) with ``bn_into_mixbn``, whether BN weights
    filled MixBN domains, ``domain``, the source's MixBN domain taken into
    BatchNormalizations (or None), and ``skipped``. Raises ConfigError
    naming ``init_from``."""
    from tf_advscale.layers import mixbn

    record = dict(record or {"init_from": "the source model"})
    what = f"init_from={record['init_from']!r}"
    compared = {id(m): _compared(m, skip) for m in (source, classifier)}
    theirs, ours = _standardisation(source), _standardisation(classifier)
    if len(theirs) != len(ours) or not all(
            m.shape == n.shape and s.shape == t.shape and np.allclose(m, n) and np.allclose(s, t)
            for (m, s), (n, t) in zip(theirs, ours)):
        raise ConfigError(f"{what} standardises its inputs with mean/std "
                          f"{[(m.tolist(), s.tolist()) for m, s in theirs]}, config['model'] "
                          f"with {[(m.tolist(), s.tolist()) for m, s in ours]}")
    layers, theirs = mixbn.mixbn_layers(classifier), mixbn.mixbn_layers(source)
    domain = None
    if theirs and not layers:
        on = sorted({l.route for l in theirs})
        if len(on) != 1:
            raise ConfigError(f"{what}: its MixBN layers are on different routes {on}, so "
                              "which domain to take into config['model']'s "
                              "BatchNormalizations is not defined")
        domain = on[0]
    try:
        mixbn.copy_weights(source, classifier, skip=skip, domain=domain)
    except ValueError as e:
        raise ConfigError(f"{what} does not fit config['model']: {e}") from e
    x = np.random.default_rng(0).uniform(
        size=(2,) + tuple(classifier.input_shape[1:])).astype("float32")
    routes = [int(ops.convert_to_numpy(l.route_index)) for l in layers + theirs]

    def logits(model):
        out = compared[id(model)](x, training=False)
        return ops.convert_to_numpy(ops.cast(out, "float32"))

    try:
        for route in (layers[0].domains if layers else [None]):
            if route is not None:
                mixbn.set_route(classifier, route)
                if theirs:  # copy_weights checked that the domains are the same
                    mixbn.set_route(source, route)
            want, got = logits(source), logits(classifier)
            # Mixed precision computes in 16 bits: its logits differ by more.
            exact = classifier.compute_dtype == source.compute_dtype == "float32"
            tol = (1e-3 if exact else 5e-2) * (1 + np.abs(want).max())
            if got.shape != want.shape or np.abs(got - want).max() > tol:
                where = (f" on the {route} route" if route else
                         f" (the source on its {domain} route)" if domain else "")
                diff = (f"differ by up to {np.abs(got - want).max():.3g}"
                        if got.shape == want.shape else f"have shape {got.shape}, not {want.shape}")
                outputs = (f"inputs to {list(skip)}" if skip else "logits")
                raise ConfigError(f"{what}: with the copied weights, config['model']'s "
                                  f"{outputs}{where} {diff} from the source's (tolerance "
                                  f"{tol:.3g}): another activation, padding or normalisation "
                                  "setting?")
    finally:
        for layer, index in zip(layers + theirs, routes):
            layer.route_index.assign(index)
    return dict(record, bn_into_mixbn=bool(layers) and not theirs, domain=domain,
                skipped=list(skip))
