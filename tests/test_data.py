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


def test_holdout_ids_are_disjoint_seeded_and_checked():
    train, held = data.holdout_ids(100, 10)
    assert len(train) == 90 and len(held) == 10 and not set(train) & set(held)
    assert list(train) == sorted(train) and set(train) | set(held) == set(range(100))
    again, held_again = data.holdout_ids(100, 10, train_n=30)
    np.testing.assert_array_equal(held_again, held)  # the held-out images do not move
    assert len(again) == 30 and set(again) <= set(train)
    assert not np.array_equal(data.holdout_ids(100, 10, seed=1)[1], held)
    with pytest.raises(DataError, match="held-out images must be in \\[1, 99\\].*Received: 100"):
        data.holdout_ids(100, 100)
    with pytest.raises(DataError, match="training images must be in \\[1, 90\\].*Received: 95"):
        data.holdout_ids(100, 10, train_n=95)
    assert data.split_size("fashion_mnist_sample", "train") == \
        data.load("fashion_mnist_sample", "train")[1]["num_examples"]


def test_validation_held_out_of_training(tmp_path):
    """data.val_split "train": validation (and so the best checkpoint and the
    catastrophic-overfitting monitor) reads training images that training
    never sees; the test set is left to the final evaluation."""
    from tf_advscale import config as config_lib
    from tf_advscale import runner
    config = config_lib.merge({"data": {"val_split": "train", "train_subset": 300},
                               "eval": {"val_subset": 64, "test_subset": 50}})
    (train, ti), (val, vi), (test, tei) = runner.load_data(config)
    n = data.split_size("fashion_mnist_sample", "train")
    assert ti["num_examples"] == 300 and vi["num_examples"] == 64 and vi["split"] == "train"
    assert not set(ti["ids"]) & set(vi["ids"]) and max(vi["ids"]) < n
    assert tei["split"] == "test" and tei["num_examples"] == 50
    xs, ys = data.as_numpy("fashion_mnist_sample", "train", subset=list(vi["ids"]))[:2]
    vx = np.concatenate([np.asarray(x) for x, _ in val])
    np.testing.assert_array_equal(vx, xs)  # unshuffled, unaugmented, every image
    # A resumed run's stream holds the same images (the hold-out is fixed).
    assert list(runner.load_train(config, 1, 1)[1]["ids"]) == list(ti["ids"])
    # The final evaluation's fingerprint is what it was before the key existed.
    settings = runner.final_eval_settings(config_lib.merge({}), {}, "model")
    assert "val_split" not in settings["data"] and "eval_split" in settings["data"]
    assert runner.final_eval_settings(config, {}, "model")["data"]["val_split"] == "train"
    with pytest.raises(config_lib.ConfigError, match="data.val_split must be None .* or 'train'. "
                                                     "Received: data.val_split='tset'"):
        runner.load_data(config_lib.merge({"data": {"val_split": "tset"}}))
    with pytest.raises(config_lib.ConfigError, match="eval.val_subset=64 of the .* data.train_subset"
                                                     "=59990 .* must be in \\[1, "):
        runner.load_data(config_lib.merge({"data": {"val_split": "train", "train_subset": 59_990},
                                           "eval": {"val_subset": 64}}))
    with pytest.raises(config_lib.ConfigError, match="eval.val_subset=\\[1, 2\\] of the "):
        runner.load_data(config_lib.merge({"data": {"val_split": "train"},
                                           "eval": {"val_subset": [1, 2]}}))


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
