"""Seed statistics, verdicts and the Markdown cells that experiments and the
report share (the verdict rule is in the package doc)."""

import numpy as np


def stat(values, digits=2):
    """Mean, sample standard deviation and the values, rounded."""
    v = np.asarray(values, np.float64)
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": round(float(v.mean()), digits), "sd": round(sd, digits),
            "values": [round(float(x), digits) for x in v]}


def fmt(s, digits=1):
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def verdict(ours, ours_spread, paper=None, paper_ref=None, ours_ref=None):
    """The verdict of one effect (see the package doc). ``ours``/``paper`` are
    differences in points; ``paper_ref``/``ours_ref`` the baselines for the
    relative size."""
    if abs(ours) <= ours_spread:
        return "inconclusive (within the seed spread)"
    if paper is None:
        return "reproduced in direction" if ours > 0 else "not reproduced"
    if (ours > 0) != (paper > 0):
        return "not reproduced"
    if paper_ref and ours_ref:
        rel_ours, rel_paper = abs(ours) / abs(ours_ref), abs(paper) / abs(paper_ref)
        if rel_paper / 2 <= rel_ours <= rel_paper * 2:
            return "reproduced in magnitude"
    return "reproduced in direction"


def _crossing_verdict(d_lo, spread_lo, d_hi, spread_hi):
    """Mixed minus adversarial-only: above 0 at the weak attack and below 0
    at the strong one, each beyond its spread, is a crossing."""
    if d_lo < -spread_lo or d_hi > spread_hi:
        return "not reproduced"
    if d_lo > spread_lo and d_hi < -spread_hi:
        return "reproduced in direction"
    return "inconclusive (within the seed spread)"


def _spread(*stats):
    return sum(s["sd"] for s in stats)

# -- Markdown cells -------------------------------------------------------------------------

def _percent(v):
    return None if v is None else 100 * v


def _num(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header, rows):
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
