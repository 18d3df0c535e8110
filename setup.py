"""tf_advscale: adversarial training at scale for Keras 3 / TensorFlow."""

import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "tf_advscale", "__init__.py")) as f:
    # Read, not imported or executed: the package imports TensorFlow, which a
    # fresh environment installs only after this file has run.
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


# Model files larger than this stay in the repository and out of the wheel
# (a PreActResNet-18 is about 45 MB): an installed package takes them from the
# cache, downloaded from the entry's URL (tf_advscale/zoo.py).
LARGE_MODEL_BYTES = 20 * 2**20


def zoo_files():
    """The top-level zoo/ folder is installed with the package, but for its
    large model files."""
    out = []
    for root, _, files in os.walk(os.path.join(here, "zoo")):
        rel = os.path.relpath(root, here)
        kept = [f for f in sorted(files)
                if not (f.endswith(".keras")
                        and os.path.getsize(os.path.join(root, f)) > LARGE_MODEL_BYTES)]
        if kept:
            out.append((os.path.join("share", "tf_advscale", rel),
                        [os.path.join(rel, f) for f in kept]))
    return out


setup(
    name="tf_advscale",
    version=VERSION,
    description="Adversarial training at scale for Keras 3 / TensorFlow "
                "(Xie & Yuille, ICLR 2020, as tested building blocks)",
    long_description=open(os.path.join(here, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["tf_advscale", "tf_advscale.*"]),
    # The command's parser, outside the package so that `advscale --help` and
    # argument errors do not import TensorFlow (tf_advscale/__init__.py does).
    py_modules=["advscale_cli"],
    package_data={"tf_advscale": ["_data/*.npz", "_data/*.md"]},
    data_files=zoo_files(),
    install_requires=[
        # TF 2.21 + Keras 3.15 is the tested pair; the CPU build is enough
        # here, users with GPUs install `tensorflow[and-cuda]` instead.
        "tensorflow-cpu>=2.20,<2.22; platform_system=='Linux' and platform_machine=='x86_64'",
        "tensorflow>=2.20,<2.22; platform_system!='Linux' or platform_machine!='x86_64'",
        "keras>=3.12,<3.16",
        "keras-tuner[bayesian]>=1.4.7,<1.5",  # [bayesian]: scipy, for BayesianOptimization
        "tensorflow-datasets>=4.9.9,<4.10",
        "importlib_resources>=6",  # tensorflow-datasets imports it without declaring it
        "tensorboard>=2.20,<2.22",  # tensorflow-cpu does not pull it in
        # No absl-py: nothing here imports it (runner's log is stdlib logging).
        "numpy>=1.26,<2.5",
        "matplotlib>=3.8,<3.12",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "hypothesis>=6.100,<7", "pytest-xdist>=3.5,<4"],
        # The PyTorch twin (tf_advscale.bridge) and its tests; the CPU wheel.
        "torch": ["torch==2.13.0"],
        "bench": ["torch==2.13.0", "torchattacks==3.5.1",
                  "adversarial-robustness-toolbox==1.20.1"],
    },
    entry_points={"console_scripts": ["advscale=advscale_cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
