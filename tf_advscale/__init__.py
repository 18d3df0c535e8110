"""tf_advscale: adversarial training at scale for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

# Importing the package registers every serializable class (layers, models,
# attacks, the adversarial model), so `keras.saving.load_model` finds them.
from tf_advscale import attacks, callbacks, layers, models, schedules, training  # noqa: E402,F401
