"""The one recipe builder: a config and its data -> the compiled ``AdversarialModel``.

``advscale train`` (``runner``) and the depth search (``tuning.DepthSearch``)
build their models here, so that a key of the config means the same thing
to both. Config keys are constructor arguments:

    config["model"]     resnet(**config["model"])        (plus the data's classes and shape)
    config["trainer"]   AdversarialModel(**trainer)      (plus attack, eval_attack and seed
                                                          from the top level), less:
        jit_compile, steps_per_execution   model.compile's arguments
        precision                          the dtype policy the model is built under
                                           (mixed_float16: a dynamic loss scale)
        catastrophic_overfitting           a callback (``overfitting_monitor``) on held-out data
    config["optimizer"] keras SGD; its learning rate ``schedules.learning_rate``

A trainer key that is neither an ``AdversarialModel`` argument nor listed
above is an error here, not a key that some caller silently drops.
"""

import inspect

import keras
import tensorflow as tf

from tf_advscale import distribute, schedules
from tf_advscale.config import ConfigError
from tf_advscale.models import resnet
from tf_advscale.callbacks import CatastrophicOverfittingMonitor
from tf_advscale.training import AdversarialModel

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Trainer keys that are not AdversarialModel's arguments, and where they go.
COMPILE_KEYS = ("jit_compile", "steps_per_execution")
NOT_TRAINER_ARGS = COMPILE_KEYS + ("precision", "catastrophic_overfitting")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision must be one of {PRECISIONS}. "
                          f"Received: {precision!r}")
    return precision


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
    dtype policy (the caller's policy is restored afterwards).
    """
    unknown = sorted(set(model) - set(config["model"]))
    if unknown:
        raise ValueError(f"model overrides must be config['model'] keys. Received: {unknown}")
    precision = check_precision(config["trainer"]["precision"])
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        classifier = resnet(num_classes=info["num_classes"], input_shape=info["shape"],
                            **{**config["model"], **model})
        trainer = AdversarialModel(classifier, **_trainer_kwargs(config))
        t = config["trainer"]
        trainer.compile(optimizer=_optimizer(config, info["steps_per_epoch"]),
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


def _optimizer(config, steps_per_epoch):
    o = config["optimizer"]
    if o["name"] != "sgd":
        raise ConfigError(f"optimizer.name: only 'sgd' is supported. Received: {o['name']!r}")
    schedule = schedules.learning_rate(
        o["learning_rate"], steps_per_epoch, o["epochs"], o["schedule"],
        warmup_epochs=o["warmup_epochs"], decay_epochs=o["decay_epochs"],
        peak_epoch=o["peak_epoch"])
    optimizer = keras.optimizers.SGD(schedule, momentum=o["momentum"], nesterov=o["nesterov"])
    if config["trainer"]["precision"] == "mixed_float16":
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
