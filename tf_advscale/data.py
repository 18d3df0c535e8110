"""Data: one entry point, ``load``, for every source the experiments use.

Every source yields the same thing: batched ``tf.data`` pipelines of
``(image float32 in [0, 1], NHWC; label int32)``, with the same class order
for the same data set whichever source it came from.

Sources:
  * ``"tfds"``: tensorflow-datasets (``cifar10``, ``fashion_mnist``,
    ``imagenet2012`` with ``manual_dir``); the path users with a network take.
  * ``"folder"``: ``root/<split>/<class>/*.jpg|png`` (ImageNet's own layout).
  * ``"idx"``: the original Fashion-MNIST IDX files (``apt-get install
    dataset-fashion-mnist`` puts them in /usr/share/datasets/fashion-mnist).
  * ``"sample"``: a small real Fashion-MNIST sample shipped with the package,
    so the quick start needs no download.
"""

import gzip
import os
import struct

import numpy as np
import tensorflow as tf

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck")

# Known data sets: class order, image shape and where each source looks by
# default. Any other name works with source="folder" or "tfds".
DATASETS = {
    "fashion_mnist": {"classes": FASHION_MNIST_CLASSES, "shape": (28, 28, 1),
                      "default_source": "idx",
                      "idx_dir": "/usr/share/datasets/fashion-mnist"},
    "cifar10": {"classes": CIFAR10_CLASSES, "shape": (32, 32, 3),
                "default_source": "folder", "folder": "../shared/data/cifar10-jpeg"},
    "imagenet2012": {"classes": None, "shape": (224, 224, 3), "default_source": "tfds"},
    "fashion_mnist_sample": {"classes": FASHION_MNIST_CLASSES, "shape": (28, 28, 1),
                             "default_source": "sample"},
}
SOURCES = ("tfds", "folder", "idx", "sample")
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SAMPLE_PATH = os.path.join(os.path.dirname(__file__), "_data", "fashion_mnist_sample.npz")


class DataError(ValueError):
    """A data source is missing or malformed."""


# ---------------------------------------------------------------------------
# Raw sources -> (uint8 images or file paths, int labels, class names)
# ---------------------------------------------------------------------------

def read_idx(path):
    """Reads one IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file "
                        f"(magic {data[:4].hex() if data else 'empty'}, expected 00000801/00000803)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(shape)) if ndim else 0
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes) "
                        f"but the file holds {len(data) - header} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_idx(directory, split):
    """Fashion-MNIST from its four IDX files in ``directory``."""
    prefix = {"train": "train", "test": "t10k"}[split]
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [os.path.join(directory, f"{prefix}-{kind}{ext}") for ext in (".gz", "")]
        found = [p for p in candidates if os.path.exists(p)]
        if not found:
            raise DataError(
                f"Fashion-MNIST IDX file not found: expected {candidates[0]} (or without .gz). "
                "Install it with `apt-get install dataset-fashion-mnist` or pass path=DIR.")
        paths.append(found[0])
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"IDX files in {directory} disagree: images {images.shape}, "
                        f"labels {labels.shape}")
    return images[..., None], labels.astype(np.int32)


def load_sample(split):
    """The Fashion-MNIST sample shipped inside the package."""
    with np.load(SAMPLE_PATH) as f:
        return f[f"{split}_images"], f[f"{split}_labels"].astype(np.int32)


def folder_files(root, split=None, class_names=None):
    """Lists ``root[/split]/<class>/<image>``; returns (paths, labels, classes).

    With ``class_names`` the folders must be exactly those classes and labels
    follow that order; otherwise classes are the sorted folder names.
    """
    directory = os.path.join(root, split) if split else root
    if not os.path.isdir(directory):
        raise DataError(f"Image folder not found: {directory} (expected "
                        f"{root}/<split>/<class>/<image files>)")
    found = sorted(d for d in os.listdir(directory)
                   if os.path.isdir(os.path.join(directory, d)))
    if not found:
        raise DataError(f"No class folders in {directory}: expected one subfolder per class")
    classes = tuple(class_names) if class_names else tuple(found)
    if class_names and sorted(classes) != found:
        raise DataError(f"Class folders in {directory} are {found}; expected {sorted(classes)}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(directory, name))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"Class folder {os.path.join(directory, name)} has no images "
                            f"({'/'.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(directory, name, f) for f in files]
        labels += [label] * len(files)
    return np.array(paths), np.array(labels, np.int32), classes


def _tfds_builder(name, data_dir=None, manual_dir=None, download=True):
    import tensorflow_datasets as tfds
    builder = tfds.builder(name, data_dir=data_dir)
    if download or manual_dir:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        builder.download_and_prepare(download_config=config)
    return builder


# ---------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def _is_image(contents):
    """True if ``contents`` starts like a JPEG, PNG, GIF or BMP file."""
    head = tf.strings.substr(contents, 0, 4)
    return tf.reduce_any(tf.stack([tf.strings.substr(head, 0, len(m)) == m for m in _MAGIC]))


def _folder_decoder(channels):
    """The map ``(image file path, label) -> (decoded image, label)``."""
    def decode(path, label):
        contents = tf.io.read_file(path)
        # A file that is no image fails here, naming itself (the decoder's own
        # error does not say which file it was).
        check = tf.debugging.Assert(_is_image(contents), [
            "not a JPEG/PNG/GIF/BMP image (by its first bytes):", path])
        with tf.control_dependencies([check]):
            image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
        return image, label
    return decode


def _to_float(image):
    return tf.image.convert_image_dtype(image, tf.float32)


def _pad_crop_flip(image, seed, pad, flip):
    shape = tf.shape(image)
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    image = tf.image.stateless_random_crop(padded, shape, seed=s1)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=s2)
    return image


def _inception_crop_flip(image, seed, size):
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4]), seed=s1, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop)
    image = tf.image.resize(image, (size, size), antialias=True)
    return tf.image.stateless_random_flip_left_right(image, seed=s2)


def _center_crop(image, size, crop_fraction=0.875):
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / crop_fraction) / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, resized, antialias=True)
    return tf.image.resize_with_crop_or_pad(image, size, size)


def _augment_fn(large, size):
    def aug(x, y, seed):
        x = _to_float(x)
        if large:
            x = _inception_crop_flip(x, seed, size)
        else:
            pad = 4 if x.shape[0] and x.shape[0] >= 32 else 2
            x = _pad_crop_flip(x, seed, pad, flip=True)
        return x, y
    return aug


def _materialize(ds):
    """Small decoded images as one in-memory array (falls back to ``ds`` if
    the images differ in shape)."""
    xs, ys = [], []
    try:
        for x, y in ds.batch(4096):
            xs.append(x.numpy())
            ys.append(y.numpy())
    except tf.errors.InvalidArgumentError:
        return ds
    return tf.data.Dataset.from_tensor_slices((np.concatenate(xs), np.concatenate(ys)))


def _single_stream(ds, n, batch_size, shuffle, augment, seed, repeat, drop_remainder, large,
                   size, num_parallel_calls):
    """Reshuffled each time it is iterated (plain ``fit(epochs=...)`` use)."""
    if shuffle:
        ds = ds.shuffle(min(n, 50_000), seed=seed, reshuffle_each_iteration=True)
    if augment:
        rng = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        aug = _augment_fn(large, size)
        ds = tf.data.Dataset.zip((ds, rng)).map(lambda xy, s: aug(xy[0], xy[1], s),
                                                num_parallel_calls=num_parallel_calls)
    else:
        ds = ds.map(lambda x, y: (_to_float(x), y), num_parallel_calls=num_parallel_calls)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def _epoch_stream(ds, n, batch_size, shuffle, augment, seed, epochs, start_epoch, start_step,
                  large, size, num_parallel_calls):
    """Epochs ``[start_epoch, epochs)`` as one stream; epoch ``e`` is a pure
    function of ``(seed, e)``, and the stream starts ``start_step`` batches in."""
    steps = n // batch_size
    for name, value in (("epochs", epochs), ("start_epoch", start_epoch),
                        ("start_step", start_step)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise DataError(f"{name} must be an int >= 0. Received: {name}={value!r}")
    if steps < 1:
        raise DataError(f"batch_size {batch_size} is larger than the data set ({n} images)")
    if not start_epoch < epochs or not start_step < steps:
        raise DataError(f"start position (epoch {start_epoch}, step {start_step}) is outside "
                        f"{epochs} epochs of {steps} steps")
    aug = _augment_fn(large, size)

    def one_epoch(e, skip):
        # Python ints throughout: epoch e's shuffle and crops depend on (seed, e) only.
        epoch_seed = seed * 1_000_003 + e
        d = ds
        if shuffle:
            d = d.shuffle(min(n, 50_000), seed=epoch_seed, reshuffle_each_iteration=False)
        d = d.enumerate()
        if skip:
            d = d.skip(skip)
        if augment:
            base = tf.constant(epoch_seed, tf.int64)
            d = d.map(lambda i, xy: aug(xy[0], xy[1], tf.stack([base, i])),
                      num_parallel_calls=num_parallel_calls)
        else:
            d = d.map(lambda i, xy: (_to_float(xy[0]), xy[1]),
                      num_parallel_calls=num_parallel_calls)
        return d.batch(batch_size, drop_remainder=True)

    stream = one_epoch(int(start_epoch), int(start_step) * batch_size)
    for e in range(int(start_epoch) + 1, int(epochs)):
        stream = stream.concatenate(one_epoch(e, 0))
    total = (int(epochs) - int(start_epoch)) * steps - int(start_step)
    return stream.apply(tf.data.experimental.assert_cardinality(total))


# ---------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------

def dataset_info(dataset):
    """Class names and image shape of a known data set (or None)."""
    return DATASETS.get(dataset)


def _check_choice(name, value, choices):
    if value not in choices:
        raise DataError(f"Unknown {name}: expected one of {list(choices)}. Received: {name}={value!r}")


def _select(n, subset, seed):
    """Indices for ``subset``: None (all), an int (seeded random), or ids."""
    if subset is None:
        return None
    if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
        if not 0 < subset <= n:
            raise DataError(f"subset must be in [1, {n}]. Received: subset={subset}")
        rng = np.random.default_rng(0 if seed is None else seed)
        return np.sort(rng.choice(n, int(subset), replace=False))
    ids = np.asarray(list(subset), dtype=np.int64)
    if ids.size == 0 or ids.min() < 0 or ids.max() >= n:
        raise DataError(f"subset ids must be in [0, {n}); received {ids.size} ids "
                        f"in [{ids.min() if ids.size else None}, {ids.max() if ids.size else None}]")
    return ids


def holdout_ids(n, held_out, train_n=None, seed=0):
    """``(training ids, held-out ids)`` of a split of ``n`` examples, both
    sorted and disjoint: the held-out ids are the last ``held_out`` of a
    permutation seeded by ``seed``, the training ids the first ``train_n``
    (None: all the rest). Validation on held-out training images, so that
    the test set plays no part in training (checkpoint choice, the
    catastrophic-overfitting monitor, a search's trials)."""
    if not (isinstance(held_out, (int, np.integer)) and 0 < held_out < n):
        raise DataError(f"held-out images must be in [1, {n - 1}] of the {n} training images. "
                        f"Received: {held_out!r}")
    train_n = n - held_out if train_n is None else train_n
    if not (isinstance(train_n, (int, np.integer)) and 0 < train_n <= n - held_out):
        raise DataError(f"training images must be in [1, {n - held_out}] beside {held_out} "
                        f"held-out images of {n}. Received: {train_n!r}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:train_n]), np.sort(order[n - held_out:])


def split_size(dataset, split, source=None, path=None, data_dir=None, manual_dir=None):
    """How many examples ``load(dataset, split, ...)`` would read, without
    reading them."""
    known = DATASETS.get(dataset, {})
    source = source or known.get("default_source") or "tfds"
    _check_load_args(source, split, 1)
    return _examples(dataset, split, source, path, known, data_dir, manual_dir, True)[1]


def _check_load_args(source, split, batch_size):
    """Raises ``DataError`` unless ``load`` can read ``split`` from ``source``
    in batches of ``batch_size``."""
    _check_choice("source", source, SOURCES)
    if source in ("idx", "sample") and split not in SPLITS:
        _check_choice("split", split, SPLITS)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")


def _tfds_split(dataset, split, classes, data_dir, manual_dir, download):
    """``(tf.data.Dataset, size, class names)`` of a tensorflow-datasets split,
    whose classes must be ``classes`` where those are known."""
    builder = _tfds_builder(dataset, data_dir, manual_dir, download)
    ds_info = builder.info
    names = ds_info.features["label"].names
    if classes and tuple(names) != tuple(classes):
        raise DataError(f"tfds {dataset} classes {names} differ from {classes}")
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    return ds, int(ds_info.splits[split].num_examples), tuple(names)


def _examples(dataset, split, source, path, known, data_dir, manual_dir, download):
    """``(examples, n, classes, decode)`` of a split: ``examples`` is the pair
    ``(images or image files, labels)`` of arrays, or (tfds) a
    ``tf.data.Dataset``; ``decode`` reads an image file (folder), else None."""
    classes, decode = known.get("classes"), None
    if source == "sample":
        images, labels = load_sample(split)
        examples, n = (images, labels), len(labels)
    elif source == "idx":
        images, labels = load_idx(path or known.get("idx_dir") or ".", split)
        examples, n = (images, labels), len(labels)
    elif source == "folder":
        root = path or known.get("folder")
        if root is None:
            raise DataError(f"source='folder' needs path=DIR for dataset {dataset!r}")
        files, labels, classes = folder_files(root, split, classes)
        examples, n = (files, labels), len(labels)
        decode = _folder_decoder(known.get("shape", (None, None, 3))[-1])
    else:
        examples, n, classes = _tfds_split(dataset, split, classes, data_dir, manual_dir,
                                           download)
    if n == 0:
        raise DataError(f"{dataset}/{split} from {source} is empty")
    return examples, n, classes, decode


def _subset(examples, n, ids):
    """A ``tf.data.Dataset`` of the ``examples`` at ``ids`` (None: all ``n``)."""
    if isinstance(examples, tuple):
        if ids is not None:
            examples = tuple(e[ids] for e in examples)
        return tf.data.Dataset.from_tensor_slices(examples)
    if ids is not None:
        keep = tf.constant(np.isin(np.arange(n), ids))
        examples = examples.enumerate().filter(lambda i, xy: keep[i]).map(lambda i, xy: xy)
    return examples


def _is_large(known, image_size):
    """Whether images are ImageNet-sized (Inception crops to train, center crops to test)."""
    return image_size is not None or (known.get("shape", (32,))[0] or 0) >= 64


def _decoded(ds, decode, known, image_size, augment, cache, num_parallel_calls):
    """``ds`` with int32 labels and uint8 images: decoded, center-cropped for
    evaluation when large, and cached where that is kept."""
    large = _is_large(known, image_size)
    ds = ds.map(lambda x, y: (x, tf.cast(y, tf.int32)))
    if decode is not None:
        ds = ds.map(decode, num_parallel_calls=num_parallel_calls)
    if large and not augment:
        size = image_size or known["shape"][0]
        ds = ds.map(lambda x, y: (tf.cast(_center_crop(x, size), tf.uint8), y),
                    num_parallel_calls=num_parallel_calls)
    if cache and not (large and augment):
        ds = ds.cache()
    return ds


def _batched(ds, n, known, image_size, batch_size, shuffle, augment, seed, cache, repeat,
             drop_remainder, epochs, start_epoch, start_step, prefetch, num_parallel_calls):
    """The deterministic stream of float batches of ``ds`` (``n`` decoded
    examples): one per-epoch stream with ``epochs``, else a reshuffled one."""
    large = _is_large(known, image_size)
    size = image_size or known.get("shape", (224,))[0]
    if epochs is not None and cache and not large:
        ds = _materialize(ds)  # a cache inside the per-epoch flat_map is not reused
    if epochs is not None:
        ds = _epoch_stream(ds, n, batch_size, shuffle, augment, seed, epochs,
                           start_epoch, start_step, large, size, num_parallel_calls)
    else:
        ds = _single_stream(ds, n, batch_size, shuffle, augment, seed, repeat,
                            drop_remainder, large, size, num_parallel_calls)
    if prefetch:
        ds = ds.prefetch(prefetch)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = max(1, int(num_parallel_calls))
    return ds.with_options(options)


def _load_info(dataset, split, source, classes, known, image_size, ids, num_examples,
               batch_size, whole_batches):
    """``load``'s ``info`` dict."""
    shape = known.get("shape") if image_size is None else (image_size, image_size,
                                                           known.get("shape", (0, 0, 3))[-1])
    return {"dataset": dataset, "split": split, "source": source, "classes": classes,
            "num_classes": len(classes) if classes else None, "num_examples": num_examples,
            "shape": tuple(shape) if shape else None,
            "ids": None if ids is None else [int(i) for i in ids],
            "steps_per_epoch": num_examples // batch_size if whole_batches
            else -(-num_examples // batch_size)}


def load(dataset="fashion_mnist", split="train", source=None, path=None, batch_size=128,
         shuffle=None, augment=None, seed=0, image_size=None, drop_remainder=None,
         cache=True, subset=None, subset_seed=None, repeat=False, num_parallel_calls=1,
         prefetch=2, data_dir=None, manual_dir=None, download=True, epochs=None,
         start_epoch=0, start_step=0):
    """Returns ``(tf.data.Dataset, info)`` for ``dataset``/``split``.

    Args:
        dataset: a name from ``DATASETS`` or any tfds name / folder data set.
        split: ``"train"`` or ``"test"`` (tfds: any split string).
        source: ``"tfds" | "folder" | "idx" | "sample"``; default per data set.
        path: directory for ``folder`` and ``idx`` sources.
        batch_size: images per batch.
        shuffle, augment, drop_remainder: default to ``split == "train"``.
        seed: shuffle and augmentation seed (deterministic order and crops).
        image_size: output size for folder/tfds images of other sizes
            (ImageNet-style: random-resized-crop for training, resize +
            center crop for evaluation).
        cache: keep decoded images in memory after the first epoch.
        subset: ``None``, an int (a seeded random subset of that size), or a
            list of example ids (positions in the source's fixed order).
        repeat: repeat forever (for ``steps_per_epoch`` training).
        num_parallel_calls: map parallelism; 1 leaves the cores to the model.
        data_dir, manual_dir, download: passed to tensorflow-datasets.
        epochs: if given, one stream of whole batches for epochs
            ``[start_epoch, epochs)`` in which epoch ``e``'s order and
            augmentation depend only on ``(seed, e)`` -- not on how many
            epochs this process has iterated -- and which starts
            ``start_step`` batches into ``start_epoch``. Pass it with
            ``steps_per_epoch=info["steps_per_epoch"]`` to ``fit``; a resumed
            run (``tf_advscale.checkpoint``) sees exactly the batches the
            uninterrupted run would have seen.
        start_epoch, start_step: where that stream starts.

    ``info`` holds ``classes``, ``num_classes``, ``num_examples``, ``shape``,
    ``source``, ``ids`` (the selected example ids, or None for all) and
    ``steps_per_epoch`` (whole batches per epoch).
    """
    known = DATASETS.get(dataset, {})
    source = source or known.get("default_source") or "tfds"
    _check_load_args(source, split, batch_size)
    training = split.startswith("train")
    shuffle = training if shuffle is None else shuffle
    augment = training if augment is None else augment
    drop_remainder = training if drop_remainder is None else drop_remainder
    seed = 0 if seed is None else int(seed)
    examples, n, classes, decode = _examples(dataset, split, source, path, known, data_dir,
                                             manual_dir, download)
    ids = _select(n, subset, subset_seed if subset_seed is not None else seed)
    num_examples = n if ids is None else len(ids)
    ds = _decoded(_subset(examples, n, ids), decode, known, image_size, augment, cache,
                  num_parallel_calls)
    ds = _batched(ds, num_examples, known, image_size, batch_size, shuffle, augment, seed,
                  cache, repeat, drop_remainder, epochs, start_epoch, start_step, prefetch,
                  num_parallel_calls)
    return ds, _load_info(dataset, split, source, classes, known, image_size, ids,
                          num_examples, batch_size, drop_remainder or epochs)


def as_numpy(dataset="fashion_mnist", split="test", **kwargs):
    """All images and labels of a split as numpy arrays (no augmentation)."""
    kwargs = {"batch_size": 1024, "shuffle": False, "augment": False,
              "drop_remainder": False, "cache": False, **kwargs}
    ds, info = load(dataset, split, **kwargs)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys), info
