"""Normalization choices for the model family, in one registry.

A model takes ``norm="bn" | "gn" | "ln" | "none" | "mixbn"``; each name maps
to a factory ``(channels, name, **norm_kwargs) -> keras.layers.Layer``.  The
registry is filled where each normalizer is defined (MixBN registers itself in
``mixbn.py``), so adding one never touches the model code.
"""

import keras

NORMS = {}


def register_norm(name):
    """Decorator: registers ``fn(channels, name, **kwargs)`` under ``name``."""

    def wrap(fn):
        if name in NORMS:
            raise ValueError(f"norm {name!r} is already registered")
        NORMS[name] = fn
        return fn

    return wrap


def make_norm(norm, channels, name, **kwargs):
    """Returns the normalization layer ``norm`` for ``channels`` features."""
    if norm not in NORMS:
        raise ValueError(
            f"Unknown norm. Expected one of {sorted(NORMS)}. Received: norm={norm!r}"
        )
    return NORMS[norm](channels, name=name, **kwargs)


# PyTorch-style BN constants (momentum 0.9 in Keras terms, eps 1e-5), as in the
# paper authors' TF code; Keras' default momentum 0.99 lags badly in short runs.
BN_DEFAULTS = {"momentum": 0.9, "epsilon": 1e-5}


@register_norm("bn")
def _batch_norm(channels, name, **kwargs):
    return keras.layers.BatchNormalization(name=name, **{**BN_DEFAULTS, **kwargs})


def _groups_for(channels, groups):
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


@register_norm("gn")
def _group_norm(channels, name, groups=32, **kwargs):
    # Wu & He use 32 groups; narrow CIFAR stages (16 channels) get the largest
    # divisor of the channel count below that.
    return keras.layers.GroupNormalization(
        groups=_groups_for(channels, groups), epsilon=1e-5, name=name, **kwargs
    )


@register_norm("ln")
def _layer_norm(channels, name, **kwargs):
    # Layer norm for conv features = one group over (H, W, C) per example.
    return keras.layers.GroupNormalization(groups=1, epsilon=1e-5, name=name, **kwargs)


@register_norm("none")
def _no_norm(channels, name, **kwargs):
    return keras.layers.Identity(name=name)
