"""The report's scales side by side: for every claim, each scale's effect and
verdict (the same experiment code, so the same rule) beside the paper's, a
sentence per claim on what changes with scale, and the plots of both scales
in one figure where both have results."""

import os
import re

from tf_advscale.reproduce import plots
from tf_advscale.reproduce.experiments import EXPERIMENTS


def claim_key(claim):
    """A claim's identity across scales: its text without numbers (the
    scales compare depth 8 with 32, or 20 with 56, under the same claim)."""
    return re.sub(r"\d+(\.\d+)?", "#", claim)


def _measured(claim):
    """What a claim compares at its scale: its first parenthesis."""
    m = re.search(r"\(([^()]*)\)", claim)
    return m.group(1) if m else claim


def _effects(text):
    """The signed numbers of an effect before its details in parentheses
    ("+5.6 (25.3 vs 19.8, pgd-50)" -> [5.6]; "-6.0 at 10 steps, -6.7 at
    1000" -> [-6.0, -6.7])."""
    head = text.split("(", 1)[0]
    return [float(x) for x in re.findall(r"(?<![\w.-])[+-]\d+(?:\.\d+)?", head)]


def _claims(by_scale):
    """``{key: {scale: finding}}`` in experiment order, then finding order,
    from ``{scale: {experiment: result}}``."""
    claims = {}
    for name in EXPERIMENTS:
        for scale, results in by_scale.items():
            for f in results.get(name, {}).get("findings", []):
                claims.setdefault((name, claim_key(f["claim"])), {})[scale] = f
    return claims


def _cell(scale, name, finding, by_scale, runs):
    """(ours, verdict) of one scale for one claim, or its status."""
    result = by_scale[scale].get(name)
    if result and result.get("pending"):
        return ("not run yet" if finding else "not measured at this scale"), "-"
    if finding:
        return finding["ours"], finding["verdict"]
    if result:
        return "not measured at this scale", "-"
    return ("not run yet" if name in runs[scale] else "not run at this scale"), "-"


def _change(number, cells, paper, scales):
    """The sentence on what changes with scale of claim ``number``."""
    first, last = scales[0], scales[-1]
    (o1, v1), (o2, v2) = cells[first], cells[last]
    if "-" in (v1, v2):  # a scale without the claim: say where each stands
        text = "; ".join(f"{s} scale: {o}" + (f", {v}" if v != "-" else "")
                         for s, (o, v) in ((first, cells[first]), (last, cells[last])))
        return f"{number}. {text[0].upper()}{text[1:]}."
    e1, e2, ep = _effects(o1), _effects(o2), _effects(paper)
    if len(e1) == len(e2) == 1 and e1 == e2:
        how = f"the effect stays at {e1[0]:+g} points"
    elif len(e1) == len(e2) == 1:
        grows = "grows" if abs(e2[0]) > abs(e1[0]) else "shrinks"
        sign = ", changing sign" if (e1[0] > 0) != (e2[0] > 0) else ""
        how = f"the effect {grows} from {e1[0]:+g} to {e2[0]:+g} points{sign}"
    else:
        how = (f"the differences go from {', '.join(f'{e:+g}' for e in e1)} to "
               f"{', '.join(f'{e:+g}' for e in e2)} points")
    paper_part = f" (the paper: {', '.join(f'{e:+g}' for e in ep)})" if ep else ""
    verdicts = (f"the verdict stays *{v1}*" if v1 == v2
                else f"the verdict goes from *{v1}* to *{v2}*")
    return f"{number}. From {first} to {last} scale {how}{paper_part}; {verdicts}."


def _combined_plots(name, dataset, by_scale, out, rel):
    """The plots of experiment ``name`` with every scale that has results in
    one figure each, written into ``out``; their Markdown image lines."""
    specs = {s: plots.of_result(name, r[name]) for s, r in by_scale.items()
             if name in r and not r[name].get("pending")}
    if len(specs) < 2 or None in specs.values():
        return []
    os.makedirs(out, exist_ok=True)
    lines = []
    for key in next(iter(specs.values())):
        both = plots.combine({s: spec[key] for s, spec in specs.items() if key in spec})
        path = os.path.join(out, f"{key}_scales.png")
        plots.draw(both, path, f"{name} ({dataset}): {' and '.join(specs)} scale")
        lines.append(f"![{name}, {' and '.join(specs)} scale]({rel}/{os.path.basename(path)})")
    return lines


def section(dataset, by_scale, runs, plot_dirs, out_dir):
    """The side-by-side section of ``dataset``: ``by_scale`` is ``{scale:
    {experiment: result}}`` (the first scale the base; a result not computed
    yet is ``{"findings": [claims it will have], "pending": True}``), ``runs``
    each scale's experiments, ``plot_dirs`` where each experiment's combined
    plots go."""
    scales = list(by_scale)
    lines = [f"## The scales side by side ({dataset})", "",
             "Each scale's effect and verdict under the same rule, beside the paper's. "
             f"Claims of the experiments that run at {' or '.join(scales[1:])} scale.", "",
             "| # | experiment | claim | " + " | ".join(f"{s} | {s}: verdict" for s in scales)
             + " | paper |", "|---|---|---|" + "---|---|" * len(scales) + "---|"]
    names = [n for n in EXPERIMENTS if any(n in runs[s] for s in scales[1:])]
    claims = {k: v for k, v in _claims(by_scale).items() if k[0] in names}
    paragraphs = []
    for number, ((name, _), found) in enumerate(claims.items(), 1):
        title = next(iter(found.values()))["claim"]
        cells = {s: _cell(s, name, found.get(s), by_scale, runs) for s in scales}
        shown = [f"{o} [{_measured(found[s]['claim'])}]"
                 if s in found and found[s]["claim"] != title else o
                 for s, (o, _) in cells.items()]
        lines.append(f"| {number} | {name} | {title} | "
                     + " | ".join(f"{o} | {cells[s][1]}" for s, o in zip(scales, shown))
                     + f" | {next(iter(found.values()))['paper']} |")
        paragraphs.append(_change(number, cells, next(iter(found.values()))["paper"], scales))
    missing = [n for n in names if not any(n == k[0] for k in claims)]
    lines += [""] + (["Not run yet at any scale: " + ", ".join(missing) + ".", ""]
                     if missing else [])
    lines += ["What changes with scale:", ""] + paragraphs + [""]
    for name in names:
        rel = os.path.relpath(plot_dirs[name], out_dir)
        lines += _combined_plots(name, dataset, by_scale, plot_dirs[name], rel)
    return lines + [""]
