"""The model zoo: published robust classifiers, verified before use.

    from tf_advscale import zoo
    zoo.list_models()                      # ['resnet20.pgd3_fmnist', ...]
    zoo.info("resnet20.pgd3_fmnist")       # metadata: threat model, recipe, results
    model, meta = zoo.load("resnet20.mixbn_pgd3_fmnist", route="clean")
    model, meta = zoo.load_entry("path/to/NAME")   # an entry directory, same checks

A zoo entry is a directory ``<name>/`` holding ``metadata.json``, the model
card ``README.md`` and (for bundled entries) ``model.keras``. The model is
the classifier alone: images in [0, 1] (NHWC) -> logits, inference-ready;
MixBN models are returned on the route asked for (adversarial by default).

Where entries come from, first match wins: the directories in
``$TF_ADVSCALE_ZOO`` (``:``-separated), the repository's ``zoo/`` next to the
package (a source checkout), and ``<prefix>/share/tf_advscale/zoo`` (where
``pip install`` puts it: the environment's prefix, the install scheme's data
directory such as ``/usr/local``, or the user base). An entry's model is a
file in its directory (``metadata["source"]["file"]``); where the directory
does not hold it (an installed package leaves model files over
``setup.py``'s ``LARGE_MODEL_BYTES`` out of the wheel), the copy in
``~/.keras/tf_advscale_zoo`` named by its sha256, downloaded there once with
``keras.utils.get_file`` from the entry's URL (``metadata["source"] =
{"url": ..., "mirrors": [...], "sha256": ...}``; the mirrors are tried in
order when a URL fails or serves other bytes) or put there by hand. No name
or URL can write outside that directory.

Before a model is used its file's size and sha256 are checked against the
metadata, then it is loaded with Keras' safe mode (no lambda layers, no
code from the file), then its parameter count and normalisation are
checked; any mismatch raises ``ZooError`` and nothing is returned.
"""

import difflib
import json
import os
import re
import site
import sys
import sysconfig

import keras

from tf_advscale.files import sha256

METADATA = "metadata.json"
CARD = "README.md"
MODEL = "model.keras"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class ZooError(ValueError):
    """An unknown entry, or a model file that fails its checks."""


def check_name(name):
    """Entry names are ``arch.recipe_dataset``: lowercase letters, digits,
    ``_``, ``-`` and dots between parts -- never a path."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ZooError(f"Invalid zoo name {name!r}: expected lowercase 'arch.recipe_dataset' "
                       "(letters, digits, '_', '-', '.'), e.g. 'resnet20.pgd3_fmnist'")
    return name


def zoo_dirs():
    """The directories searched for entries, in order."""
    dirs = [d for d in os.environ.get("TF_ADVSCALE_ZOO", "").split(os.pathsep) if d]
    here = os.path.dirname(os.path.abspath(__file__))
    dirs.append(os.path.join(os.path.dirname(here), "zoo"))
    # Where pip puts data files: the environment's prefix, the install
    # scheme's data directory (``/usr/local`` for a system Python on Debian
    # and Ubuntu, whose prefix is ``/usr``), and ``pip install --user``'s.
    prefixes = [sys.prefix, sysconfig.get_paths().get("data"), os.path.join(sys.prefix, "local"),
                getattr(site, "USER_BASE", None)]
    dirs += [os.path.join(p, "share", "tf_advscale", "zoo") for p in prefixes if p]
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def _entries():
    found = {}
    for d in zoo_dirs():
        for name in sorted(os.listdir(d)):
            if _NAME.fullmatch(name) and os.path.isfile(os.path.join(d, name, METADATA)):
                found.setdefault(name, os.path.join(d, name))
    return found


def data_args(config, source=None, path=None):
    """``evaluate()``'s data arguments for a run's config (an entry's
    ``metadata["recipe"]["config"]``); ``source``/``path``, when given,
    point at another copy of the data."""
    d = config["data"]
    return {"dataset": d["dataset"], "source": source or d["source"], "path": path or d["path"]}


def autoattack_results(meta, route):
    """An entry's AutoAttack results on ``route`` (``advscale zoo autoattack``
    writes them into ``evaluation.autoattack``), or None where it has not run."""
    return (((meta.get("evaluation") or {}).get("autoattack") or {}).get("results") or {}).get(route)


def list_models():
    """Names of every entry found."""
    return sorted(_entries())


def _entry_dir(name):
    check_name(name)
    entries = _entries()
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ZooError(f"Unknown zoo model {name!r}.{hint} Known: {sorted(entries)} "
                       f"(searched {zoo_dirs()})")
    return entries[name]


def info(name):
    """The metadata of ``name`` (a dict; see any entry's ``metadata.json``)."""
    return read_metadata(_entry_dir(name), name)


def read_metadata(directory, name=None):
    """The checked metadata of the entry in ``directory`` (named ``name``,
    default the directory's name)."""
    name = name or os.path.basename(os.path.normpath(directory))
    try:
        with open(os.path.join(directory, METADATA)) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ZooError(f"{directory}/{METADATA} is unreadable: {e}") from e
    if meta.get("name") != name:
        raise ZooError(f"{directory}/{METADATA} names {meta.get('name')!r}, not {name!r}")
    source = meta.get("source") or {}
    if not _SHA.fullmatch(str(source.get("sha256", ""))):
        raise ZooError(f"{directory}/{METADATA}: source.sha256 must be 64 hex digits. "
                       f"Received: {source.get('sha256')!r}")
    if not str(source.get("file", MODEL)).endswith(".keras"):
        raise ZooError(f"{directory}/{METADATA}: source.file must be a .keras file. "
                       f"Received: {source.get('file')!r}")
    params = meta.get("params")
    if not isinstance(params, int) or isinstance(params, bool) or params < 0:
        raise ZooError(f"{directory}/{METADATA}: params must be the model's parameter count "
                       f"(an integer). Received: {params!r}")
    return meta


def model_path(name, cache_dir=None):
    """The verified local path of ``name``'s model file (downloading it once
    for URL entries)."""
    return entry_model_path(_entry_dir(name), cache_dir)


def entry_model_path(directory, cache_dir=None):
    """``model_path`` for the entry in ``directory``."""
    return _verified_path(directory, read_metadata(directory), cache_dir)


def _verified_path(directory, meta, cache_dir):
    """The entry's own file when its directory holds it (a source checkout);
    else the copy in the cache named by its sha256 (fetched from the entry's
    URL, or its mirrors, if not there yet). An installed package leaves large
    model files out (see ``setup.py``) and takes them this second way."""
    name = meta["name"]
    source = meta["source"]
    digest = source["sha256"]
    local = os.path.join(directory, source.get("file", MODEL))
    cache = os.path.expanduser(cache_dir or os.path.join("~", ".keras"))
    cached = os.path.join(cache, "tf_advscale_zoo", f"{digest}.keras")
    if os.path.exists(local) or not (source.get("url") or os.path.exists(cached)):
        path, root = local, os.path.realpath(directory)
    else:
        if source.get("url"):
            os.makedirs(cache, exist_ok=True)  # else Keras silently falls back to /tmp/.keras
            mirrors = source.get("mirrors", [])
            if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
                raise ZooError(f"{name}: source.mirrors must be a list of URLs. "
                               f"Received: {mirrors!r}")
            path = _download(name, [source["url"], *mirrors], digest, cache)
        else:
            path = cached
        root = os.path.realpath(os.path.join(cache, "tf_advscale_zoo"))
    if os.path.commonpath([os.path.realpath(path), root]) != root:
        raise ZooError(f"{name}: model file {path} lies outside {root}; refused")
    if not os.path.isfile(path):
        raise ZooError(f"{name}: model file {path} is missing (an installed package leaves "
                       f"large model files out: put the repository's copy there, or at "
                       f"{cached})")
    verify_file(path, digest, source.get("bytes"), name)
    return path


def _download(name, urls, digest, cache):
    """The cached file of sha256 ``digest``, fetched once from the first of
    ``urls`` (the entry's URL, then its mirrors) that serves those bytes: a
    dead link or a web page in place of the file moves on to the next."""
    failures = []
    for url in urls:
        try:
            return keras.utils.get_file(fname=f"{digest}.keras", origin=url, file_hash=digest,
                                        hash_algorithm="sha256", cache_dir=cache,
                                        cache_subdir="tf_advscale_zoo")
        except Exception as e:  # noqa: BLE001  (each URL's failure is reported below)
            failures.append(f"{url}: {type(e).__name__}: {e}")
    raise ZooError(f"{name}: no URL served the file of sha256 {digest} (a dead link, or a web "
                   "page or truncated file in its place); tried:\n  " + "\n  ".join(failures))


def verify_file(path, digest, size=None, what="model"):
    """Raises ZooError unless ``path`` has ``size`` bytes and sha256 ``digest``."""
    if not os.path.isfile(path):
        raise ZooError(f"{what}: model file {path} is missing")
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        raise ZooError(f"{what}: {path} has {actual_size} bytes, the metadata says {size} "
                       "(truncated or replaced); refused")
    actual = sha256(path)
    if actual != digest:
        raise ZooError(f"{what}: {path} has sha256 {actual}, the metadata says {digest} "
                       "(corrupt or modified); refused")


def load(name, route=None, cache_dir=None):
    """Returns ``(model, metadata)`` for the zoo entry ``name``.

    Args:
        name: an entry from ``list_models()``.
        route: for MixBN models, ``"adversarial"`` (default) or ``"clean"``:
            which BN statistics and affine parameters inference uses. Other
            models take only None.
        cache_dir: where URL entries are downloaded (``~/.keras`` default).
    """
    return load_entry(_entry_dir(name), route, cache_dir)


def load_entry(directory, route=None, cache_dir=None):
    """``load`` for the entry in ``directory`` (e.g. one being published)."""
    from tf_advscale.layers import mixbn
    from tf_advscale.models import count_params

    meta = read_metadata(directory)
    name = meta["name"]
    path = _verified_path(directory, meta, cache_dir)
    # Keras' safe_mode=True is overridden by keras.config.enable_unsafe_deserialization()
    # anywhere in the process; the zoo's own check holds whatever that flag says.
    refuse_code(path, name)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:
        raise ZooError(f"{name}: {path} passed its sha256 check but does not load "
                       f"with this Keras ({keras.__version__}): {type(e).__name__}: {e}") from e
    params = count_params(model)
    if params != meta["params"]:
        raise ZooError(f"{name}: the loaded model has {params} parameters, the metadata says "
                       f"{meta['params']} (wrong architecture); refused")
    norm = (meta.get("architecture") or {}).get("norm")
    found = _norms(model)
    # A group norm whose channels allow one group only is a layer norm.
    if norm and found and not found <= ({"gn", "ln"} if norm == "gn" else {norm}):
        raise ZooError(f"{name}: the loaded model normalises with {sorted(found)}, the "
                       f"metadata says {norm!r} (wrong architecture); refused")
    if mixbn.mixbn_layers(model):
        route = route or "adversarial"
        if route not in ("adversarial", "clean"):
            raise ZooError(f"route must be 'adversarial' or 'clean' for {name}. "
                           f"Received: route={route!r}")
        mixbn.set_route(model, route)
    elif route is not None:
        raise ZooError(f"{name} has no MixBN layers, so it has no routes. "
                       f"Received: route={route!r}")
    return model, meta


# Where the classes a zoo model file may name come from.
_TRUSTED_MODULES = ("keras", "tf_advscale")
_CODE_CLASSES = ("Lambda", "__lambda__", "function")


def refuse_code(path, name):
    """Raises ZooError if the .keras file at ``path`` holds Python code (a
    Lambda layer, a serialized function) or names a class from outside
    Keras and this package: loading it could run that code."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ZooError(f"{name}: {path} is not a readable .keras file ({e}); refused") from e
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if node.get("class_name") in _CODE_CLASSES:
            raise ZooError(f"{name}: the model file holds Python code (a "
                           f"{node['class_name']!r} object), which the zoo never runs; refused")
        module = node.get("module")
        if isinstance(module, str) and module.split(".")[0] not in _TRUSTED_MODULES:
            raise ZooError(f"{name}: the model file names a class from module {module!r}, "
                           f"outside {' and '.join(_TRUSTED_MODULES)}; refused")
        stack.extend(node.values())


def _norms(model):
    """The normalisations a model uses, named as ``architecture.norm`` names
    them ("bn", "mixbn", "gn", "ln"): BN and group norm have the same
    parameter count, so the count alone cannot tell them apart."""
    from tf_advscale.layers import mixbn, walk
    found = set()
    for layer in walk.sublayers(model):
        if isinstance(layer, mixbn.MixBN):
            found.add("mixbn")
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.add("bn")
        elif isinstance(layer, keras.layers.GroupNormalization):
            found.add("ln" if layer.groups == 1 else "gn")
    return found
