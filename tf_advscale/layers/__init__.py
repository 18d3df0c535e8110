"""Layers: the normalization registry and the domain-routed MixBN."""

from tf_advscale.layers.mixbn import (MixBN, convert, mixbn_layers, route,
                                      set_batch_stats_at_inference, set_route, split)
from tf_advscale.layers.norms import NORMS, make_norm, register_norm
