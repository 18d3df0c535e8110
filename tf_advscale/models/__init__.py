"""Model family: ResNets of any depth from one table."""

from tf_advscale.models.registry import MODELS, build_model, list_models, register_model
from tf_advscale.models.resnet import (DEPTHS, ResNetBackbone, ResNetClassifier,
                                       Standardize, blocks_for, resnet)


def count_params(model):
    """Trainable parameters: the standard count (BN moving statistics excluded)."""
    return sum(_size(v.shape) for v in model.trainable_weights)


def _size(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n
