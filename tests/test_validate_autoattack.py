"""benchmarks/validate_autoattack.py's torchattacks side: a run stopped and
resumed gives every stage the same robust mask as a run that never stopped."""

import importlib.util
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torchattacks side needs torch")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "validate_autoattack", ROOT / "benchmarks" / "validate_autoattack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Twin(torch.nn.Module):
    """Predicts the label written in pixel (0, 1), or the next class once an
    attack has set the flag in pixel (1, 0)."""

    def forward(self, x):
        label = torch.round(x[:, 0, 0, 1] * 10).long()
        pred = torch.where(x[:, 0, 1, 0] > 0.5, (label + 1) % 10, label)
        return torch.nn.functional.one_hot(pred, 10).float()


class _Stop(Exception):
    pass


def _attacks(breaks, stop_at=None):
    """Four fake stages; stage s breaks the images whose ids are in
    ``breaks[s]``; the ``stop_at``-th call (counted over all stages) stops."""
    calls = [0]

    def make(ids):
        def attack(x, y):
            calls[0] += 1
            if stop_at is not None and calls[0] == stop_at:
                raise _Stop
            out = x.clone()
            hit = torch.tensor([int(round(float(v) * 1000)) in ids for v in x[:, 0, 0, 0]])
            out[hit, 0, 1, 0] = 1.0
            return out
        return attack
    return {name: make(ids) for name, ids in breaks.items()}


def test_a_resumed_run_keeps_each_finished_stage_mask(tmp_path, monkeypatch):
    va = _benchmark()
    n = 60
    x = np.zeros((n, 1, 2, 2), np.float32)
    x[:, 0, 0, 0] = np.arange(n) / 1000
    y = np.arange(n) % 10
    x[:, 0, 0, 1] = y / 10
    x[::7, 0, 1, 0] = 1.0  # misclassified clean
    rng = np.random.default_rng(0)
    breaks = {s: set(rng.choice(n, 12, replace=False).tolist()) for s in va.STAGES}
    settings = {"fake": True}

    monkeypatch.setattr(va, "reference_attacks", lambda *a, **k: _attacks(breaks))
    _, whole, _ = va.torch_reference(_Twin(), x, y, 0.0, 0, False, 8)

    path = str(tmp_path / "torchattacks.json")
    # Stopped inside the third stage, then resumed (twice: once more at the end).
    monkeypatch.setattr(va, "reference_attacks", lambda *a, **k: _attacks(breaks, stop_at=9))
    with pytest.raises(_Stop):
        va.torch_reference(_Twin(), x, y, 0.0, 0, False, 8, progress=va._Progress(path, settings))
    monkeypatch.setattr(va, "reference_attacks", lambda *a, **k: _attacks(breaks))
    for _ in range(2):
        clean, resumed, _ = va.torch_reference(_Twin(), x, y, 0.0, 0, False, 8,
                                               progress=va._Progress(path, settings))
    assert list(resumed) == list(va.STAGES)
    for stage in va.STAGES:
        np.testing.assert_array_equal(resumed[stage], whole[stage], err_msg=stage)
    # Each stage lowered the count (the fake stages break disjoint-enough sets).
    counts = [int(clean.sum())] + [int(whole[s].sum()) for s in va.STAGES]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1], counts


def test_masks_come_from_the_stage_records_not_a_stale_after_key(tmp_path, monkeypatch):
    """A progress file of an earlier version, whose ``after`` masks a resume
    overwrote with the latest mask: the masks returned are those the stages
    recorded (the images each next stage started on), and nothing reruns."""
    va = _benchmark()
    import json
    stages = {"apgd-ce": [0, 1, 2, 3, 4, 5], "apgd-t": [0, 1, 2], "fab-t": [0, 1], "square": [0]}
    state = {"settings": {"fake": True}, "clean": [True] * 6, "stage_images": stages,
             "robust": [False] * 6, "done": {s: len(v) for s, v in stages.items()},
             "seconds": {s: 1.0 for s in stages},
             "after": {s: [False] * 6 for s in va.STAGES}}
    path = tmp_path / "torchattacks.json"
    path.write_text(json.dumps(state))
    monkeypatch.setattr(va, "reference_attacks", lambda *a, **k: {s: None for s in va.STAGES})
    x, y = np.zeros((6, 1, 2, 2), np.float32), np.zeros(6, np.int64)
    clean, after, seconds = va.torch_reference(_Twin(), x, y, 0.0, 0, False, 8,
                                               progress=va._Progress(str(path), {"fake": True}))
    assert clean.all() and seconds == state["seconds"]
    assert {s: m.tolist() for s, m in after.items()} == {
        "apgd-ce": [True, True, True, False, False, False],
        "apgd-t": [True, True, False, False, False, False],
        "fab-t": [True, False, False, False, False, False],
        "square": [False] * 6}
