"""PyTorch robust-model checkpoints into Keras zoo entries.

    from tf_advscale.torch_import import import_torch
    directory = import_torch("preactresnet18", "Wong2020Fast.pt", "preactresnet18.wong2020_cifar10")

A RobustBench-style state dict (PreActResNet-18, CIFAR ResNet-18, WideResNets)
becomes the registry's Keras model with the same function: every tensor is
copied (conv kernels OIHW -> HWIO, linear weights transposed, BN statistics
as they are), nothing left over and nothing missing. Normalisation buffers
found in the checkpoint (``mu``/``sigma``, ``mean``/``std``) become the
model's ``Standardize`` layer; otherwise ``preprocess`` says what to do (the
default, ``"none"``: the model takes images in [0, 1], as RobustBench's do).

When torch is installed, the importer also loads the checkpoint into the
PyTorch definition of the architecture (``tf_advscale.torch_models``) and
compares the logits of both on 256 images; it refuses, naming the largest
difference, beyond 1e-4. ``torch.load`` runs with ``weights_only=True``: a
pickle that holds code is refused, not run.

Conversion runs on the user's machine from a file the user downloaded; the
entry is written to the first directory on ``TF_ADVSCALE_ZOO`` (or
``zoo_dir``), never into the installed package.
"""

import datetime
import fractions
import json
import os
import re

import numpy as np

from tf_advscale import zoo
from tf_advscale.files import save_model_atomic, sha256

# name -> (registry model, the Keras-to-PyTorch name map, torch_models builder
# taking (torch_models, classes, activation, input channels)).
ARCHS = {
    "preactresnet18": ("preactresnet18", "preact", lambda tm, k, act, c: tm.preact_resnet18(k)),
    "resnet18": ("cifar4_resnet18", "cifar4", lambda tm, k, act, c: tm.resnet18_cifar(k)),
    "wrn-28-10": ("wrn-28-10", "wide", lambda tm, k, act, c: tm.wide_resnet(28, 10, k, act)),
    "wrn-34-10": ("wrn-34-10", "wide", lambda tm, k, act, c: tm.wide_resnet(34, 10, k, act)),
    "wrn-34-20": ("wrn-34-20", "wide", lambda tm, k, act, c: tm.wide_resnet(34, 20, k, act)),
    "wrn-70-16": ("wrn-70-16", "wide", lambda tm, k, act, c: tm.wide_resnet(70, 16, k, act)),
    "wrn-16-4": ("wrn-16-4", "wide", lambda tm, k, act, c: tm.wide_resnet(16, 4, k, act)),
    # The zoo's own CIFAR ResNets, in the layout `advscale zoo export` writes
    # (TensorFlow's "same" padding; see torch_models.resnet_cifar).
    **{f"resnet{d}": (f"cifar_resnet{d}", "cifar",
                      lambda tm, k, act, c, d=d: tm.resnet_cifar(d, k, c, act))
       for d in (8, 14, 20, 32, 44, 56, 110)},
}
_NORM_BUFFERS = (("mu", "sigma"), ("mean", "std"))
_STAGE = re.compile(r"^stage(\d+)_block(\d+)_(.+)$")
# Keras layer suffix -> PyTorch module name, per family.
_BLOCK_NAMES = {
    "preact": {"preact_norm": "bn1", "conv1": "conv1", "norm1": "bn2", "conv2": "conv2",
               "proj": "shortcut.0"},
    "wide": {"preact_norm": "bn1", "conv1": "conv1", "norm1": "bn2", "conv2": "conv2",
             "proj": "convShortcut"},
    "cifar4": {"conv1": "conv1", "norm1": "bn1", "conv2": "conv2", "norm2": "bn2",
               "proj": "shortcut.0", "proj_norm": "shortcut.1"},
}
_BLOCK_NAMES["cifar"] = _BLOCK_NAMES["cifar4"]
_TOP_NAMES = {
    "preact": {"stem_conv": "conv1", "final_norm": "bn", "logits": "linear"},
    "wide": {"stem_conv": "conv1", "final_norm": "bn1", "logits": "fc"},
    "cifar4": {"stem_conv": "conv1", "stem_norm": "bn1", "logits": "linear"},
}
_TOP_NAMES["cifar"] = _TOP_NAMES["cifar4"]


class CheckpointError(ValueError):
    """A checkpoint that cannot become this architecture (one line, naming why)."""


def torch_name(layer_name, family):
    """The PyTorch module of the Keras layer ``layer_name`` (None: no weights)."""
    if layer_name in _TOP_NAMES[family]:
        return _TOP_NAMES[family][layer_name]
    m = _STAGE.match(layer_name)
    if not m or m.group(3) not in _BLOCK_NAMES[family]:
        return None
    stage, block, part = int(m.group(1)), int(m.group(2)) - 1, m.group(3)
    group = f"block{stage}.layer.{block}" if family == "wide" else f"layer{stage}.{block}"
    return f"{group}.{_BLOCK_NAMES[family][part]}"


def _weight_layers(model):
    """(layer, kind) for every layer of the classifier that holds weights."""
    import keras
    out = []
    for layer in model.backbone.layers + [model.get_layer("logits")]:
        if isinstance(layer, keras.layers.Conv2D):
            out.append((layer, "conv"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            out.append((layer, "bn"))
        elif isinstance(layer, keras.layers.Dense):
            out.append((layer, "dense"))
    return out


def read_checkpoint(path):
    """The state dict in ``path`` as numpy arrays; one-line errors for a file
    that is missing, truncated, not a checkpoint, or a pickle holding code."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError("reading a PyTorch checkpoint needs torch: "
                           "pip install torch==2.13.0") from e
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch raises many types; each is named)
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path} holds pickled Python objects beyond tensors (code "
                               "could run on load); refused: torch.load(weights_only=True) "
                               f"said: {text}") from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or "
                           f"another format): {type(e).__name__}: {text}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v.detach().cpu().numpy()
            for k, v in obj.items()}


def _arch(arch):
    """``ARCHS[arch]``, or a one-line refusal listing the known names."""
    if arch not in ARCHS:
        raise CheckpointError(f"Unknown architecture {arch!r}. Known: {sorted(ARCHS)}")
    return ARCHS[arch]


def _classes(state, family):
    key = f"{_TOP_NAMES[family]['logits']}.weight"
    if key not in state:
        raise CheckpointError(f"the checkpoint has no {key!r}: not a state dict of this "
                           f"architecture")
    return int(state[key].shape[0])


def in_channels(state, family):
    """The image channels the state dict's stem takes."""
    key = f"{_TOP_NAMES[family]['stem_conv']}.weight"
    return int(state[key].shape[1]) if key in state else 3


def to_keras(arch, state, num_classes=None, preprocess="none", activation="relu",
             input_shape=(32, 32, 3)):
    """The registry model ``arch`` (taking ``input_shape`` images) with the
    state dict's weights, and the Standardize mean/std applied."""
    from tf_advscale.models import build_model
    registered, family, _ = _arch(arch)
    k = _classes(state, family)
    if num_classes is not None and k != num_classes:
        raise CheckpointError(f"the checkpoint's classifier has {k} classes, the data set has "
                           f"{num_classes}; refused")
    mean, std = _preprocessing(state, preprocess)
    c = in_channels(state, family)
    if c != input_shape[-1]:
        raise CheckpointError(f"the checkpoint's stem takes {c}-channel images, the data set's "
                              f"have {input_shape[-1]}; refused")
    model = build_model(registered, num_classes=k, mean=mean, std=std, activation=activation,
                        input_shape=tuple(input_shape))
    used = {n for pair in _NORM_BUFFERS for n in pair if n in state}
    for layer, kind in _weight_layers(model):
        prefix = torch_name(layer.name, family)
        if prefix is None:
            raise CheckpointError(f"no PyTorch name for layer {layer.name!r} of {arch}")
        if kind == "conv":
            names = [("weight", lambda a: a.transpose(2, 3, 1, 0))]
        elif kind == "dense":
            names = [("weight", lambda a: a.T), ("bias", lambda a: a)]
        else:
            names = [("weight", lambda a: a), ("bias", lambda a: a),
                     ("running_mean", lambda a: a), ("running_var", lambda a: a)]
        values = []
        for suffix, layout in names:
            key = f"{prefix}.{suffix}"
            if key not in state:
                raise CheckpointError(f"the checkpoint lacks {key!r} (needed by {arch}'s "
                                   f"{layer.name}): a state dict for another architecture?")
            values.append(layout(state[key]).astype(np.float32))
            used.add(key)
        for v, w in zip(values, layer.weights):
            if tuple(v.shape) != tuple(w.shape):
                raise CheckpointError(f"{prefix}: shape {tuple(v.shape)} in the checkpoint, "
                                   f"{tuple(w.shape)} in {arch}; refused")
        layer.set_weights(values)
    extra = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if extra:
        raise CheckpointError(f"the checkpoint has {len(extra)} tensors {arch} does not use, "
                           f"e.g. {extra[0]!r}: a state dict for another architecture?")
    return model, {"mean": mean, "std": std}


def _preprocessing(state, preprocess):
    for m, s in _NORM_BUFFERS:
        if m in state and s in state:
            return ([float(v) for v in np.ravel(state[m])],
                    [float(v) for v in np.ravel(state[s])])
    if preprocess in (None, "none"):
        return 0.0, 1.0
    if isinstance(preprocess, str) and preprocess.startswith("meanstd:"):
        try:
            mean, std = preprocess[len("meanstd:"):].split("/")
            mean = [float(v) for v in mean.split(",")]
            std = [float(v) for v in std.split(",")]
        except ValueError:
            mean = std = None
        if mean and std and len(mean) == len(std) and all(v > 0 for v in std):
            return mean, std
    raise CheckpointError("preprocess must be 'none' or 'meanstd:M1,M2,M3/S1,S2,S3'. "
                       f"Received: preprocess={preprocess!r}")


def verify(arch, state, model, images, tolerance=1e-4, activation="relu"):
    """Max |logit difference| between ``model`` and the checkpoint loaded into
    the PyTorch definition (strict); refuses beyond ``tolerance``."""
    import torch

    from tf_advscale import torch_models
    _, family, make = ARCHS[arch]
    net = make(torch_models, _classes(state, family), activation, in_channels(state, family))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()
               if k not in {n for pair in _NORM_BUFFERS for n in pair}}
    net.load_state_dict(tensors, strict=True)
    net.eval()
    mean = np.reshape(np.asarray(model.backbone.mean, np.float32), (1, -1, 1, 1))
    std = np.reshape(np.asarray(model.backbone.std, np.float32), (1, -1, 1, 1))
    x = np.asarray(images, np.float32)
    with torch.no_grad():
        nchw = x.transpose(0, 3, 1, 2)
        theirs = net(torch.from_numpy(((nchw - mean) / std).astype(np.float32))).numpy()
    ours = np.asarray(model.predict(x, batch_size=64, verbose=0))
    diff = float(np.abs(ours - theirs).max())
    if diff > tolerance:
        raise CheckpointError(f"the Keras model's logits differ from the PyTorch model's by up to "
                           f"{diff:.3g} (> {tolerance}) on {len(x)} images; refused")
    return diff


def _input_shape(dataset):
    """The image shape of a known data set; a one-line refusal otherwise."""
    from tf_advscale.data import DATASETS
    shape = DATASETS.get(dataset, {}).get("shape")
    if shape is None:
        known = sorted(d for d, v in DATASETS.items() if v.get("shape"))
        raise CheckpointError(f"dataset must be one of {known} (the image shape to build). "
                              f"Received: dataset={dataset!r}")
    return tuple(shape)


def _images(dataset, n=256):
    """``n`` test images to compare on: the data set's, else uniform noise of
    its shape."""
    from tf_advscale import data
    try:
        path = "../shared/data/cifar10-jpeg" if dataset == "cifar10" else None
        source = "folder" if path and os.path.isdir(path) else None
        x, _, info = data.as_numpy(dataset, "test", source=source, path=path, subset=n, seed=0)
        return x, f"{n} {dataset} test images ({info['source']})"
    except Exception:  # noqa: BLE001  (no copy of the data here)
        shape = _input_shape(dataset)
        return (np.random.default_rng(0).uniform(size=(n, *shape)).astype(np.float32),
                f"{n} uniform-noise images (no {dataset} copy found)")


def import_torch(arch, checkpoint, name, dataset="cifar10", epsilon="8/255", norm="linf",
                 preprocess="none", activation="relu", zoo_dir=None, num_classes=10,
                 check=True):
    """Converts ``checkpoint`` into the zoo entry ``name``; returns its directory."""
    zoo.check_name(name)
    target = zoo_dir or next((d for d in os.environ.get("TF_ADVSCALE_ZOO", "").split(os.pathsep)
                              if d), None)
    if not target:
        raise CheckpointError("no zoo directory to write to: set TF_ADVSCALE_ZOO or pass "
                           "zoo_dir (the installed package's zoo is never written)")
    eps = float(fractions.Fraction(str(epsilon)))
    if norm not in ("linf", "l2"):
        raise CheckpointError(f"norm must be 'linf' or 'l2'. Received: norm={norm!r}")
    state = read_checkpoint(checkpoint)
    model, pre = to_keras(arch, state, num_classes, preprocess, activation,
                          _input_shape(dataset))
    checked = None
    if check:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch = None
        if torch is not None:
            images, what = _images(dataset)
            checked = {"max_abs_logit_difference": verify(arch, state, model, images,
                                                          activation=activation),
                       "images": what}
    directory = os.path.join(target, name)
    if os.path.exists(directory):
        raise CheckpointError(f"{directory} exists; choose another name or delete it")
    os.makedirs(directory)
    path = os.path.join(directory, zoo.MODEL)
    save_model_atomic(model, path)
    from tf_advscale.models import count_params
    meta = {
        "name": name, "params": count_params(model), "default_route": None,
        "architecture": {"registry": ARCHS[arch][0], "norm": "bn", "activation": activation},
        "dataset": dataset, "threat_model": {"norm": "Linf" if norm == "linf" else "L2",
                                             "epsilon": str(epsilon), "epsilon_float": eps,
                                             "targeted": False},
        "source": {"file": zoo.MODEL, "sha256": sha256(path),
                   "bytes": os.path.getsize(path)},
        "imported": {"from": os.path.basename(checkpoint),
                     "checkpoint_sha256": sha256(checkpoint), "preprocess": pre,
                     "verified_against_pytorch": checked,
                     "date": datetime.date.today().isoformat()},
        "evaluation": None,
    }
    with open(os.path.join(directory, zoo.METADATA), "w") as f:
        json.dump(meta, f, indent=2)
    with open(os.path.join(directory, zoo.CARD), "w") as f:
        f.write(f"# {name}\n\nImported from the PyTorch checkpoint `{meta['imported']['from']}` "
                f"(sha256 `{meta['imported']['checkpoint_sha256']}`) as the registry's "
                f"`{ARCHS[arch][0]}`, {meta['params']:,} parameters; inputs in [0, 1], "
                f"standardised inside with mean {pre['mean']} and std {pre['std']}.\n\n"
                + (f"Logits checked against the PyTorch model on {checked['images']}: largest "
                   f"difference {checked['max_abs_logit_difference']:.2g}.\n\n" if checked
                   else "Not checked against PyTorch (torch was not installed).\n\n")
                + f"Not evaluated here yet: `advscale eval --model {path} --dataset {dataset} "
                  f"--epsilon {epsilon} --attacks autoattack`.\n")
    return directory


def to_torch_state(model, arch):
    """The state dict (numpy arrays, PyTorch names and layouts) of ``model``,
    a Keras model of the registry architecture behind ``arch``: the inverse
    of ``to_keras``. A model that standardises its input carries that as
    ``mu``/``sigma`` buffers (shape 1 x C x 1 x 1), as RobustBench's do."""
    family = _arch(arch)[1]
    state = {}
    for layer, kind in _weight_layers(model):
        prefix = torch_name(layer.name, family)
        if prefix is None:
            raise CheckpointError(f"no PyTorch name for layer {layer.name!r} of {arch}")
        w = [np.asarray(v, np.float32) for v in layer.get_weights()]
        if kind == "conv":
            if len(w) != 1:
                raise CheckpointError(f"{layer.name} has a bias; {arch}'s PyTorch convs have none")
            state[f"{prefix}.weight"] = w[0].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif kind == "dense":
            state[f"{prefix}.weight"], state[f"{prefix}.bias"] = w[0].T, w[1]
        else:
            if len(w) != 4:
                raise CheckpointError(f"{layer.name} ({type(layer).__name__}) holds {len(w)} "
                                      "weights, a PyTorch BatchNorm2d 4 (MixBN's routes have "
                                      "no single PyTorch layout); refused")
            for suffix, v in zip(("weight", "bias", "running_mean", "running_var"), w):
                state[f"{prefix}.{suffix}"] = v
            state[f"{prefix}.num_batches_tracked"] = np.array(0, np.int64)
    covered = sum(len(layer.weights) for layer, _ in _weight_layers(model))
    if covered != len(model.weights):
        raise CheckpointError(f"{covered} of the model's {len(model.weights)} weights have a "
                              f"place in {arch}'s PyTorch layout (MixBN and other norms have "
                              "none); refused")
    mean = np.ravel(np.asarray(model.backbone.mean, np.float32))
    std = np.ravel(np.asarray(model.backbone.std, np.float32))
    if not (np.all(mean == 0) and np.all(std == 1)):
        state["mu"], state["sigma"] = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
    return state


def export_torch(model, arch, path):
    """Saves ``model``'s weights as a PyTorch state dict at ``path`` (see
    ``to_torch_state``); ``import_torch(arch, path, ...)`` reads it back, and
    ``tf_advscale.torch_models``' definition of ``arch`` loads it strictly
    once ``mu``/``sigma`` are popped (apply them to the input)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError("writing a PyTorch checkpoint needs torch: "
                              "pip install torch==2.13.0") from e
    state = to_torch_state(model, arch)
    # np.array, not np.ascontiguousarray: that makes num_batches_tracked 1-d.
    torch.save({k: torch.from_numpy(np.array(v, order="C")) for k, v in state.items()}, path)
    return path


def registry_name(architecture):
    """The registry model of an entry's ``architecture`` block: its
    ``registry`` (imported entries), else from its family and depth (entries
    ``advscale zoo publish`` wrote: ``cifar`` 20 -> ``cifar_resnet20``)."""
    from tf_advscale.models.resnet import PREFIX
    if architecture.get("registry"):
        return architecture["registry"]
    family, depth = architecture.get("family"), architecture.get("depth")
    if family == "wide":
        return f"wrn-{depth}-{architecture.get('width', 1):g}"
    return f"{PREFIX[family]}{depth}" if family in PREFIX and depth else None


def arch_of_entry(meta):
    """The importer's architecture name of a zoo entry (from its metadata)."""
    registry = registry_name(meta.get("architecture") or {})
    found = [a for a, (reg, _, _) in ARCHS.items() if reg == registry]
    if not found:
        known = sorted({reg for reg, _, _ in ARCHS.values()})
        raise CheckpointError(f"no PyTorch layout for architecture {registry!r}. Known: {known}")
    return found[0]
