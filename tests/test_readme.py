"""The README's measured numbers are the JSON in results/, not typed by hand."""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# The "Measured results" table: config -> its metrics.json copy in results/.
TABLE = {"configs/fmnist_standard.py": "fmnist_standard",
         "configs/cifar10_standard.py": "cifar10_standard",
         "configs/adversarial.py:fmnist,adv_only": "fmnist_adv_only",
         "configs/adversarial.py:fmnist,mixed_bn": "fmnist_mixed_bn",
         "configs/adversarial.py:fmnist,mixed_mixbn": "fmnist_mixed_mixbn"}


def _json(name):
    return json.loads((ROOT / "results" / f"{name}.json").read_text())


def _expected_percentages(metrics):
    r = metrics["results"]
    routes = [r["route_adversarial"], r["route_clean"]] if "route_clean" in r else [r]
    out = []
    for route in routes:
        out += [route["clean_accuracy"]] + ([route["adv_accuracy"]]
                                            if route["adv_accuracy"] is not None else [])
    return [f"{100 * v:.2f}" for v in out]


def test_measured_results_table_equals_results_json():
    section = README.split("## Measured results", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `([^`]+)` \|", line)
        if m:
            rows[m.group(1)] = line.split("|")[4]
    assert set(rows) == set(TABLE)
    for config, name in TABLE.items():
        metrics, cell = _json(name), rows[config]
        assert re.findall(r"(\d+\.\d\d)%", cell) == _expected_percentages(metrics), config
        assert f"({metrics['epochs']} epochs, {metrics['train_seconds'] / 60:.1f} min" in cell
        # Every "PGD-20" in the row names the step the run's eval attack took.
        step = re.search(r"step_size=([0-9.e-]+)", metrics["eval_attack"] or "")
        for after in cell.split("PGD-20")[1:]:
            assert step and re.match(rf" \((epsilon [0-9.]+, )?step {float(step.group(1)):g}[,)]",
                                     after), (config, after)


def test_quick_start_numbers_equal_results_quickstart_json():
    q = _json("quickstart")
    r = q["results"]
    text = " ".join(README.split("## Quick start", 1)[1].split("\n\n", 2)[1].split())
    assert (f"{100 * r['clean_accuracy']:.1f}% clean / {100 * r['adv_accuracy']:.1f}% PGD-20"
            in text), text
    assert f"{q['train_seconds']:.0f} s of training" in text, text
    assert f"{q['test_images']} test images" in text


def test_baselines_table_rows_of_zoo_entries_equal_their_metadata():
    """The "Beside the published baselines" table: each row naming a zoo entry
    shows its metadata's clean accuracy, AutoAttack (or "not run yet"), worst
    case over PGD-20 and APGD-CE, and number of test images."""
    section = README.split("### Beside the published baselines", 1)[1].split("\n#", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    assert rows, "no zoo entry in the baselines table"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = cells[0].strip("`")
        meta = json.loads((ROOT / "zoo" / name / "metadata.json").read_text())
        route = meta.get("default_route") or "default"
        r = meta["evaluation"]["results"][route]
        aa = ((meta["evaluation"].get("autoattack") or {}).get("results") or {}).get(route)
        assert cells[2] == f"{100 * r['clean']:.2f}", (name, cells)
        assert cells[3] == (f"{100 * aa['autoattack']:.2f} ({aa['n']:,} images)" if aa
                            else "not run yet"), (name, cells)
        assert cells[4] == f"{100 * r['worst_case']:.2f}", (name, cells)
        assert cells[5] == f"{r['n']:,}", (name, cells)
