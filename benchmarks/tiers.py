"""Wall time of the test tiers on this machine: the README's test command
(the fast tests, in two processes, what CI runs), the same in one process,
and the heavy tier (-m "slow and not long", run by hand). Each tier runs as
its own pytest subprocess from the repository root; the JSON records its
seconds, its exit status, pytest's summary line, its slowest tests, the CPU
and the load average before it started (a load above about 0.5 on two
cores means something else was running, and the times are not clean).

CI's budget is about 25 minutes, installation included: run this on an
otherwise idle machine after adding heavy tests, and move what does not fit
behind the slow marker.

    python benchmarks/tiers.py --out results/bench_test_tiers_MACHINE.json
    python benchmarks/tiers.py --tiers fast_n2 --out /tmp/t.json
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SLOWEST = 30


def ci_pytest_commands(path=os.path.join(ROOT, ".ci", "run")):
    """Each pytest command in the CI script, as its argument list after
    'pytest' (the script's lines joined at backslashes, split at ``&&``,
    ``||``, ``;``, ``|`` and ``&``)."""
    import shlex
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = []
        for token in list(lexer) + [";"]:
            if token not in ("&&", "||", ";", "|", "&"):
                words.append(token)
                continue
            if "pytest" in words:
                before = words[:words.index("pytest")]
                if any("=" in w for w in before):
                    raise ValueError(f"{path}: an environment setting before pytest: {words}")
                out.append(words[words.index("pytest") + 1:])
            words = []
    return out


def without_workers(args):
    """``args`` without pytest-xdist's worker count (-n N, -nN,
    --numprocesses[=]N)."""
    workers = ("-n", "--numprocesses")
    return [a for i, a in enumerate(args)
            if not a.startswith(workers) and (i == 0 or args[i - 1] not in workers)]


def tiers():
    """name -> pytest arguments. fast_n2 is CI's one test command (the
    README's), read from .ci/run; fast_serial is it in one process."""
    ci = ci_pytest_commands()
    if len(ci) != 1:
        raise ValueError(f".ci/run: expected one pytest command, found {len(ci)}: {ci}")
    return {"fast_n2": ci[0], "fast_serial": without_workers(ci[0]),
            "slow": ["-q", "-m", "slow and not long"]}


def run_tier(args, slowest=SLOWEST):
    """Runs ``python -m pytest ARGS`` in the repository root, listing its
    ``slowest`` tests; returns its record."""
    load = os.getloadavg()[0]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", *args, f"--durations={slowest}",
                           "--durations-min=0"],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    lines = done.stdout.splitlines()
    summary = next((l.strip("= ") for l in reversed(lines)
                    if re.search(r"\b(passed|failed|error)", l)), None)
    durations = [{"seconds": float(m.group(1)), "phase": m.group(2), "test": m.group(3)}
                 for m in (re.match(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)", l)
                           for l in lines) if m]
    return {"command": "python -m pytest " + " ".join(args), "seconds": round(seconds, 1),
            "returncode": done.returncode, "summary": summary,
            "load_average_before": round(load, 2), "slowest": durations[:slowest]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    TIERS = tiers()
    p.add_argument("--tiers", default="fast_n2,fast_serial,slow",
                   help="comma-separated: " + ", ".join(TIERS))
    a = p.parse_args()
    chosen = [t for t in a.tiers.split(",") if t]
    unknown = [t for t in chosen if t not in TIERS]
    if unknown or not chosen:
        p.error(f"--tiers: unknown {unknown[0]!r}; expected some of {sorted(TIERS)}"
                if unknown else "--tiers: none given")
    from tf_advscale import distribute  # imports TensorFlow, idle while the tiers run
    # The tests inherit this process's oneDNN setting (tf_advscale.cpu_kernels).
    record = {"cpu": distribute.describe_cpu(), "cpus": os.cpu_count(),
              "date": datetime.date.today().isoformat(), "tiers": {}}
    for tier in chosen:
        print(f"[tiers] {tier}: python -m pytest {' '.join(TIERS[tier])}", flush=True)
        record["tiers"][tier] = run_tier(TIERS[tier])
        r = record["tiers"][tier]
        print(f"[tiers] {tier}: {r['seconds']} s, {r['summary']} "
              f"(load before {r['load_average_before']})", flush=True)
        with open(a.out, "w") as f:  # after each tier: a stopped run keeps what it measured
            json.dump(record, f, indent=2)
    return 0 if all(r["returncode"] == 0 for r in record["tiers"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
