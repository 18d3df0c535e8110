"""Every layer inside a model, nested ones included.

Keras has no public API for this: ``Model.layers`` lists one level only, and
a plain ``keras.layers.Layer`` (e.g. ``models.resnet.Recompute``, which holds
a residual block as a Keras model) lists none. ``Layer._flatten_layers`` is
what Keras itself uses (``Trainer._symbolic_build``, ``Model.layers`` of a
subclassed model), so this module is the one place that calls it;
``tests/test_private_api.py`` fails first if Keras changes it.
"""


def sublayers(layer):
    """All layers tracked by ``layer``, depth first, each once, without
    ``layer`` itself; the order is stable for a model and its clone."""
    return list(layer._flatten_layers(include_self=False, recursive=True))
