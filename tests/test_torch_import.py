"""PyTorch checkpoints into zoo entries: every tensor, the same logits, clear refusals."""

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="importing PyTorch checkpoints needs torch")

from tf_advscale import torch_models, zoo  # noqa: E402
from tf_advscale.torch_import import CheckpointError, import_torch  # noqa: E402


def _random_state(net, seed=0):
    """Random weights and BN statistics, so that a swapped or skipped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("weight") and t.dim() == 1:
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.1)
    return net


def _save(tmp_path, net, extra=None, name="ckpt.pt"):
    path = tmp_path / name
    state = dict(net.state_dict())
    state.update(extra or {})
    torch.save(state, path)
    return path


def _test_images(n=16):
    """CIFAR-10 test images when ../shared/data holds them, else uniform noise."""
    from conftest import CIFAR_JPEG

    from tf_advscale import data
    if (CIFAR_JPEG / "test").is_dir():
        return data.as_numpy("cifar10", "test", source="folder", path=str(CIFAR_JPEG),
                             subset=n, seed=0)[0]
    return np.random.default_rng(0).uniform(size=(n, 32, 32, 3)).astype("float32")


def _logits_agree(directory, net, x, mean=0.0, std=1.0):
    model, meta = zoo.load_entry(str(directory))
    net.eval()
    with torch.no_grad():
        theirs = net(torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2).copy())).numpy()
    ours = np.asarray(model.predict(x, verbose=0))
    return float(np.abs(ours - theirs).max()), meta


ARCHS = [("preactresnet18", lambda: torch_models.preact_resnet18(), "relu"),
         ("resnet18", lambda: torch_models.resnet18_cifar(), "relu"),
         ("wrn-16-4", lambda: torch_models.wide_resnet(16, 4), "relu"),
         ("wrn-16-4", lambda: torch_models.wide_resnet(16, 4, activation="silu"), "silu"),
         ("resnet20", lambda: torch_models.resnet_cifar(20), "relu")]
SLOW = [("wrn-28-10", lambda: torch_models.wide_resnet(28, 10), "relu"),
        ("wrn-34-10", lambda: torch_models.wide_resnet(34, 10), "relu"),
        ("wrn-70-16", lambda: torch_models.wide_resnet(70, 16), "relu"),
        ("wrn-70-16", lambda: torch_models.wide_resnet(70, 16, activation="silu"), "silu")]


@pytest.mark.parametrize("arch,make,act", ARCHS + [pytest.param(*a, marks=pytest.mark.long)
                                                    for a in SLOW])
def test_import_matches_pytorch_logits(tmp_path, arch, make, act):
    net = _random_state(make())
    path = _save(tmp_path, net)
    directory = import_torch(arch, str(path), f"{arch}.test_cifar10", zoo_dir=str(tmp_path / "z"),
                             activation=act)
    diff, meta = _logits_agree(directory, net, _test_images())
    assert diff < 1e-4
    assert meta["imported"]["verified_against_pytorch"]["max_abs_logit_difference"] < 1e-4
    assert meta["params"] == sum(p.numel() for p in net.parameters())


def test_normalisation_buffers_become_the_standardize_layer(tmp_path):
    net = _random_state(torch_models.preact_resnet18())
    mu = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    sigma = torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1)
    path = _save(tmp_path, net, {"mu": mu, "sigma": sigma})
    directory = import_torch("preactresnet18", str(path), "preactresnet18.norm_cifar10",
                             zoo_dir=str(tmp_path / "z"))
    x = np.random.default_rng(1).uniform(size=(8, 32, 32, 3)).astype("float32")
    diff, meta = _logits_agree(directory, net, x, mean=mu.numpy().reshape(1, 1, 1, 3),
                               std=sigma.numpy().reshape(1, 1, 1, 3))
    assert diff < 1e-4
    assert meta["imported"]["preprocess"]["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case,match", [
    ("truncated", "not a readable PyTorch checkpoint"),
    ("code", "holds pickled Python objects beyond tensors"),
    ("other_arch", "lacks 'layer1.0.bn1.weight'|has no 'linear.weight'"),
    ("classes", "100 classes, the data set has 10"),
    ("extra", "tensors preactresnet18 does not use, e.g. 'extra.weight'"),
    ("unknown_arch", r"Unknown architecture 'resnet9000'. Known: \["),
])
def test_bad_checkpoints_get_one_line_errors(tmp_path, case, match):
    net = torch_models.preact_resnet18()
    arch = "preactresnet18"
    if case == "truncated":
        path = _save(tmp_path, net)
        path.write_bytes(path.read_bytes()[:1000])
    elif case == "code":
        path = tmp_path / "evil.pt"
        torch.save({"conv1.weight": torch.zeros(1), "x": _Evil()}, path)
    elif case == "other_arch":
        path = _save(tmp_path, torch_models.wide_resnet(16, 4))
    elif case == "classes":
        path = _save(tmp_path, torch_models.preact_resnet18(num_classes=100))
    elif case == "extra":
        path = _save(tmp_path, net, {"extra.weight": torch.zeros(3)})
    else:
        path, arch = _save(tmp_path, net), "resnet9000"
    with pytest.raises(CheckpointError, match=match) as info:
        import_torch(arch, str(path), "x.y_cifar10", zoo_dir=str(tmp_path / "z"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "z" / "x.y_cifar10").exists()


def test_writes_only_to_a_zoo_directory_it_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_ADVSCALE_ZOO", raising=False)
    path = _save(tmp_path, torch_models.preact_resnet18())
    with pytest.raises(CheckpointError, match="TF_ADVSCALE_ZOO"):
        import_torch("preactresnet18", str(path), "preactresnet18.x_cifar10")
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(tmp_path / "mine"))
    import_torch("preactresnet18", str(path), "preactresnet18.x_cifar10", check=False)
    assert "preactresnet18.x_cifar10" in zoo.list_models()
    meta = json.loads((tmp_path / "mine" / "preactresnet18.x_cifar10" / "metadata.json")
                      .read_text())
    assert meta["imported"]["verified_against_pytorch"] is None


@pytest.mark.slow
def test_advscale_zoo_import_command(tmp_path):
    import subprocess
    import sys

    from helpers.cli_process import ROOT, checkout_env
    path = _save(tmp_path, _random_state(torch_models.wide_resnet(16, 4)))
    run = lambda *a: subprocess.run([sys.executable, "-m", "tf_advscale.cli", "zoo", "import", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=600, cwd=ROOT,
                                    env={**checkout_env(), "TF_ADVSCALE_ZOO": str(tmp_path / "z")})
    out = run("wrn-16-4", "--checkpoint", str(path), "--name", "wrn-16-4.test_cifar10",
              "--epsilon", "8/255")
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["verified_against_pytorch"]["max_abs_logit_difference"] < 1e-4
    meta = json.loads((tmp_path / "z" / "wrn-16-4.test_cifar10" / "metadata.json").read_text())
    assert meta["threat_model"]["epsilon"] == "8/255"
    bad = run("wrn-28-10", "--checkpoint", str(path), "--name", "wrn-28-10.bad_cifar10")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("advscale: error: ")
    listed = subprocess.run([sys.executable, "-m", "tf_advscale.cli", "zoo", "list"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**checkout_env(), "TF_ADVSCALE_ZOO": str(tmp_path / "z")})
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "wrn-16-4.test_cifar10" in listed.stdout and "not evaluated" in listed.stdout


@pytest.mark.parametrize("arch,make,act", ARCHS)
def test_export_is_the_inverse_of_import(tmp_path, arch, make, act):
    """Imported, then exported: the very tensors of the original state dict
    (the mu/sigma buffers included); exported, then imported: the same logits."""
    from tf_advscale.torch_import import export_torch
    net = _random_state(make())
    mu = torch.tensor([0.49, 0.48, 0.45]).reshape(1, 3, 1, 1)
    sigma = torch.tensor([0.25, 0.24, 0.26]).reshape(1, 3, 1, 1)
    path = _save(tmp_path, net, extra={"mu": mu, "sigma": sigma})
    first = import_torch(arch, str(path), f"{arch}.a_cifar10", zoo_dir=str(tmp_path / "z"),
                         activation=act)
    model, _ = zoo.load_entry(first)
    out = export_torch(model, arch, str(tmp_path / "exported.pt"))
    original = torch.load(path, weights_only=True)
    exported = torch.load(out, weights_only=True)
    assert set(exported) == set(original)
    for k, v in original.items():
        assert torch.equal(exported[k], v), k
    again, _ = zoo.load_entry(import_torch(arch, out, f"{arch}.b_cifar10",
                                           zoo_dir=str(tmp_path / "z"), activation=act))
    x = _test_images()
    assert np.abs(again.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-6


def test_a_keras_model_exports_to_the_pytorch_definition(tmp_path):
    """From the Keras side (the zoo's direction): a registry PreActResNet-18
    with random weights and BN statistics and its own standardisation loads
    strictly into the PyTorch definition, with logits within 1e-4."""
    from tf_advscale.models import build_model
    from tf_advscale.torch_import import export_torch
    model = build_model("preactresnet18", num_classes=10, mean=[0.49, 0.48, 0.45],
                        std=[0.25, 0.24, 0.26])
    rng = np.random.default_rng(0)
    for w in model.weights:  # BN statistics and scales away from their initial values
        if "moving_variance" in w.path or "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif "moving_mean" in w.path or "beta" in w.path:
            w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
    state = torch.load(export_torch(model, "preactresnet18", str(tmp_path / "m.pt")),
                       weights_only=True)
    mu, sigma = state.pop("mu"), state.pop("sigma")
    net = torch_models.preact_resnet18()
    net.load_state_dict(state, strict=True)
    net.eval()
    x = _test_images()
    with torch.no_grad():
        theirs = net((torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) - mu) / sigma).numpy()
    assert np.abs(np.asarray(model.predict(x, verbose=0)) - theirs).max() < 1e-4


def test_advscale_zoo_export_writes_what_was_imported(tmp_path, monkeypatch, capsys):
    """``advscale zoo export NAME --out F.pt``: an imported entry's state dict
    comes back tensor for tensor; an entry without a PyTorch layout (GroupNorm)
    and a missing --out are one-line errors."""
    import advscale_cli
    net = _random_state(torch_models.wide_resnet(16, 4))
    path = _save(tmp_path, net)
    import_torch("wrn-16-4", str(path), "wrn-16-4.x_cifar10", zoo_dir=str(tmp_path / "z"))
    monkeypatch.setenv("TF_ADVSCALE_ZOO", str(tmp_path / "z"))
    out = tmp_path / "exported.pt"
    assert advscale_cli.main(["zoo", "export", "wrn-16-4.x_cifar10", "--out", str(out)]) == 0
    exported, original = torch.load(out, weights_only=True), torch.load(path, weights_only=True)
    assert set(exported) == set(original)
    assert all(torch.equal(exported[k], v) for k, v in original.items())
    assert advscale_cli.main(["zoo", "export", "wrn-16-4.x_cifar10"]) == 2
    assert "needs --out FILE.pt" in capsys.readouterr().err
    monkeypatch.delenv("TF_ADVSCALE_ZOO")
    assert advscale_cli.main(["zoo", "export", "resnet20.gn_mixed_pgd3_fmnist", "--out",
                              str(tmp_path / "r20.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "have a place in resnet20's PyTorch layout" in err[0], err


@pytest.mark.parametrize("name,dataset", [("resnet20.pgd3_fmnist", "fashion_mnist"),
                                          ("resnet20.standard_cifar10jpeg", "cifar10")])
def test_a_published_resnet20_exports_and_imports_back(tmp_path, capsys, name, dataset):
    """The zoo's own CIFAR ResNet-20s (published, not imported: their metadata
    names family and depth) export to ``torch_models.resnet_cifar``, which
    pads as TensorFlow's "same" does: strict load, logits within 1e-4 on
    images of their shape (28x28x1 for Fashion-MNIST: stride 2 on 28 and 14);
    imported back, the same logits."""
    import advscale_cli

    from tf_advscale.data import DATASETS
    from tf_advscale.torch_import import arch_of_entry
    model, meta = zoo.load(name)
    assert arch_of_entry(meta) == "resnet20"
    out = tmp_path / "r20.pt"
    assert advscale_cli.main(["zoo", "export", name, "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    mu, sigma = state.pop("mu", torch.zeros(1)), state.pop("sigma", torch.ones(1))
    shape = DATASETS[dataset]["shape"]
    net = torch_models.resnet_cifar(20, 10, in_channels=shape[-1])
    net.load_state_dict(state, strict=True)
    net.eval()
    x = np.random.default_rng(0).uniform(size=(16, *shape)).astype("float32")
    with torch.no_grad():
        theirs = net((torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) - mu) / sigma).numpy()
    ours = np.asarray(model.predict(x, verbose=0))
    assert np.abs(ours - theirs).max() < 1e-4
    back = import_torch("resnet20", str(out), "resnet20.back", dataset=dataset,
                        zoo_dir=str(tmp_path / "z"))
    again, _ = zoo.load_entry(back)
    assert np.abs(np.asarray(again.predict(x, verbose=0)) - ours).max() < 1e-5


def test_the_published_preactresnet18_has_a_pytorch_layout():
    """Published entries name family and depth, not a registry model."""
    import pathlib

    from tf_advscale.torch_import import arch_of_entry
    meta = json.loads((pathlib.Path(__file__).parents[1] / "zoo" /
                       "preactresnet18.nfgsm_cifar10jpeg" / "metadata.json").read_text())
    assert "registry" not in meta["architecture"]
    assert arch_of_entry(meta) == "preactresnet18"


def test_a_checkpoint_for_other_images_is_refused(tmp_path):
    """A Fashion-MNIST ResNet-20 (1-channel stem) imported as CIFAR-10: one line."""
    path = _save(tmp_path, _random_state(torch_models.resnet_cifar(20, in_channels=1)))
    with pytest.raises(CheckpointError, match="stem takes 1-channel images, the data set's "
                                              "have 3; refused"):
        import_torch("resnet20", str(path), "resnet20.x_cifar10", zoo_dir=str(tmp_path / "z"))


def test_export_refuses_a_mixbn_model():
    from tf_advscale.models import build_model
    from tf_advscale.torch_import import CheckpointError as Refused
    from tf_advscale.torch_import import to_torch_state
    model = build_model("preactresnet18", num_classes=10, norm="mixbn")
    with pytest.raises(Refused, match=r"stage1_block1_preact_norm \(MixBN\) holds 6 weights, a PyTorch BatchNorm2d 4"):
        to_torch_state(model, "preactresnet18")
