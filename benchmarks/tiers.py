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

TIERS = {
    "fast_n2": ["-q", "-n", "2"],  # the README's test command (CI)
    "fast_serial": ["-q"],
    "slow": ["-q", "-m", "slow and not long"],
}
SLOWEST = 30


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
    p.add_argument("--tiers", default="fast_n2,fast_serial,slow",
                   help="comma-separated: " + ", ".join(TIERS))
    a = p.parse_args()
    tiers = [t for t in a.tiers.split(",") if t]
    unknown = [t for t in tiers if t not in TIERS]
    if unknown or not tiers:
        p.error(f"--tiers: unknown {unknown[0]!r}; expected some of {sorted(TIERS)}"
                if unknown else "--tiers: none given")
    from tf_advscale import distribute  # imports TensorFlow, idle while the tiers run
    record = {"cpu": distribute.cpu_info()["model"], "cpus": os.cpu_count(),
              "date": datetime.date.today().isoformat(), "tiers": {}}
    for tier in tiers:
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
