import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import pytest

# The package first, as a user's program imports it: it asks for TensorFlow's
# oneDNN kernels before TensorFlow loads (tf_advscale.cpu_kernels).
import tf_advscale  # noqa: F401,E402  isort: skip
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so tf.distribute tests can run MirroredStrategy
# on this machine; must happen before TensorFlow initialises its devices.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
    pass

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_JPEG = SHARED_DATA / "cifar10-jpeg"
FMNIST_IDX = pathlib.Path("/usr/share/datasets/fashion-mnist")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a heavy test (subprocess training, kills and "
                            "resumes, multi-worker, searches, published-entry re-measurements); "
                            "run by hand (-m \"slow and not long\"), not in CI")
    config.addinivalue_line("markers", "long: a test over CI's time budget (full-size models, "
                            "minutes-long training); run by hand (-m long), never in CI, even "
                            "where also marked slow")


@pytest.fixture
def cifar_jpeg():
    if not (CIFAR_JPEG / "train").is_dir():
        pytest.skip(f"CIFAR-10 JPEG folder not found at {CIFAR_JPEG} (../shared/data is absent)")
    return CIFAR_JPEG


@pytest.fixture
def fmnist_idx():
    if not (FMNIST_IDX / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST IDX files not found in {FMNIST_IDX} "
                    "(apt-get install dataset-fashion-mnist)")
    return FMNIST_IDX


@pytest.fixture(scope="session")
def sample():
    """Real Fashion-MNIST images from the package sample: (x in [0,1], y)."""
    from tf_advscale import data
    x, y, _ = data.as_numpy("fashion_mnist_sample", "test")
    return x, y


@pytest.fixture(scope="session")
def trained():
    """A small model trained on the sample's training split (over 50% test
    accuracy), so that gradients and probabilities are meaningful."""
    import keras

    from tf_advscale import data
    from tf_advscale.models import resnet
    from tf_advscale.training import AdversarialModel
    x, y, _ = data.as_numpy("fashion_mnist_sample", "train")
    keras.utils.set_random_seed(0)
    m = resnet(8, 10, input_shape=(28, 28, 1))
    am = AdversarialModel(m, attack=None)
    am.compile(optimizer=keras.optimizers.Adam(2e-3))
    am.fit(x, y, batch_size=64, epochs=4, verbose=0)
    return m
