"""Crash-safe training state for ``model.fit``: resume at the step, not the epoch.

    state = TrainingState("run/state", steps_per_epoch, every_steps=50)
    resumable_fit(model, make_dataset, epochs, steps_per_epoch, state,
                  callbacks=[...], validation_data=val)

``make_dataset(start_epoch, start_step)`` must return the batches an
uninterrupted run would see from that position on -- ``tf_advscale.data.load(
..., epochs=E, start_epoch=e, start_step=s)`` does. Rerunning the same code
after a kill (SIGKILL included) continues from the newest complete
checkpoint with the weights, optimizer state (step counter, momentum), the
epoch's metric accumulators, the data position and the state of the
callbacks given to ``TrainingState``; random draws keyed by the optimizer
step (``AdversarialModel``'s attacks) repeat. With
``keras.utils.set_random_seed`` + ``tf.config.experimental.enable_op_determinism``
the resumed run ends with the same weights, bit for bit, as one never killed.

On disk, one directory per checkpoint::

    state/ckpt-000000120/variables.npz   every variable (v0, v1, ... in manifest order)
    state/ckpt-000000120/manifest.json   position, variable groups/paths/shapes,
                                         callback state, sha256 of the npz

It is written under a temporary name, flushed and renamed, so a crash while
writing leaves the previous checkpoints intact; the newest ``keep`` are kept.
A checkpoint that fails its hash check is moved aside (``.bad-*``, with a
warning) in favour of the one before (the newest ``keep`` moved aside are
kept for inspection, older ones deleted); one written for another architecture
(a variable path missing, extra or of another shape: variables are matched by
group and path) or another number of steps per epoch is refused. Arrays are read with
``allow_pickle=False``: loading never unpickles or runs code.
"""

import json
import math
import os
import re
import shutil
import warnings

import keras
import numpy as np

from tf_advscale.files import fsync_dir, sha256

FORMAT = 1
def _numbered(directory, prefix=""):
    """Names ``{prefix}ckpt-N`` in ``directory``, newest first."""
    if not os.path.isdir(directory):
        return []
    pattern = re.compile(rf"^{re.escape(prefix)}ckpt-(\d{{9}})$")
    found = [(int(m.group(1)), n) for n in os.listdir(directory) if (m := pattern.match(n))]
    return [n for _, n in sorted(found, reverse=True)]


class CheckpointError(ValueError):
    """A checkpoint is corrupt, or was written for a different model."""


class CheckpointMismatch(CheckpointError):
    """A sound checkpoint of a different run layout: refused, never discarded."""


def _state_variables(model):
    """``(group, variable)`` for every value a resumed run needs, in a fixed
    order: the model's variables, the optimizer's (step counter, slots) and
    the running epoch's metric accumulators."""
    seen, out = set(), []
    groups = [("model", model.variables)]
    if getattr(model, "optimizer", None) is not None:
        groups.append(("optimizer", model.optimizer.variables))
    groups.append(("metrics", [v for m in getattr(model, "metrics", []) for v in m.variables]))
    for group, variables in groups:
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append((group, v))
    return out


def _describe(group, v):
    return [group, v.path, list(v.shape), str(v.dtype)]


# Keras makes names unique within a process by appending ``_N``: a model,
# optimizer or auto-named layer built after another of its kind is
# ``sequential_1``, ``sgd_1``, ``dense_3``, and the name prefixes the paths of
# its variables (``sgd_1/sequential_1_dense_3_kernel_momentum``). Paths are
# compared without these suffixes, so a checkpoint restores into the same
# model whichever models the process built before.
_UNIQUIFIER = re.compile(r"_\d+(?=[/_]|$)")


def _key(group, variable_path):
    return group, _UNIQUIFIER.sub("", variable_path)


def _match(path, current, saved):
    """``(variable, array, description)`` pairing each ``(group, variable)``
    of ``current`` with the saved ``(array, [group, path, shape, dtype])``
    of the same group and path (``_key``); a variable on one side only is
    refused, naming it. Keys need not be unique (two weights of one name in
    a layer; layers whose names differ only by a ``_N`` suffix): equal keys
    are paired in order, the first current one with the first saved one and
    so on, which is what matching by position did for them."""
    by_key = {}
    for array, desc in saved:
        by_key.setdefault(_key(desc[0], desc[1]), []).append((array, desc))
    pairs, extra = [], []
    for group, v in current:
        queue = by_key.get(_key(group, v.path))
        if queue:
            array, desc = queue.pop(0)
            pairs.append((v, array, desc))
        else:
            extra.append(f"{group}:{v.path}")
    missing = [f"{d[0]}:{d[1]}" for rest in by_key.values() for _, d in rest]
    if missing or extra:
        raise CheckpointError(
            f"{path} does not match this model (variables are matched by path): "
            f"{_names(missing)} saved but not in this model; {_names(extra)} in this model "
            "but not saved: it was written by a different model or config")
    return pairs


def _names(names, limit=5):
    """``names`` for a one-line message: the first ``limit``, then a count."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


def _encode(value):
    """Checkpoint state as JSON that round-trips (non-finite floats included)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, (np.floating, np.integer)):
        return _encode(value.item())
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"float"}:
            return float(value["float"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class TrainingState(keras.callbacks.Callback):
    """Step-level, atomic checkpoints of everything ``fit`` needs to resume.

    Args:
        directory: where the ``ckpt-*`` directories go.
        steps_per_epoch: batches per epoch (positions come from the steps
            counted by this callback: epoch = step // steps_per_epoch).
        every_steps: also save every this many steps inside an epoch (None:
            only at epoch ends). Epoch-end saves happen after the other
            callbacks' ``on_epoch_end`` (validation, logs, best model), so
            list this callback last -- ``resumable_fit`` does.
        keep: complete checkpoints to keep (>= 1).
        tracked: ``{name: object}`` of callbacks (or anything) with
            ``get_state() -> JSON-able dict`` and ``set_state(dict)``, saved
            and restored with the checkpoint. An object that also has
            ``supersede(states)`` is told, after ``set_state``, the states of
            the newer checkpoints an agreed multi-worker resume set aside
            (the training clock counts their time: it was spent).
    """

    def __init__(self, directory, steps_per_epoch, every_steps=None, keep=2, tracked=None):
        super().__init__()
        if not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be an int >= 1. "
                             f"Received: steps_per_epoch={steps_per_epoch!r}")
        if every_steps is not None and (not isinstance(every_steps, (int, np.integer))
                                        or isinstance(every_steps, bool) or every_steps < 1):
            raise ValueError(f"every_steps must be None or an int >= 1. "
                             f"Received: every_steps={every_steps!r}")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1. Received: keep={keep!r}")
        self.directory = str(directory)
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_steps = every_steps
        self.keep = keep
        self.tracked = dict(tracked or {})
        self._pending = None  # a loaded checkpoint waiting to be assigned
        self._superseded = []  # tracked states of checkpoints an agreed resume set aside
        self._last_saved = None
        # Steps trained, counted here: the optimizer's counter can lag (a
        # loss-scale optimizer does not count the steps it skips).
        self._counter = 0
        self._epoch_base = 0
        self._position = None
        self.stopped = False

    # -- reading ---------------------------------------------------------------

    def checkpoints(self):
        """Complete checkpoint directories, newest first."""
        return [os.path.join(self.directory, n) for n in _numbered(self.directory)
                if os.path.exists(os.path.join(self.directory, n, "manifest.json"))]

    def _read(self, path, manifest):
        """The arrays of a verified checkpoint."""
        arrays_path = os.path.join(path, "variables.npz")
        try:
            with np.load(arrays_path, allow_pickle=False) as f:
                return [f[f"v{i}"] for i in range(len(manifest["variables"]))]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{arrays_path}: unreadable ({e})") from e

    def _verify(self, path):
        """The manifest of a checkpoint whose arrays match its sha256."""
        try:
            with open(os.path.join(path, "manifest.json")) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable manifest.json ({e})") from e
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT}")
        missing = [k for k in ("epoch", "step", "global_step", "steps_per_epoch", "sha256",
                               "variables", "tracked") if k not in manifest]
        if missing:
            raise CheckpointError(f"{path}: manifest.json lacks {missing}")
        if manifest["steps_per_epoch"] != self.steps_per_epoch:
            raise CheckpointMismatch(
                f"{path} was written with {manifest['steps_per_epoch']} steps per epoch; this "
                f"run has {self.steps_per_epoch} (a different data set, batch size or number of "
                "replicas): its data position would be wrong")
        arrays_path = os.path.join(path, "variables.npz")
        if not os.path.exists(arrays_path):
            raise CheckpointError(f"{path}: variables.npz is missing")
        digest = sha256(arrays_path)
        if digest != manifest.get("sha256"):
            raise CheckpointError(f"{arrays_path}: sha256 {digest} does not match the manifest's "
                                  f"{manifest.get('sha256')} (corrupt or modified)")
        return manifest

    def load(self, reload=False, agree=None):
        """Reads the newest valid checkpoint; returns its ``(epoch, step)``
        (``(0, 0)`` if there is none). Its values are assigned to the model
        when training begins (or by ``restore_into``). A second call returns
        the same position without reading again unless ``reload``.

        ``agree``: for processes that must resume together (the workers of
        a multi-worker run), a function from this process's valid global
        steps to the step all of them resume from
        (``distribute.common_step``); it is called with ``None`` when this
        process cannot read its checkpoints, so that the others fail too
        instead of waiting. Newer checkpoints than the agreed step are moved
        aside to ``.superseded-ckpt-*`` (the newest ``keep`` kept, never counted)."""
        if self._position is not None and not reload:
            return self._position
        self._position = self._load(agree)
        return self._position

    def _load(self, agree=None):
        self._pending, self._superseded = None, []
        self._counter, self._last_saved, self.stopped = 0, None, False
        if agree is None:
            chosen = None
            for path, manifest in self._valid():  # newest first, verified lazily
                try:
                    chosen = (path, manifest, self._read(path, manifest))
                    break
                except CheckpointError as e:
                    self._skip(path, e)
        else:
            try:
                # Every valid checkpoint is a candidate (verified, not loaded).
                candidates = list(self._valid())
            except BaseException:
                # The other workers wait in the collective: tell them, then fail.
                try:
                    agree(None)
                except Exception:  # noqa: BLE001 -- this worker's own error is the one to raise
                    pass
                raise
            target = int(agree([m["global_step"] for _, m in candidates]))
            chosen = [(path, m) for path, m in candidates if m["global_step"] == target]
            if target and not chosen:
                raise CheckpointError(f"{self.directory} holds no checkpoint of the agreed "
                                      f"global step {target}")
            chosen = (*chosen[0], self._read(*chosen[0])) if chosen else None
            for path, m in candidates:
                if m["global_step"] > target:
                    warnings.warn(f"Resuming from global step {target}, the newest that every "
                                  f"worker holds; moving the newer {path} aside", stacklevel=3)
                    self._superseded.append(m["tracked"])
                    self._move_aside(path, "superseded")
        if chosen is None:
            self._tell_superseded()  # resuming from scratch: nothing to restore into
            return 0, 0
        path, manifest, arrays = chosen
        self._pending = (path, manifest, arrays)
        self._counter = self._last_saved = manifest["global_step"]
        self.stopped = bool(manifest.get("stopped", False))
        return manifest["epoch"], manifest["step"]

    def _tell_superseded(self):
        """Gives tracked objects with ``supersede`` the states of the newer
        checkpoints an agreed resume set aside (once)."""
        for name, obj in self.tracked.items():
            newer = [_decode(t[name]) for t in self._superseded if name in t]
            if newer and hasattr(obj, "supersede"):
                obj.supersede(newer)
        self._superseded = []

    def _skip(self, path, error):
        warnings.warn(f"Skipping checkpoint: {error}", stacklevel=4)
        # Out of the way, so pruning never counts it as a good one.
        self._move_aside(path, "bad")

    def _valid(self):
        """(path, manifest) of each checkpoint that passes its sha256 check,
        newest first; the others are moved aside as they are met."""
        for path in self.checkpoints():
            try:
                manifest = self._verify(path)
            except CheckpointMismatch:
                raise
            except CheckpointError as e:
                self._skip(path, e)
                continue
            yield path, manifest

    def _move_aside(self, path, why):
        """Renames ``path`` to ``.{why}-ckpt-N``; of those, the newest ``keep``
        stay (for inspection) and older ones are deleted, so that repeated
        interruptions cannot fill the disk."""
        aside = os.path.join(self.directory, f".{why}-{os.path.basename(path)}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        for name in _numbered(self.directory, f".{why}-")[self.keep:]:
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    @property
    def position(self):
        """(epoch, step, global_step) of the loaded checkpoint, or zeros."""
        epoch, step = self._position or (0, 0)
        return epoch, step, epoch * self.steps_per_epoch + step

    def restore_into(self, model):
        """Assigns the loaded checkpoint to ``model`` (built, compiled)."""
        if self._pending is None:
            return False
        path, manifest, arrays = self._pending
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)  # its slots are part of the state
        current = _state_variables(model)
        saved = list(zip(arrays, manifest["variables"]))
        pairs = _match(path, [(g, v) for g, v in current if g != "metrics"],
                       [(a, d) for a, d in saved if d[0] != "metrics"])
        # Metric accumulators exist only once the metrics are built (``fit``
        # builds them before restoring): they are restored when this model
        # holds the same ones as the checkpoint, and left alone otherwise;
        # weights and optimizer must match.
        accumulators = [(g, v) for g, v in current if g == "metrics"]
        saved_accumulators = [(a, d) for a, d in saved if d[0] == "metrics"]
        if (sorted(_key(g, v.path) for g, v in accumulators)
                == sorted(_key(*d[:2]) for _, d in saved_accumulators)):
            pairs += _match(path, accumulators, saved_accumulators)
        for v, array, (_, name, shape, _) in pairs:
            if list(v.shape) != shape or list(array.shape) != shape:
                raise CheckpointError(
                    f"{path}: variable {name} has shape {shape}; this model's {v.path} has "
                    f"shape {list(v.shape)}: it was written by a different model or config")
        for v, array, _ in pairs:
            v.assign(array)
        for name, obj in self.tracked.items():
            if name in manifest["tracked"]:
                obj.set_state(_decode(manifest["tracked"][name]))
        self._tell_superseded()
        self._pending = None
        return True

    # -- writing ---------------------------------------------------------------

    def save(self):
        """Writes a checkpoint of the current state (atomically)."""
        model = self.model
        global_step = self._counter
        epoch, step = divmod(global_step, self.steps_per_epoch)
        name = f"ckpt-{global_step:09d}"
        final = os.path.join(self.directory, name)
        os.makedirs(self.directory, exist_ok=True)
        tmp = os.path.join(self.directory, f".{name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        variables = _state_variables(model)
        arrays_path = os.path.join(tmp, "variables.npz")
        with open(arrays_path, "wb") as f:
            np.savez(f, **{f"v{i}": np.asarray(v.numpy()) for i, (_, v) in enumerate(variables)})
            f.flush()
            os.fsync(f.fileno())
        manifest = {
            "format": FORMAT, "epoch": epoch, "step": step, "global_step": global_step,
            "steps_per_epoch": self.steps_per_epoch, "sha256": sha256(arrays_path),
            "variables": [_describe(g, v) for g, v in variables],
            "tracked": {k: _encode(obj.get_state()) for k, obj in self.tracked.items()},
            "stopped": bool(getattr(model, "stop_training", False)),
        }
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(final):  # this step again (e.g. an early stop): newest wins
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(self.directory)
        self._last_saved = global_step
        for old in self.checkpoints()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _clean_temporaries(self):
        if os.path.isdir(self.directory):
            for n in os.listdir(self.directory):
                if n.startswith(".ckpt-") and ".tmp" in n:
                    shutil.rmtree(os.path.join(self.directory, n), ignore_errors=True)

    # -- callback hooks ------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._clean_temporaries()

    def on_epoch_begin(self, epoch, logs=None):
        # After fit's reset_metrics: the restored accumulators survive.
        if self._pending is not None:
            self.restore_into(self.model)
        self._epoch_base = self._counter

    def on_train_batch_end(self, batch, logs=None):
        self._counter = self._epoch_base + batch + 1  # batch: last index of the execution
        if not self.every_steps:
            return
        if self._counter % self.steps_per_epoch == 0:
            return  # the epoch-end save covers it, after validation and logs
        last = self._last_saved or 0
        if self._counter - last >= self.every_steps:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()


def resumable_fit(model, make_dataset, epochs, steps_per_epoch, state, callbacks=(), **kwargs):
    """``model.fit`` that resumes from ``state``'s newest checkpoint.

    Args:
        model: a compiled Keras model.
        make_dataset: ``(start_epoch, start_step) -> dataset`` yielding the
            batches from that position to the end of training.
        epochs, steps_per_epoch: as for ``fit``.
        state: a ``TrainingState``.
        callbacks: other callbacks; ``state`` runs after them.
        **kwargs: passed to ``fit`` (``validation_data``, ``verbose``, ...).

    Returns the list of ``History`` objects of the ``fit`` calls (two when
    resuming mid-epoch: the rest of that epoch, then the remaining epochs;
    none when the run had already finished).
    """
    if state.steps_per_epoch != steps_per_epoch:
        raise ValueError(f"state.steps_per_epoch={state.steps_per_epoch} differs from "
                         f"steps_per_epoch={steps_per_epoch}")
    epoch, step = state.load()
    callbacks = [c for c in callbacks if c is not state] + [state]
    histories = []
    if epoch >= epochs or state.stopped:  # finished, or stopped early (a callback said so)
        state.restore_into(model)
        return histories
    if step:
        histories.append(model.fit(make_dataset(epoch, step), initial_epoch=epoch,
                                   epochs=epoch + 1, steps_per_epoch=steps_per_epoch - step,
                                   callbacks=callbacks, **kwargs))
        epoch += 1
        if model.stop_training or epoch >= epochs:
            return histories
    histories.append(model.fit(make_dataset(epoch, 0), initial_epoch=epoch, epochs=epochs,
                               steps_per_epoch=steps_per_epoch, callbacks=callbacks, **kwargs))
    return histories
