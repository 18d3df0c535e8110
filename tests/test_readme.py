"""The README's measured numbers are the JSON in results/, not typed by hand."""

import json
import pathlib
import re

import pytest

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


def test_measured_results_commands_equal_their_zoo_entries_training_commands():
    """Each row of "Measured results" is the run a zoo entry was published
    from (same training seconds and parameters); its command is the one on
    that entry's card, which a test in test_zoo checks loads the config the
    run trained with. A config file changed since the run (a new default)
    shows up as a --set in both places."""
    section = README.split("## Measured results", 1)[1].split("\n### ", 1)[0]
    entries = [json.loads(p.read_text()) for p in sorted((ROOT / "zoo").glob("*/metadata.json"))]
    checked = set()
    for line in section.splitlines():
        m = re.match(r"\| `([^`]+)` \|", line)
        if not m:
            continue
        checked.add(m.group(1))
        metrics = _json(TABLE[m.group(1)])
        same = [e for e in entries if e["training"]["train_seconds"] == metrics["train_seconds"]
                and e["params"] == metrics["params"]]
        assert len(same) == 1, (m.group(1), [e["name"] for e in same])
        command = line.split("|")[5].strip()
        assert command == f"`{same[0]['recipe']['train_command']}`", (m.group(1), command)
    assert checked == set(TABLE)


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


def _flat(text):
    return " ".join(text.split())


def test_autoattack_validation_lines_equal_their_json():
    """Each `results/validate_autoattack_*.json` the README names is quoted
    there as the JSON says: clean, robust after each attack on both sides,
    both wall times and the ratio."""
    text = _flat(README)
    names = sorted(set(re.findall(r"results/(validate_autoattack_[a-z0-9_]+)\.json", README)))
    assert names, "the README names no AutoAttack validation"
    for name in names:
        d = _json(name)
        ours = d["robust_accuracy_after_each_attack"]["tf_advscale"]
        theirs = d["robust_accuracy_after_each_attack"]["torchattacks_standard_settings"]
        n = int(d["data"].split(", ")[1].split()[0])
        route = f" ({d['route']} route)" if d.get("route") else ""
        stages = ", ".join(f"after {label} {100 * ours[k]:.1f} vs {100 * theirs[k]:.1f}"
                           for k, label in [("apgd-ce", "APGD-CE"), ("apgd-t", "APGD-T"),
                                            ("fab-t", "FAB-T"), ("square", "Square")])
        s = d["seconds"]
        expected = (f"`{d['model'].split(':', 1)[1]}`{route}, {n:,} seeded test images "
                    f"(`results/{name}.json`): clean {100 * d['clean_accuracy']['tf_advscale']:.1f}"
                    f" vs {100 * d['clean_accuracy']['torchattacks']:.1f} (ours vs torchattacks);"
                    f" robust {stages} (AutoAttack); {s['tf_advscale']:,.0f} s vs "
                    f"{s['torchattacks_standard_settings']:,.0f} s, "
                    f"{d['speedup_tf_advscale_over_torchattacks']:.2f}x.")
        assert expected in text, (name, expected)


def test_autoattack_stage_timings_equal_their_json():
    text = _flat(README)
    names = sorted(set(re.findall(r"results/(autoattack_stages_[a-z0-9_]+)\.json", README)))
    assert names, "the README names no stage timing"
    order = ["apgd-ce", "apgd-t", "fab-t", "square"]
    for name in names:
        d = _json(name)
        per = d["seconds_per_image"]
        ours = " / ".join(f"{per[k]['tf_advscale']:.2f}" for k in order)
        ratios = " / ".join(f"{d['ratio_theirs_over_ours'][k]:.2f}x" for k in order)
        first, last = re.search(r"images (\d+)\.\.(\d+) of", d["data"]).groups()
        n = int(last) - int(first) + 1
        assert (f"(`results/{name}.json`, {n:,} images): per image attacked, ours {ours} s for "
                f"APGD-CE / APGD-T / FAB-T / Square; torchattacks takes {ratios} as long."
                in text), name


def test_model_cost_figures_equal_their_json():
    text = _flat(README)
    bn = _json("model_cost_resnet20_pgd3")["seconds_per_image"]["100"]
    mix = _json("model_cost_resnet20_mixbn_pgd3")["seconds_per_image"]["100"]

    def ms(row, side, call):
        return f"{1000 * row[side][call]:.2f}"
    grad, fwd = "forward_and_input_gradient", "forward"
    assert (f"batch 100, per image, forward plus input gradient: ours {ms(bn, 'tf_advscale', grad)}"
            f" ms (BN entry) and {ms(mix, 'tf_advscale', grad)} ms (MixBN entry, adversarial "
            f"route), the PyTorch twin {ms(bn, 'torch', grad)} and {ms(mix, 'torch', grad)} ms; "
            f"forward alone: ours {ms(bn, 'tf_advscale', fwd)} and {ms(mix, 'tf_advscale', fwd)}"
            f" ms, the twin {ms(bn, 'torch', fwd)} and {ms(mix, 'torch', fwd)} ms.") in text


def test_the_two_cpus_step_rates_equal_their_json():
    """The README's reason for reproduce plan --measure-rate."""
    fast = _json("bench_peers")["workloads"]["resnet20_cifar_b128"]["tf_advscale"]
    slow = _json("bench_precision_amd_epyc")["train_images_per_s"]["resnet20"]["float32"]
    a, b = fast["fgsm_rs_train"]["images_per_s"], slow
    assert a / b > 2, (a, b)  # "several-fold"
    assert (f"a ResNet-20 single-step training step (batch 128, float32) reads {a:.0f} "
            "images/s in `results/bench_peers.json` (FGSM-RS, an earlier 2-core machine whose "
            f"CPU model it does not record) and {b:.0f} in "
            "`results/bench_precision_amd_epyc.json`") in _flat(README)


def test_bfloat16_slowdowns_equal_their_json():
    """The README's and configs/fast.py's reasons for precision "auto"."""
    d = _json("bench_precision_amd_epyc")["train_images_per_s"]
    r20, prn = (f"{d[arch]['float32_over_mixed_bfloat16']:.1f}x"
                for arch in ("resnet20", "preactresnet18"))
    assert f"{r20} (ResNet-20) and {prn} (PreActResNet-18) slower than float32" in _flat(README)
    fast = _flat((ROOT / "configs" / "fast.py").read_text())
    assert f"{r20} for resnet20, {prn} for preactresnet18" in fast


def _tiers():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_tiers", ROOT / "benchmarks" / "tiers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ci_pytest_commands():
    """Each pytest command in .ci/run, as its argument list after 'pytest'
    (the parser benchmarks/tiers.py times CI's command with)."""
    return _tiers().ci_pytest_commands()


def _collected(args):
    import subprocess
    import sys
    # -qq would print counts, not test ids; a collection needs no workers.
    args = [a for a in _tiers().without_workers(args) if a != "-q"]
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_ci_runs_the_readme_test_command_only():
    """CI runs one pytest command, the README's: running the slow tier as a
    second step once made CI take an hour, against a budget of about 25
    minutes."""
    commands = _ci_pytest_commands()
    assert len(commands) == 1, commands
    readme = " ".join(README.split())
    for args in commands:
        command = "python -m pytest " + " ".join(f'"{a}"' if " " in a else a for a in args)
        # The whole command: an inline code span, or the end of a code block's line.
        assert re.search(re.escape(command) + "`", readme) or \
            re.search(r"^ {4}.*" + re.escape(command) + r"$", README, re.M), command
        assert "-m" not in args and "long" not in " ".join(args), args


@pytest.mark.slow  # two pytest collections in subprocesses
def test_ci_selects_no_heavy_test():
    """CI's test command selects no test marked slow or long (the heavy
    tiers), even one marked both."""
    commands = _ci_pytest_commands()
    heavy = _collected(["-m", "slow or long"])
    assert heavy, "no test is marked slow or long; the check below would prove nothing"
    for args in commands:
        chosen = _collected(args)
        assert chosen, args
        assert not chosen & heavy, (args, sorted(chosen & heavy)[:5])


def test_the_tiers_benchmark_records_a_tiers_time_summary_and_slowest_tests(monkeypatch):
    """benchmarks/tiers.py, on a one-test selection instead of a tier."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import tiers
    r = tiers.run_tier(["-q", "tests/test_run_log.py", "-p", "no:cacheprovider"], slowest=5)
    assert r["returncode"] == 0 and r["summary"].startswith("1 passed"), r
    assert r["seconds"] > 0 and r["load_average_before"] >= 0
    assert r["slowest"] and r["slowest"][0]["test"].startswith("tests/test_run_log.py::"), r
    assert r["command"].startswith("python -m pytest -q tests/test_run_log.py")


def test_the_tiers_benchmark_times_ci_command_read_from_ci_run(tmp_path):
    """benchmarks/tiers.py's fast tiers are .ci/run's test command, with and
    without its workers, so the timing it records cannot drift from CI."""
    tiers = _tiers()
    t = tiers.tiers()
    assert [t["fast_n2"]] == _ci_pytest_commands()
    assert t["fast_serial"] == tiers.without_workers(t["fast_n2"]) != t["fast_n2"]
    for args in (["-q", "-n", "2", "-x"], ["-q", "-n2", "-x"], ["-q", "--numprocesses=2", "-x"],
                 ["-q", "--numprocesses", "auto", "-x"]):
        assert tiers.without_workers(args) == ["-q", "-x"], args
    ci = tmp_path / "run"
    ci.write_text("pip install . && \\\n  python -m pytest -q -k 'a or b'; echo done\n"
                  "X=1 pytest -q\n")
    with pytest.raises(ValueError, match="environment setting before pytest"):
        tiers.ci_pytest_commands(str(ci))
    ci.write_text("pip install . && \\\n  python -m pytest -q -k 'a or b'; echo done\n")
    assert tiers.ci_pytest_commands(str(ci)) == [["-q", "-k", "a or b"]]


def test_test_command_timing_equals_its_json():
    t = _json("bench_test_tiers_amd_epyc")["tiers"]["fast_n2"]
    passed = t["summary"].split(" passed")[0]
    # The timing is CI's command's: a change to .ci/run's command makes it stale.
    assert [t["command"]] == ["python -m pytest " + " ".join(a) for a in _ci_pytest_commands()]
    assert t["returncode"] == 0
    assert t["load_average_before"] < 0.5  # measured on an otherwise idle machine
    assert (f"idle 2-core AMD EPYC it took {t['seconds']:,.0f} s ({passed} passed;"
            in _flat(README))


def _performance_rows():
    section = README.split("## Performance", 1)[1].split("\n## ", 1)[0]
    return {line for line in section.splitlines() if line.startswith("| ")}


def test_onednn_table_equals_its_json():
    """The oneDNN table: each model and workload, images/s off and on and
    their ratio, as `benchmarks/onednn.py` wrote them."""
    d = _json("bench_onednn_amd_epyc")
    runs, rows = d["TF_ENABLE_ONEDNN_OPTS"], _performance_rows()
    assert runs["0"]["onednn_enabled"] is False and runs["1"]["onednn_enabled"] is True
    for arch, ratios in d["on_over_off"].items():
        for key, ratio in ratios.items():
            what = (f"PGD-20 evaluation, batch {d['eval_batch']}" if key == "pgd20_eval" else
                    f"N-FGSM training step, batch {d['batch']}, {key}")
            row = (f"| {arch} | {what} | {runs['0']['images_per_s'][arch][key]:.2f} | "
                   f"{runs['1']['images_per_s'][arch][key]:.2f} | {ratio:.2f}x |")
            assert row in rows, row
    assert f"(`results/bench_onednn_amd_epyc.json`, {d['machine']})" in _flat(README)


def test_fast_training_step_against_pytorch_equals_its_json():
    rows = _performance_rows()
    for name in ("bench_fast_training", "bench_fast_training_amd_epyc"):
        d = _json(name)
        r = d["preactresnet18_nfgsm_train_images_per_s"]
        for precision, ratio in r["ours_over_torch"].items():
            row = (f"| {d['machine']} | {precision} | {r['tf_advscale'][precision]:.2f} | "
                   f"{r['torch_channels_last'][precision]:.2f} | {ratio:.2f}x | "
                   f"`results/{name}.json` |")
            assert row in rows, row
