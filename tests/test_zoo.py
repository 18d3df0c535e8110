"""The zoo: verified loading, refusals, and every published entry against its card."""

import collections
import json
import os
import pathlib
import random

import keras
import numpy as np
import pytest

from tf_advscale import files, zoo
from tf_advscale.evaluate import evaluate
from tf_advscale.models import count_params, resnet

ROOT = pathlib.Path(__file__).resolve().parents[1]
PUBLISHED = sorted(p.parent.name for p in (ROOT / "zoo").glob("*/metadata.json"))


def _entry(root, name, model, **source):
    directory = root / name
    directory.mkdir(parents=True)
    path = directory / "model.keras"
    files.save_model_atomic(model, path)
    meta = {"name": name, "params": count_params(model), "default_route": None,
            "source": {"file": "model.keras", "sha256": files.sha256(path),
                       "bytes": path.stat().st_size, **source}}
    (directory / "metadata.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    root.mkdir()
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(root))
    model = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1))
    _entry(root, "resnet8.test_fmnist", model)
    _entry(root, "resnet8.mixbn_fmnist",
           resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), norm="mixbn"))
    return root, model


def test_list_info_load(tiny_zoo):
    root, model = tiny_zoo
    assert {"resnet8.test_fmnist", "resnet8.mixbn_fmnist"} <= set(zoo.list_models())
    assert zoo.info("resnet8.test_fmnist")["params"] == 77_754  # cifar_resnet8's 78,042 - 2 x 144
    loaded, meta = zoo.load("resnet8.test_fmnist")
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    from tf_advscale.layers import mixbn
    clean, _ = zoo.load("resnet8.mixbn_fmnist", route="clean")
    layers = mixbn.mixbn_layers(clean)
    assert {int(layer.route_index.numpy()) for layer in layers} == {layers[0].domain_index("clean")}
    adv, _ = zoo.load("resnet8.mixbn_fmnist")  # adversarial by default
    layers = mixbn.mixbn_layers(adv)
    assert {int(layer.route_index.numpy()) for layer in layers} == {
        layers[0].domain_index("adversarial")}
    with pytest.raises(zoo.ZooError, match="no routes.*route='clean'"):
        zoo.load("resnet8.test_fmnist", route="clean")


def test_entries_installed_under_the_schemes_data_directory_are_found(tmp_path, monkeypatch):
    """A system Python on Debian or Ubuntu has prefix /usr but installs data
    files under /usr/local: the loader looks where the install scheme put them."""
    import sysconfig
    data = tmp_path / "usr_local"
    _entry(data / "share" / "tf_advscale" / "zoo", "resnet8.scheme_fmnist",
           resnet(depth=8, num_classes=10, input_shape=(28, 28, 1)))
    paths = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {**paths, "data": str(data)})
    assert "resnet8.scheme_fmnist" in zoo.list_models()
    assert zoo.load("resnet8.scheme_fmnist")[1]["name"] == "resnet8.scheme_fmnist"


def test_one_flipped_byte_is_refused(tiny_zoo):
    root, _ = tiny_zoo
    path = root / "resnet8.test_fmnist" / "model.keras"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(zoo.ZooError, match=r"sha256 [0-9a-f]{64}, the metadata says.*refused"):
        zoo.load("resnet8.test_fmnist")


def test_truncated_file_is_refused(tiny_zoo):
    root, _ = tiny_zoo
    path = root / "resnet8.test_fmnist" / "model.keras"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(zoo.ZooError, match=r"has 1000 bytes.*truncated"):
        zoo.load("resnet8.test_fmnist")


def test_wrong_parameter_count_is_refused(tiny_zoo):
    root, _ = tiny_zoo
    meta_path = root / "resnet8.test_fmnist" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["params"] += 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(zoo.ZooError, match=r"parameters, the metadata says \d+ \(wrong arch"):
        zoo.load("resnet8.test_fmnist")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("params"), r"params must be .* Received: None"),
    (lambda m: m.update(params="274042"), r"params must be .* Received: '274042'"),
    (lambda m: m["source"].update(file="model.h5"), r"source.file must be a \.keras file. "
                                                    r"Received: 'model.h5'"),
])
def test_incomplete_metadata_is_refused_by_name(tiny_zoo, edit, message):
    root, _ = tiny_zoo
    meta_path = root / "resnet8.test_fmnist" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(zoo.ZooError, match=message):
        zoo.load("resnet8.test_fmnist")


def test_a_model_with_another_norm_is_refused(tiny_zoo):
    """BN and group norm have the same parameter count: the loader also checks
    the normalisation the metadata names."""
    root, model = tiny_zoo
    gn = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1), norm="gn")
    assert count_params(gn) == count_params(model)
    path = root / "resnet8.test_fmnist" / "metadata.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "architecture": {"norm": "bn"}}))
    zoo.load("resnet8.test_fmnist")
    path.write_text(json.dumps({**meta, "architecture": {"norm": "gn"}}))
    with pytest.raises(zoo.ZooError, match=r"normalises with \['bn'\], the metadata says 'gn'"):
        zoo.load("resnet8.test_fmnist")


def test_code_in_a_model_file_is_never_run(tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(root))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    _entry(root, "evil.lambda_x", model)  # a valid hash does not make it safe
    with pytest.raises(zoo.ZooError, match="holds Python code .*'Lambda'.* refused"):
        zoo.load("evil.lambda_x")


def test_code_is_refused_even_when_keras_allows_unsafe_loading(tmp_path, monkeypatch):
    """keras.config.enable_unsafe_deserialization() overrides load_model's
    safe_mode=True; a Lambda entry whose sha256 matched then ran its code."""
    root = tmp_path / "zoo"
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(root))
    ran = tmp_path / "ran"
    inputs = keras.Input((3,))
    # The path is in the lambda's code itself (defaults and closures do not load).
    touch = eval(f"lambda t: (__import__('pathlib').Path({str(ran)!r}).touch(), t * 2)[1]")
    model = keras.Model(inputs, keras.layers.Lambda(touch)(inputs))
    ran.unlink()  # building the model ran it once
    _entry(root, "evil.lambda_y", model)
    from keras.src.saving import serialization_lib
    previous = serialization_lib.in_safe_mode()
    keras.config.enable_unsafe_deserialization()
    try:
        with pytest.raises(zoo.ZooError, match="holds Python code"):
            zoo.load("evil.lambda_y")
    finally:
        keras.src.backend.common.global_state.set_global_attribute("safe_mode_saving", previous)
    assert not ran.exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", "Resnet20.x", "", ".hidden", "x..y", 3])
def test_names_cannot_be_paths(name):
    with pytest.raises(zoo.ZooError, match="Invalid zoo name"):
        zoo.info(name)


def test_unknown_name_suggests(tiny_zoo):
    with pytest.raises(zoo.ZooError, match=r"Unknown zoo model 'resnet8.test_fmnst'.*"
                                           r"Did you mean 'resnet8.test_fmnist'"):
        zoo.load("resnet8.test_fmnst")


@pytest.fixture
def served_model(tmp_path, monkeypatch):
    """An empty zoo, a model, and where a "server" serves its file (a file://
    URL): a test moves the entry's own file there, as two saves of one model
    can differ in their bytes (the time is in them)."""
    root = tmp_path / "zoo"
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(root))
    model = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1))
    served = tmp_path / "server" / "any-name.keras"
    served.parent.mkdir()
    return root, model, served


def test_url_entries_download_once_into_the_cache(tmp_path, served_model):
    root, model, served = served_model
    directory = _entry(root, "resnet8.remote_fmnist", model, url=served.as_uri())
    os.replace(directory / "model.keras", served)  # only the URL remains
    cache = tmp_path / "cache"
    loaded, meta = zoo.load("resnet8.remote_fmnist", cache_dir=str(cache))
    files = os.listdir(cache / "tf_advscale_zoo")
    assert files == [f"{meta['source']['sha256']}.keras"]  # named by hash, inside the cache
    served.write_bytes(b"tampered")  # a second load uses the verified cached copy
    zoo.load("resnet8.remote_fmnist", cache_dir=str(cache))
    (cache / "tf_advscale_zoo" / files[0]).write_bytes(b"bad")  # a corrupt cache is refused
    with pytest.raises(Exception, match="(?i)corrupt|sha256"):
        zoo.load("resnet8.remote_fmnist", cache_dir=str(cache))


def test_a_dead_url_or_a_web_page_falls_back_to_the_mirrors(tmp_path, served_model):
    """A cloud-drive link that returns an HTML page, or a dead one, is refused
    by its sha256 and the next mirror is tried; when none serves the file the
    error lists every URL and why."""
    root, model, served = served_model
    page = tmp_path / "drive.html"
    page.write_text("<html>Google Drive can't scan this file for viruses</html>")
    dead = (tmp_path / "gone.keras").as_uri()
    directory = _entry(root, "resnet8.mirrored_fmnist", model, url=page.as_uri(),
                       mirrors=[dead, served.as_uri()])
    os.replace(directory / "model.keras", served)
    loaded, meta = zoo.load("resnet8.mirrored_fmnist", cache_dir=str(tmp_path / "cache"))
    x = np.zeros((1, 28, 28, 1), "float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)

    served.unlink()
    with pytest.raises(zoo.ZooError, match=r"(?s)no URL served.*drive\.html.*gone\.keras.*any-name\.keras"):
        zoo.load("resnet8.mirrored_fmnist", cache_dir=str(tmp_path / "cache2"))


def test_an_entry_uses_its_own_file_else_the_cache_else_says_where_to_put_it(tmp_path,
                                                                             served_model):
    """A source checkout holds the file; an installed package whose wheel left
    it out finds it in the cache under its sha256 (downloaded before, or put
    there by hand); with neither, the error names both places."""
    root, model, _ = served_model
    directory = _entry(root, "resnet8.large_fmnist", model)
    cache = tmp_path / "cache"
    zoo.load("resnet8.large_fmnist", cache_dir=str(cache))  # its own file
    digest = zoo.info("resnet8.large_fmnist")["source"]["sha256"]
    (cache / "tf_advscale_zoo").mkdir(parents=True)
    os.replace(directory / "model.keras", cache / "tf_advscale_zoo" / f"{digest}.keras")
    x = np.zeros((1, 28, 28, 1), "float32")
    loaded, _ = zoo.load("resnet8.large_fmnist", cache_dir=str(cache))
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    with pytest.raises(zoo.ZooError, match=r"model.keras is missing .*tf_advscale_zoo/"
                                           + digest):
        zoo.load("resnet8.large_fmnist", cache_dir=str(tmp_path / "empty"))


def test_a_url_entry_downloads_over_http_on_the_loopback(tmp_path, served_model):
    """The entry's URL served by an HTTP server on 127.0.0.1, as an installed
    package without the file meets it."""
    import functools
    import http.server
    import threading
    root, model, served = served_model
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(served.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{served.name}"
        directory = _entry(root, "resnet8.http_fmnist", model, url=url)
        os.replace(directory / "model.keras", served)
        loaded, meta = zoo.load("resnet8.http_fmnist", cache_dir=str(tmp_path / "cache"))
        x = np.zeros((1, 28, 28, 1), "float32")
        np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
        assert (tmp_path / "cache" / "tf_advscale_zoo" / f"{meta['source']['sha256']}.keras").exists()
    finally:
        server.shutdown()


def test_the_wheel_leaves_large_model_files_out_and_stays_small(monkeypatch):
    """What setup.py installs from zoo/: every entry's metadata and card, model
    files up to LARGE_MODEL_BYTES, and under 50 MB in all."""
    import runpy

    import setuptools
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.chdir(ROOT)
    setup = runpy.run_path(str(ROOT / "setup.py"))
    installed = [f for _, fs in captured["data_files"] for f in fs]
    large = setup["LARGE_MODEL_BYTES"]
    for name in PUBLISHED:
        assert f"zoo/{name}/metadata.json" in installed and f"zoo/{name}/README.md" in installed
        model = ROOT / "zoo" / name / "model.keras"
        assert (f"zoo/{name}/model.keras" in installed) == (model.stat().st_size <= large)
    total = sum((ROOT / f).stat().st_size for f in installed)
    package = sum(p.stat().st_size for p in (ROOT / "tf_advscale").rglob("*") if p.is_file())
    assert total + package < 50 * 2**20, (total, package)


def _data(meta):
    """The entry's data arguments, its relative data path read from the
    checkout's root (where the cards' commands run), whatever pytest's cwd."""
    d = meta["recipe"]["config"]["data"]
    path = str(ROOT / d["path"]) if d.get("path") and not os.path.isabs(d["path"]) else None
    return zoo.data_args(meta["recipe"]["config"], path=path)


def _data_available(meta):
    d = _data(meta)
    if d["dataset"] == "cifar10":
        path = pathlib.Path(d["path"] or ROOT / "../shared/data/cifar10-jpeg")
        return (path / "test").is_dir(), f"CIFAR-10 JPEG folder not found at {path}"
    if d["dataset"] == "fashion_mnist":
        ok = pathlib.Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists()
        return ok, "Fashion-MNIST IDX files not found (apt-get install dataset-fashion-mnist)"
    return True, ""


def _check_cost(name):
    """Entries whose check set takes minutes (a PreActResNet-18's PGD-20 on 500
    images: about 4 here) are re-measured in the longest tier (-m long)."""
    meta = json.loads((ROOT / "zoo" / name / "metadata.json").read_text())
    return pytest.param(name, marks=pytest.mark.long) if meta["params"] > 5_000_000 else name


@pytest.mark.slow
@pytest.mark.parametrize("name", [_check_cost(n) for n in PUBLISHED])
def test_published_entry_loads_and_matches_its_card(name):
    model, meta = zoo.load(name)  # sha256, size and parameter checks
    ok, why = _data_available(meta)
    if not ok:
        pytest.skip(why)
    check = meta["evaluation"]["check_set"]
    for route, card in check["results"].items():
        if route != "default":
            model, _ = zoo.load(name, route=route)
        report = evaluate(model, **_data(meta),
                          n=check["n"], seed=check["seed"],
                          epsilon=meta["threat_model"]["epsilon_float"],
                          attacks=check["attacks"], checks=False, verbose=False,
                          route=route if route != "default" else "adversarial")
        assert abs(report["clean_accuracy"] - card["clean"]) <= 0.02, (route, report)
        for attack in check["attacks"]:
            got = report["attacks"][attack]["accuracy"]
            assert abs(got - card[attack]) <= 0.02, (route, attack, got, card[attack])


def _autoattack_check(name):
    """An entry's AutoAttack check set, re-measured in the heavy tier
    (-m slow) where APGD-CE leaves (almost) no image for the three later
    attacks (a standard-trained entry: a minute or two); a robust entry's
    takes 10 to 20 minutes of ResNet-20 here (hours for a PreActResNet-18),
    so in the longest tier (-m long). An entry
    AutoAttack has not run on yet is skipped, saying so."""
    meta = json.loads((ROOT / "zoo" / name / "metadata.json").read_text())
    cs = (meta["evaluation"].get("autoattack") or {}).get("check_set")
    if cs is None:
        return pytest.param(name, marks=pytest.mark.skip(
            reason=f"AutoAttack has not run on {name} (advscale zoo autoattack {name})"))
    cheap = meta["params"] <= 5_000_000 and all(
        r["after_each"]["apgd-ce"] <= 0.02 for r in cs["results"].values())
    return name if cheap else pytest.param(name, marks=pytest.mark.long)


@pytest.mark.slow
@pytest.mark.parametrize("name", [_autoattack_check(n) for n in PUBLISHED])
def test_published_autoattack_matches_its_check_set(name):
    """The full AutoAttack (standard version) on an entry's check set (500
    of the images its card's AutoAttack ran on, as recorded: spread, or the
    first 500; same seed and batches): clean and AutoAttack accuracy within
    2 points of the card's."""
    from tf_advscale import zoo_publish
    model, meta = zoo.load(name)
    ok, why = _data_available(meta)
    if not ok:
        pytest.skip(why)
    aa = meta["evaluation"]["autoattack"]
    cs = aa["check_set"]
    drawn = aa["test_images"] if aa["subset_seed"] is not None else None
    ids = zoo_publish.check_ids(zoo_publish.subset_ids(_data(meta), drawn, aa["subset_seed"] or 0),
                                cs["n"], spread=cs.get("spread", False))
    for route, card in cs["results"].items():
        if route != "default":
            model, _ = zoo.load(name, route=route)
        report = evaluate(model, **_data(meta), ids=ids, seed=cs["seed"],
                          epsilon=meta["threat_model"]["epsilon_float"], attacks=cs["attacks"],
                          batch_size=cs["batch_size"], checks=False, verbose=False,
                          route=route if route != "default" else "adversarial")
        assert abs(report["clean_accuracy"] - card["clean"]) <= 0.02, (route, report)
        got = report["attacks"]["autoattack"]["accuracy"]
        assert abs(got - card["autoattack"]) <= 0.02, (route, got, card["autoattack"])


# Minutes of subprocess training, over CI's budget: run by hand (-m long).
@pytest.mark.long
def test_publish_a_run_then_load_it_as_a_verified_entry(tmp_path, monkeypatch, capsys):
    """``advscale zoo publish`` end to end on a tiny MixBN run: metadata, card,
    curves per route, and an entry that ``zoo.load`` verifies and serves."""
    from tf_advscale import config as config_lib
    from tf_advscale import runner
    from tf_advscale import zoo_publish
    monkeypatch.setattr(zoo_publish, "CHECK", {"n": 40, "seed": 0, "attacks": ["pgd-20"]})
    monkeypatch.setattr(zoo_publish, "STEPS_CURVE", (5, 10))
    config = config_lib.merge({
        "data": {"dataset": "fashion_mnist_sample", "batch_size": 32},
        "model": {"depth": 8, "norm": "mixbn"},
        "attack": {"name": "pgd", "epsilon": 0.1, "step_size": 0.05, "steps": 1},
        "trainer": {"clean_portion": 1.0, "mixing": "mixbn"},
        "optimizer": {"epochs": 1}, "eval": {"val_subset": 32, "test_subset": 32}})
    runner.run(config, str(tmp_path / "run"), verbose=0)
    meta = zoo_publish.publish(str(tmp_path / "run"), "resnet8.mixbn_tiny_sample", "advscale train ...",
                   out_dir=str(tmp_path / "zoo"), n=40, curve_n=20,
                   dataset_label="Fashion-MNIST (sample)", verbose=False,
                   url="http://127.0.0.1:9/unreachable.keras")
    entry = tmp_path / "zoo" / "resnet8.mixbn_tiny_sample"
    # The URL is for installed packages; a checkout loads its own file, offline.
    assert meta["source"]["url"] == "http://127.0.0.1:9/unreachable.keras"
    assert meta["dataset"] == "Fashion-MNIST (sample)"
    assert meta["dataset_source"].startswith("fashion_mnist_sample")
    assert meta["threat_model"]["epsilon"] == "1/10" and meta["mixbn_routes"] == [
        "adversarial", "clean"]
    for route in ("adversarial", "clean"):
        r = meta["evaluation"]["results"][route]
        assert r["n"] == 40 and 0 <= r["worst_case"] <= r["clean"] <= 1
        assert r["worst_case"] <= min(r["pgd-20"], r["apgd-ce"])
        assert meta["evaluation"]["steps_curve"][route]["n"] == 20
    card = (entry / "README.md").read_text()
    assert "Fashion-MNIST (sample)" in card and "advscale train ..." in card
    assert "![PGD steps curve (clean)](steps_curve_clean.png)" in card
    assert (entry / "steps_curve_clean.png").exists()
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(tmp_path / "zoo"))
    model, loaded = zoo.load("resnet8.mixbn_tiny_sample", route="clean")
    assert loaded["source"]["sha256"] == files.sha256(entry / "model.keras")
    assert count_params(model) == meta["params"]

    # The card's evaluation command gives the card's numbers and curve.
    import shlex
    from tf_advscale import cli
    command = shlex.split(meta["evaluation"]["command"])
    assert command[:3] == ["advscale", "zoo", "eval"]
    capsys.readouterr()
    assert cli.main(command[1:] + ["--route", "clean", "--out", str(tmp_path / "again")]) == 0
    printed = json.loads(capsys.readouterr().out)
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    published = meta["evaluation"]["results"]["clean"]
    assert again["clean_accuracy"] == pytest.approx(published["clean"], abs=1e-6)
    assert again["attacks"]["apgd-ce"]["accuracy"] == pytest.approx(published["apgd-ce"],
                                                                      abs=1e-6)
    curve = meta["evaluation"]["steps_curve"]["clean"]
    assert {**again["curves"]["steps"], "accuracy": None} == {**curve, "accuracy": None}
    assert again["curves"]["steps"]["accuracy"] == pytest.approx(curve["accuracy"], abs=1e-6)
    assert printed["curves"]["steps"] == {k: again["curves"]["steps"][k]
                                          for k in ("n", "subset", "accuracy")}
    assert again["gradient_masking_suspected"] == (
        not meta["evaluation"]["results"]["clean"]["sanity_checks_passed"])

    # Relabelling renames the data on the card and in the metadata, not the weights.
    digest = files.sha256(entry / "model.keras")
    card_before = (entry / "README.md").read_text()
    assert cli.main(["zoo", "relabel", "resnet8.mixbn_tiny_sample", "--out",
                     str(tmp_path / "zoo"), "--dataset-label", "Fashion-MNIST sample"]) == 0
    relabelled = zoo.info("resnet8.mixbn_tiny_sample")
    assert relabelled["dataset"] == "Fashion-MNIST sample"
    assert relabelled["dataset_source"] == meta["dataset_source"]
    assert {k: v for k, v in relabelled.items() if k not in ("dataset", "robustbench")} == {
        k: v for k, v in meta.items() if k not in ("dataset", "robustbench")}
    assert "of Fashion-MNIST sample, not AutoAttack" in relabelled["robustbench"]["footnote"]
    assert (entry / "README.md").read_text() == card_before.replace(
        "Fashion-MNIST (sample)", "Fashion-MNIST sample")  # the rest as published
    assert files.sha256(entry / "model.keras") == digest
    zoo.load("resnet8.mixbn_tiny_sample")
    with pytest.raises(ValueError, match="non-empty dataset label. Received: ' '"):
        zoo_publish.relabel(str(entry), " ")

    # Re-evaluating an entry whose evaluation is stale (here: numbers edited
    # and a curve from before seeded draws) measures it again from its file.
    stale = json.loads((entry / "metadata.json").read_text())
    stale["evaluation"]["results"]["clean"]["clean"] = 0.0
    for curve in stale["evaluation"]["steps_curve"].values():
        del curve["subset"]
    (entry / "metadata.json").write_text(json.dumps(stale))
    assert cli.main(["zoo", "reevaluate", "resnet8.mixbn_tiny_sample", "--out",
                     str(tmp_path / "zoo"), "--n", "40", "--curve-n", "20", "--workdir",
                     str(tmp_path / "scratch")]) == 0
    redone = zoo.info("resnet8.mixbn_tiny_sample")
    assert {**redone, "evaluation": None} == {**relabelled, "evaluation": None}
    assert {**redone["evaluation"], "date": None, "commit": None} == {
        **meta["evaluation"], "date": None, "commit": None}
    assert (entry / "README.md").read_text() == zoo_publish.render_card(str(entry), redone)
    assert "does not redo it" not in (entry / "README.md").read_text()
    assert files.sha256(entry / "model.keras") == digest
    (tmp_path / "zoo" / "resnet8.mixbn_tiny_sample" / "model.keras").write_bytes(b"truncated")
    with pytest.raises(zoo.ZooError, match="refused"):
        zoo_publish.reevaluate(str(entry))


def test_readme_zoo_table_lists_every_entry_as_published(capsys):
    """The README's zoo table is `advscale zoo list --markdown`, regenerated
    after each publish; a stale or hand-edited table fails here."""
    from tf_advscale import cli
    assert cli.main(["zoo", "list", "--markdown"]) == 0
    table = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    between = readme.split("<!-- zoo-table -->\n", 1)[1].split("<!-- /zoo-table -->", 1)[0]
    assert between == table
    assert all(f"`{name}`" in table for name in PUBLISHED)


def test_zoo_list_reports_a_broken_entry_and_still_lists_the_rest(tmp_path, monkeypatch, capsys):
    """A broken entry is named on stderr with its error and `zoo list` fails,
    but the good entries are still listed."""
    from tf_advscale import cli
    good = json.loads((ROOT / "zoo" / PUBLISHED[0] / "metadata.json").read_text())
    good["name"] = "resnet8.good_copy"
    for name, meta in [("resnet8.good_copy", good), ("resnet8.broken_entry",
                                                       {**good, "name": "resnet8.broken_entry",
                                                        "evaluation": None}),
                       ("resnet8.misnamed", {**good, "name": "resnet8.other"})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metadata.json").write_text(json.dumps(meta))
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(tmp_path))
    assert cli.main(["zoo", "list"]) == 1
    out, err = capsys.readouterr()
    assert "resnet8.good_copy" in out and all(f"{name} " in out for name in PUBLISHED)
    assert "broken_entry" not in out and "misnamed" not in out
    assert "resnet8.broken_entry is broken and was left out: TypeError" in err
    assert "resnet8.misnamed is broken and was left out: ZooError" in err
    assert "names 'resnet8.other'" in err and "2 broken entries" in err


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_card_is_its_metadata(name):
    """Each model card, and the RobustBench record, are rendered from the
    entry's metadata.json (publish and relabel write them): a hand-edited or
    stale one fails here."""
    from tf_advscale import zoo_publish
    entry = ROOT / "zoo" / name
    meta = json.loads((entry / "metadata.json").read_text())
    assert (entry / "README.md").read_text() == zoo_publish.render_card(str(entry), meta)
    card = (entry / "README.md").read_text()
    for png in (entry.glob("*.png")):
        assert f"]({png.name})" in card
    command = meta["evaluation"]["command"]
    assert command.startswith(f"advscale zoo eval {name}")
    for curve in meta["evaluation"]["steps_curve"].values():
        steps = ",".join(sorted(curve["accuracy"], key=int))
        # A seeded curve is redone by the command; an older one says it is not.
        assert (f"--steps-curve {steps} --curve-n {curve['n']}" in command
                if curve.get("subset") else "does not redo it" in card), command
    assert meta["robustbench"] == zoo_publish.robustbench_fields(meta)
    assert isinstance(meta["robustbench"]["clean_acc"], str)  # RobustBench's type


def test_zoo_eval_takes_the_data_from_the_command_line(tiny_zoo, monkeypatch, capsys):
    """``--path``/``--source`` point an entry's evaluation at the user's copy of
    its data; without them the entry's training data is used."""
    import tf_advscale.evaluate
    from tf_advscale import cli
    root, _ = tiny_zoo
    meta_path = root / "resnet8.test_fmnist" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update({"threat_model": {"epsilon_float": 0.1}, "recipe": {"config": {"data": {
        "dataset": "fashion_mnist", "source": "idx", "path": "data/fmnist"}}}})
    meta_path.write_text(json.dumps(meta))
    seen = []
    monkeypatch.setattr(tf_advscale.evaluate, "evaluate",
                        lambda model, **kw: seen.append(kw) or {
                            "gradient_masking_suspected": None if kw["checks"] is False else False,
                            "curves": {}})
    monkeypatch.setattr(tf_advscale.evaluate, "summary", lambda report: {})
    assert cli.main(["zoo", "eval", "resnet8.test_fmnist", "--n", "8"]) == 0
    assert cli.main(["zoo", "eval", "resnet8.test_fmnist", "--path", "/my/fmnist",
                     "--steps-curve", "10,20", "--curve-n", "4", "--no-checks"]) == 0
    assert cli.main(["zoo", "eval", "resnet8.test_fmnist", "--source", "tfds"]) == 0
    assert (seen[0]["source"], seen[0]["path"], seen[0]["steps_curve"]) == (
        "idx", "data/fmnist", None)
    assert (seen[1]["source"], seen[1]["path"], seen[1]["steps_curve"], seen[1]["curve_n"],
            seen[1]["checks"]) == ("idx", "/my/fmnist", [10, 20], 4, False)
    assert (seen[2]["source"], seen[2]["path"]) == ("tfds", "data/fmnist")
    out, printed, decoder = capsys.readouterr().out, [], json.JSONDecoder()
    while out.strip():
        obj, end = decoder.raw_decode(out.strip())
        printed.append(obj)
        out = out.strip()[end:]
    assert [p["sanity_checks_passed"] for p in printed] == [True, None, True]  # None: not run


def test_zoo_autoattack_fills_the_record_card_and_table_and_resumes(tmp_path, monkeypatch,
                                                                     capsys):
    """``advscale zoo autoattack NAME``: AutoAttack (shortened here) with PGD-20
    and APGD-CE on a seeded subset, written into the entry's metadata, its
    RobustBench record (autoattack_acc; reported = worst case over all three),
    its card and the zoo table; rerun, it resumes from its saved batches."""
    from tf_advscale import cli, zoo_publish
    from tf_advscale.attacks import APGD, FAB, Square
    from tf_advscale.attacks.autoattack import AutoAttack
    root = tmp_path / "zoo"
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(root))
    real = json.loads((ROOT / "zoo" / "resnet20.pgd3_fmnist" / "metadata.json").read_text())
    model = resnet(depth=8, num_classes=10, input_shape=(28, 28, 1))
    entry = _entry(root, "resnet8.aa_sample", model)
    meta = {**real, "name": "resnet8.aa_sample",
            **{k: v for k, v in json.loads((entry / "metadata.json").read_text()).items()
               if k in ("params", "source")}}
    meta["recipe"] = {**real["recipe"], "config": {**real["recipe"]["config"], "data": {
        **real["recipe"]["config"]["data"], "dataset": "fashion_mnist_sample",
        "source": None, "path": None}}}
    (entry / "metadata.json").write_text(json.dumps(meta))
    eps = meta["threat_model"]["epsilon_float"]
    monkeypatch.setattr(AutoAttack, "attacks", lambda self: [
        ("apgd-ce", APGD(eps, 3)), ("apgd-t", APGD(eps, 3, loss="dlr_targeted",
                                                   n_target_classes=2)),
        ("fab-t", FAB(eps, 3, n_target_classes=2)), ("square", Square(eps, 10))])
    monkeypatch.setattr(zoo_publish, "AA_CHECK_N", 14)
    scratch = tmp_path / "scratch"
    args = ["zoo", "autoattack", "resnet8.aa_sample", "--n", "24", "--batch-size", "10",
            "--out", str(root), "--workdir", str(scratch)]
    assert cli.main(args) == 0
    meta = json.loads((entry / "metadata.json").read_text())
    aa = meta["evaluation"]["autoattack"]
    r = aa["results"]["default"]
    assert aa["test_images"] == r["n"] == 24 and aa["subset_seed"] == 0
    assert aa["data_override"] is None  # the recipe's own test set
    # The check set (14 of the 24 ids, spread) in batches of 10 and 4, then the other 10.
    assert len(os.listdir(scratch / "default" / "check" / "main" / "batches")) == 2
    assert len(os.listdir(scratch / "default" / "rest" / "main" / "batches")) == 1
    cs = aa["check_set"]
    assert cs["n"] == 14 and cs["batch_size"] == 10 and cs["spread"] is True
    c = cs["results"]["default"]
    rest = json.loads((scratch / "default" / "rest" / "report.json").read_text())
    for k in ("clean", "autoattack", "worst_case"):
        got = rest["worst_case_accuracy"] if k == "worst_case" else (
            rest["clean_accuracy"] if k == "clean" else rest["attacks"][k]["accuracy"])
        assert r[k] == pytest.approx((14 * c[k] + 10 * got) / 24)
    # What the zoo's card test re-measures: the check set's ids, seed and batches.
    drawn = zoo_publish.subset_ids(zoo.data_args(meta["recipe"]["config"]), 24, 0)
    ids = zoo_publish.check_ids(drawn, 14)
    assert len(set(ids)) == 14 and set(ids) < set(drawn) and ids != drawn[:14]
    again = evaluate(zoo.load("resnet8.aa_sample")[0], **zoo.data_args(meta["recipe"]["config"]),
                     ids=ids, seed=cs["seed"], epsilon=eps, attacks=cs["attacks"],
                     batch_size=cs["batch_size"], checks=False, verbose=False)
    assert again["attacks"]["autoattack"]["accuracy"] == c["autoattack"]
    assert r["worst_case"] <= min(r["pgd-20"], r["apgd-ce"], r["autoattack"]) <= r["clean"]
    assert r["autoattack"] == r["after_each"]["square"] <= r["after_each"]["apgd-ce"]
    rb = meta["robustbench"]
    assert rb == zoo_publish.robustbench_fields(meta)
    assert rb["autoattack_acc"] == f"{100 * r['autoattack']:.2f}"
    assert rb["reported"] == f"{100 * r['worst_case']:.2f}" and "24 test images" in rb["footnote"]
    card = (entry / "README.md").read_text()
    assert card == zoo_publish.render_card(str(entry), meta) and "## AutoAttack" in card
    out = capsys.readouterr().out  # each part's batches are counted apart: say which
    assert "[zoo autoattack] resnet8.aa_sample, route default: the check set, 14 of the " \
           "24 images\nbatch 1/2: " in out
    assert "route default: the other images, 10 of the 24 images\nbatch 1/1: " in out
    assert cli.main(["zoo", "list", "--markdown"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if "resnet8.aa_sample" in line]
    assert f"| {100 * r['autoattack']:.2f} | {100 * r['worst_case']:.2f} | 24 |" in row[0]
    # Rerun: every batch comes from the scratch directory, same numbers.
    monkeypatch.setattr(AutoAttack, "stages", lambda *a, **k: pytest.fail("recomputed"))
    assert cli.main(args) == 0
    again = json.loads((entry / "metadata.json").read_text())["evaluation"]["autoattack"]
    assert again["results"] == aa["results"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_training_command_gives_the_config_the_entry_trained_with(name):
    """The card's "Trained with" command, parsed by the CLI, loads the config
    recorded in metadata.json (with today's defaults for keys added since):
    a config file changed after an entry was trained (a new default, such
    as trainer.precision "auto") must show up in the command as --set."""
    import shlex

    from advscale_cli import build_parser
    from tf_advscale import config as config_lib
    from tf_advscale.cli import train_config
    meta = json.loads((ROOT / "zoo" / name / "metadata.json").read_text())
    words = shlex.split(meta["recipe"]["train_command"])
    assert words[:2] == ["advscale", "train"], words
    args = build_parser().parse_args(words[1:])
    config = train_config(args)
    recorded = config_lib.merge(meta["recipe"]["config"])
    now, then = (json.loads(json.dumps(c, default=str)) for c in (config, recorded))
    assert sorted(config_lib.differences(then, now)) == []


def test_the_autoattack_check_set_spreads_over_ids_that_follow_the_classes():
    """On a folder source the ids run class by class: the check set takes
    every class, not the first half of them (as "the first 500" did)."""
    from tf_advscale import zoo_publish
    drawn = sorted(random.Random(0).sample(range(10_000), 1000))  # class = id // 1000
    check = zoo_publish.check_ids(drawn, 500)
    assert check == drawn[::2]
    assert sorted({i // 1000 for i in check}) == list(range(10))
    assert min(collections.Counter(i // 1000 for i in check).values()) >= 40
    odd = zoo_publish.check_ids(drawn, 300)
    assert len(set(odd)) == 300 and set(odd) < set(drawn) and odd == sorted(odd)
    assert zoo_publish.check_ids(drawn, 500, spread=False) == drawn[:500]
    assert zoo_publish.check_ids(drawn[:10], 500) == drawn[:10]
