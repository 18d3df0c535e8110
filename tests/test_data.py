import gzip
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_advscale import data
from tf_advscale.data import CIFAR10_CLASSES, DataError


def test_sample_pipeline_shapes_range_and_labels():
    ds, info = data.load("fashion_mnist_sample", "train", batch_size=32)
    x, y = next(iter(ds))
    assert x.shape == (32, 28, 28, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert info["num_examples"] == 2000 and info["num_classes"] == 10
    assert info["classes"][0] == "T-shirt/top"


def test_seeded_order_and_augmentation_are_deterministic():
    def first(seed):
        ds, _ = data.load("fashion_mnist_sample", "train", batch_size=16, seed=seed)
        return [b[0].numpy() for b in ds.take(2)]
    a, b, c = first(1), first(1), first(2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_epochs_reshuffle_and_reaugment():
    ds, _ = data.load("fashion_mnist_sample", "train", batch_size=2000, seed=0)
    e1, e2 = [b[0].numpy() for b in ds], [b[0].numpy() for b in ds]
    assert not np.array_equal(e1[0], e2[0])


def test_eval_split_is_unaugmented_and_ordered():
    x1, y1, _ = data.as_numpy("fashion_mnist_sample", "test")
    raw = np.load(data.SAMPLE_PATH)
    np.testing.assert_array_equal(y1, raw["test_labels"])
    np.testing.assert_allclose(x1, raw["test_images"] / 255.0, atol=1e-6)


def test_subsets_by_count_and_by_ids():
    _, info = data.load("fashion_mnist_sample", "test", subset=100, seed=3)
    assert info["num_examples"] == 100 and len(set(info["ids"])) == 100
    x, y, info = data.as_numpy("fashion_mnist_sample", "test", subset=[5, 0, 7])
    raw = np.load(data.SAMPLE_PATH)
    np.testing.assert_array_equal(y, raw["test_labels"][[5, 0, 7]])
    with pytest.raises(DataError, match="subset"):
        data.load("fashion_mnist_sample", "test", subset=10_000)


def test_fashion_mnist_idx_full(fmnist_idx):
    x, y = data.load_idx(str(fmnist_idx), "train")
    assert x.shape == (60000, 28, 28, 1) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10
    xt, yt = data.load_idx(str(fmnist_idx), "test")
    assert xt.shape == (10000, 28, 28, 1) and np.bincount(yt).tolist() == [1000] * 10
    # The shipped sample is the head of the original files.
    raw = np.load(data.SAMPLE_PATH)
    np.testing.assert_array_equal(raw["train_images"], x[:2000])


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + b"\x00" * 20)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        data.read_idx(str(bad))
    (tmp_path / "x.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="x.gz"):
        data.read_idx(str(tmp_path / "x.gz"))
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        data.load("fashion_mnist", "train", path=str(tmp_path / "missing"))


def _png_folder(root, classes, per_class=3, size=8):
    import PIL.Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                PIL.Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(d / f"{i}.png")


def test_folder_loader_on_a_small_folder(tmp_path):
    _png_folder(tmp_path, ["b", "a", "c"])
    x, y, info = data.as_numpy("tiny", "train", source="folder", path=str(tmp_path))
    assert info["classes"] == ("a", "b", "c")  # sorted for unknown data sets
    assert x.shape == (9, 8, 8, 3) and sorted(y.tolist()) == [0] * 3 + [1] * 3 + [2] * 3


def test_folder_errors_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="not found"):
        data.load("tiny", "train", source="folder", path=str(tmp_path / "nope"))
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="has no images"):
        data.load("tiny", "train", source="folder", path=str(tmp_path))
    with pytest.raises(DataError, match="source='disk'"):
        data.load("tiny", "train", source="disk")
    with pytest.raises(DataError, match="Class folders"):
        data.load("cifar10", "train", source="folder", path=str(tmp_path))


def test_cifar10_jpeg_counts_and_class_order(cifar_jpeg):
    for split, n in (("train", 5000), ("test", 1000)):
        files, labels, classes = data.folder_files(str(cifar_jpeg), split, CIFAR10_CLASSES)
        assert classes == CIFAR10_CLASSES
        assert np.bincount(labels).tolist() == [n] * 10
        assert all(os.path.basename(os.path.dirname(f)) == CIFAR10_CLASSES[l]
                   for f, l in zip(files[::997], labels[::997]))


def test_cifar10_jpeg_reads_all_60000_images(cifar_jpeg):
    total, counts = 0, np.zeros(10, int)
    for split in ("train", "test"):
        ds, info = data.load("cifar10", split, path=str(cifar_jpeg), batch_size=1000,
                             shuffle=False, augment=False, drop_remainder=False, cache=False,
                             num_parallel_calls=2)
        for x, y in ds:
            assert x.shape[1:] == (32, 32, 3)
            total += int(x.shape[0])
            counts += np.bincount(y.numpy(), minlength=10)
    assert total == 60000 and counts.tolist() == [6000] * 10


def test_tfds_source_reads_a_prepared_dataset_on_disk(tmp_path):
    """The tensorflow-datasets path, on a real prepared data set on disk (the
    download itself cannot run here): the sample, written in tfds' format
    under the name fashion_mnist, read back through ``load(source="tfds")``."""
    import tensorflow_datasets as tfds
    raw = np.load(data.SAMPLE_PATH)
    features = tfds.builder("fashion_mnist").info.features
    splits = {s: tf.data.Dataset.from_tensor_slices(
        {"image": raw[f"{s}_images"], "label": raw[f"{s}_labels"].astype(np.int64)})
        for s in ("train", "test")}
    version = str(tfds.builder("fashion_mnist").info.version)
    tfds.dataset_builders.store_as_tfds_dataset(
        name="fashion_mnist", version=version, data_dir=str(tmp_path), features=features,
        split_datasets=splits)
    x, y, info = data.as_numpy("fashion_mnist", "test", source="tfds", data_dir=str(tmp_path),
                               download=False)
    assert info["classes"] == data.FASHION_MNIST_CLASSES and info["num_examples"] == 500
    # Same images and labels as the sample, whatever order tfds stored them in.
    key = lambda imgs, labs: sorted(zip(labs.tolist(), (imgs.reshape(len(imgs), -1) * 255)
                                        .round().astype(int).sum(1).tolist()))
    assert key(x, y) == key(raw["test_images"] / 255.0, raw["test_labels"])
