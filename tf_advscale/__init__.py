"""tf_advscale: adversarial training at scale for Keras 3 / TensorFlow."""

__version__ = "0.1.0"
