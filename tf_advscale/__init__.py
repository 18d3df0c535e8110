"""tf_advscale: adversarial training at scale for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

# Before anything imports TensorFlow: its oneDNN CPU kernels, where it would
# leave them off (tf_advscale.cpu_kernels).
from tf_advscale import cpu_kernels  # noqa: E402

cpu_kernels.prefer_onednn()

# Importing the package registers every serializable class (layers, models,
# attacks, the adversarial model), so `keras.saving.load_model` finds them.
from tf_advscale import attacks, callbacks, layers, models, schedules, training  # noqa: E402,F401
