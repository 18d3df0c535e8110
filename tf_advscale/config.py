"""Experiment configs: one readable Python file per experiment.

A config file defines ``get_config(runlocal=False) -> dict``. The dict is
merged over ``DEFAULTS`` below; every key must exist there (a mistyped key
is an error that names it and suggests the closest known key). Attack specs
(``attack``, ``eval_attack``) and ``norm_kwargs`` are free-form dicts checked
by the code that consumes them.
"""

import ast
import copy
import difflib
import importlib.util
import os

DEFAULTS = {
    "seed": 0,
    "deterministic": False,
    # The weights a fresh run starts from (a resumed run restores its own):
    # None (the initializers), "zoo:NAME" (a zoo entry) or a .keras file (a
    # classifier, or a run's final.keras / best.keras). The architecture must
    # match config["model"], except that a BatchNormalization's weights fill
    # every domain of a MixBN (fine-tuning a model into MixBN);
    # tf_advscale.recipe.warm_start.
    "init_from": None,
    # Layers init_from leaves at their initializers, e.g. ["logits"] to
    # fine-tune on another number of classes.
    "init_skip": [],
    "threads": {"intra_op": 2, "inter_op": 1},
    "data": {
        "dataset": "fashion_mnist_sample",
        "source": None,
        "path": None,
        "data_dir": None,
        "manual_dir": None,
        "batch_size": 128,
        "image_size": None,
        "augment": True,
        "train_subset": None,
        "test_subset": None,
        # The split validation and the final evaluation read (imagenet2012: "validation").
        "eval_split": "test",
        # Where validation (best checkpoint, the catastrophic-overfitting monitor)
        # reads: None, eval_split; "train", eval.val_subset training images held
        # out of training (tf_advscale.data.holdout_ids, seed 0).
        "val_split": None,
        "num_parallel_calls": 1,
    },
    "model": {
        "depth": 8,
        "family": "cifar",
        "norm": "bn",
        "norm_kwargs": {},
        "width": 1.0,
        "preact": False,
        "zero_init_residual": False,
        # Gradient checkpointing: recompute each residual block in the backward pass.
        "recompute": False,
        "activation": "relu",
        # Stride-2 conv padding: None = the family's ("symmetric" for preact/wide).
        "padding": None,
        # Input standardisation inside the model (numbers or per-channel lists).
        "mean": 0.5,
        "std": 0.5,
    },
    # Training attack; None = standard training.
    "attack": {"name": "pgd", "epsilon": 0.1, "step_size": 0.025, "steps": 7},
    # Attack reported by validation and the final evaluation; None = clean only.
    "eval_attack": {"name": "pgd", "epsilon": 0.1, "step_size": 0.01, "steps": 20},
    "trainer": {
        "clean_portion": 0.0,
        "mixing": "joint",
        "alp_weight": 0.0,
        "label_smoothing": 0.0,
        "weight_decay": 5e-4,
        "attack_bn": "inference",
        "attack_route": "adversarial",
        # XLA: False | True | "auto" (on only with a GPU/TPU; slower on CPU).
        "attack_jit_compile": False,
        "jit_compile": False,
        "steps_per_execution": 1,
        "catastrophic_overfitting": False,
        # float32 | mixed_bfloat16 | mixed_float16 (dynamic loss scaling) | auto
        # (by the hardware, fixed per work directory: recipe.resolve_precision)
        "precision": "float32",
    },
    "optimizer": {
        "name": "sgd",
        "learning_rate": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "decay_epochs": [],
        # "cyclic" only: the epoch of the peak (None: 2/5 of the run).
        "peak_epoch": None,
        "epochs": 6,
    },
    # tf_advscale.distribute.make_strategy: default | mirrored | multi_worker
    # (TF_CONFIG) | tpu (untested here). data.batch_size is per replica.
    "distribute": {"strategy": "default", "tpu": None},
    # Step-level training state in WORKDIR/state (see tf_advscale.checkpoint).
    "checkpoint": {"every_steps": 100, "keep": 2},
    "eval": {
        "val_subset": 500,
        "val_every": 1,
        "test_subset": None,
        "route": "adversarial",
    },
}

FREE_FORM = {("attack",), ("eval_attack",), ("model", "norm_kwargs")}


class ConfigError(ValueError):
    """A config is malformed or has unknown keys."""


def _merge(base, update, path=()):
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise ConfigError(f"config{''.join(f'[{p!r}]' for p in path)} must be a dict. "
                          f"Received: {update!r}")
    for key, value in update.items():
        where = ".".join(path + (str(key),))
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f" Did you mean {'.'.join(path + (close[0],))!r}?" if close else ""
            raise ConfigError(f"Unknown config key {where!r}.{hint} "
                              f"Known keys here: {sorted(base)}")
        if path + (key,) in FREE_FORM:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"config key {where!r} must be a dict or None. Received: {value!r}")
            out[key] = copy.deepcopy(value)
        elif isinstance(base[key], dict):
            out[key] = _merge(base[key], value, path + (key,))
        else:
            out[key] = value
    return out


def differences(a, b, prefix=""):
    """``"key.path (a -> b)"`` for every leaf where configs ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from differences(a.get(k), b.get(k), f"{prefix}{k}.")
    elif a != b:
        yield f"{prefix[:-1]} ({a!r} -> {b!r})"


def merge(update):
    """``DEFAULTS`` updated with ``update``; unknown keys raise ConfigError."""
    return _merge(DEFAULTS, update or {})


def load_file(path, runlocal=False):
    """Runs the config file's ``get_config(runlocal[, arg])`` and returns the raw dict.

    ``path`` may end in ``:ARG`` (``configs/adversarial.py:fmnist,mixed_mixbn``);
    ARG is passed to ``get_config`` as ``arg``.
    """
    arg = None
    if ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    spec = importlib.util.spec_from_file_location("_advscale_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"Config file {path} has a syntax error: {e}") from e
    except Exception as e:  # the file is code: any failure is the config's
        raise ConfigError(f"Config file {path} failed while loading: "
                          f"{type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file {path} must define get_config(runlocal=False)")
    try:
        config = (module.get_config(runlocal=runlocal) if arg is None
                  else module.get_config(runlocal=runlocal, arg=arg))
    except Exception as e:
        raise ConfigError(f"{path}: get_config(arg={arg!r}) failed: "
                          f"{type(e).__name__}: {e}") from e
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: get_config() must return a dict. Received: {type(config).__name__}")
    return config


def parse_override(text):
    """``"a.b=value"`` -> (("a", "b"), value); the value is a Python literal
    when it parses as one, else a string."""
    if "=" not in text:
        raise ConfigError(f"An override is KEY=VALUE (e.g. optimizer.epochs=3). Received: {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return tuple(key.strip().split(".")), value


def apply_overrides(config, overrides):
    config = copy.deepcopy(config)
    for text in overrides or ():
        keys, value = parse_override(text)
        node = config
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return config


def load(path=None, runlocal=False, overrides=()):
    """The full, validated config: defaults <- file <- overrides."""
    config = merge(load_file(path, runlocal) if path else {})
    return merge(apply_overrides(config, overrides))
