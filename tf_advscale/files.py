"""Small file helpers, in one place: digests, atomic writes, JSON, the source commit.

Every file the package writes goes through a temporary name and a rename, so
a crash never leaves a half-written file behind.
"""

import hashlib
import json
import os
import subprocess

import numpy as np


def sha256(path, chunk=1 << 20):
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path):
    """Flushes a directory entry (a rename) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_json(obj):
    """``json.dump``'s ``default=``: numpy scalars as numbers, tuples and sets
    as lists, anything else as its string."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def save_model_atomic(model, path):
    """``model.save(path)`` through a temporary file and a rename: a crash
    mid-write never leaves a truncated ``.keras`` file at ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}.keras")
    model.save(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)


def write_json(path, obj):
    """Writes JSON atomically (sorted keys, indented)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=to_json)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_npz(path, **arrays):
    """``np.savez`` atomically."""
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _package_git(package_dir=None, timeout=30):
    """A function running git in the package folder and returning its output
    (``check=False``: whatever it printed, even on failure), or None outside a
    checkout of the package: a pip install, even one inside some other git
    repository (a virtual environment in a user's project), where the package
    folder is not at the repository's root."""
    here = package_dir or os.path.dirname(os.path.abspath(__file__))

    def git(*args, check=True):
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                              timeout=timeout, check=check).stdout

    try:
        top = git("rev-parse", "--show-toplevel").strip()
        if os.path.samefile(top, os.path.dirname(os.path.abspath(here))):
            return git
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def package_tree(package_dir=None):
    """The package's own source as git sees it: ``"tree T"``, T the git tree of
    the package folder at HEAD (commits that change only results, notes or
    tests leave it alone), with ``" + edits D"`` where the folder has
    uncommitted changes (D: a hash of the diff and the untracked files' names).
    None outside a checkout of the package (see ``_package_git``)."""
    git = _package_git(package_dir)
    if git is None:
        return None
    try:
        tree = git("rev-parse", "HEAD:./").strip()
        edits = git("diff", "HEAD", "--", ".") + git("ls-files", "--others", "--exclude-standard",
                                                    "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"tree {tree[:12]}" + (
        f" + edits {hashlib.sha256(edits.encode()).hexdigest()[:8]}" if edits else "")


def source_commit(package_dir=None):
    """The git commit of the package's checkout, with "+dirty" if a tracked
    file is modified; None outside a checkout of the package (see
    ``_package_git``)."""
    git = _package_git(package_dir, timeout=10)
    if git is None:
        return None
    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", check=False).strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")
