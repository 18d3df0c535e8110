"""Validates tf_advscale's AutoAttack against torchattacks' on identical weights.

The Keras model's PyTorch twin (``tf_advscale.bridge.torch_twin``: same
weights, logits equal within 1e-4, checked on the images and written to the
JSON) is attacked by torchattacks 3.5.1; the Keras model by
``tf_advscale.attacks.AutoAttack``. Same seeded test images, both on this
CPU, one after the other in one run, each with the same threads.

Two torchattacks references:

* ``torchattacks_standard_settings`` (the comparison): torchattacks' APGD,
  APGDT, FAB and Square with AutoAttack's published standard settings (100
  iterations, 9 targets, 5,000 queries), run in AutoAttack's order, each on
  the images still robust. ``torchattacks.AutoAttack(version="standard")``
  builds the same four attacks but leaves APGD, APGD-T and FAB at
  torchattacks' default of 10 iterations, so it is a weaker attack than the
  standard version;
* ``torchattacks_autoattack_class`` (``--shipped``): that class as shipped,
  for the record.

    pip install ".[torch]" torchattacks==3.5.1
    python benchmarks/validate_autoattack.py --model zoo:resnet20.pgd3_cifar10jpeg \\
        --n 1000 --out results/validate_autoattack_resnet20_pgd3.json
    python benchmarks/validate_autoattack.py --model zoo:resnet20.mixbn_pgd3_cifar10jpeg \\
        --route adversarial --n 1000 --out results/validate_autoattack_resnet20_mixbn.json

``--twin export`` attacks, instead of the bridge's twin, the PyTorch copy
that ``advscale zoo export`` writes (``tf_advscale.torch_models``' definition
of the entry's architecture, strictly loaded, its ``mu``/``sigma`` applied),
and re-imports that file, writing the round trip's largest logit difference
(issue: a robust entry exported to PyTorch and imported back):

    python benchmarks/validate_autoattack.py --model zoo:resnet20.pgd3_cifar10jpeg \
        --twin export --n 200 --out results/roundtrip_resnet20_pgd3.json

``--workdir DIR`` saves both sides' finished batches there: the same command
resumes a killed run, and the seconds compared are each side's attack time
summed over its batches.

``--n 20 --quick`` runs every piece with short attacks (a smoke test, not a
measurement: its JSON says so).
"""

import argparse
import fractions
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measure this checkout, not an installed copy of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tf_advscale.files import write_json  # noqa: E402
from tf_advscale import attacks, bridge, data, distribute, zoo  # noqa: E402
from tf_advscale.attacks.autoattack import STAGES  # noqa: E402
from tf_advscale.evaluate import resolve_model, run_attacks, stage_key  # noqa: E402


def load_model(spec, route):
    """``zoo:NAME`` (a zoo entry) or a .keras path; the classifier, routed."""
    if spec.startswith("zoo:"):
        model, meta = zoo.load(spec[4:], route=route)
        return model, meta
    return resolve_model(spec, route), None


def exported_twin(model, meta, x, workdir, dataset="cifar10"):
    """The PyTorch copy ``advscale zoo export`` writes, as a module taking
    NCHW images in [0, 1]; and the largest |logit difference| between
    ``model`` and the entry imported back from that file, on ``x``."""
    import torch

    from tf_advscale import torch_models
    from tf_advscale.torch_import import ARCHS, arch_of_entry, export_torch, import_torch
    arch = arch_of_entry(meta)
    activation = (meta.get("architecture") or {}).get("activation", "relu")
    path = export_torch(model, arch, os.path.join(workdir, "exported.pt"))
    state = torch.load(path, weights_only=True)
    mu, sigma = state.pop("mu", torch.zeros(1)), state.pop("sigma", torch.ones(1))
    net = ARCHS[arch][2](torch_models, int(model.output.shape[-1]), activation, x.shape[-1])
    net.load_state_dict(state, strict=True)
    net.eval()

    class Standardized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, images):
            return self.net((images - mu) / sigma)

    back = import_torch(arch, path, f"{arch}.roundtrip_check", dataset=dataset,
                        zoo_dir=workdir, activation=activation, check=False)
    again, _ = zoo.load_entry(back)
    diff = np.abs(again.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    return Standardized().eval(), float(diff)


class _Progress:
    """torchattacks' side's progress, saved after every batch to ``path``
    (None: not saved), so a killed run resumes where it stopped. Refuses a
    file written for other settings."""

    def __init__(self, path, settings):
        self.path, self.state = path, None
        if path and os.path.exists(path):
            with open(path) as f:
                self.state = json.load(f)
            if self.state["settings"] != settings:
                raise SystemExit(f"{path} holds another run's progress "
                                 f"({self.state['settings']}); use another --workdir")
        if self.state is None:
            self.state = {"settings": settings, "done": {}, "seconds": {}}
        self.state.pop("after", None)  # earlier versions' stored masks (see _after_masks)

    def save(self):
        if self.path:
            write_json(self.path, self.state)


def _after_masks(state):
    """Each stage's robust mask, derived, never stored: the images the next
    stage started on (``stage_images``, recorded before that stage ran), and
    for the last stage the images still robust. (Progress files of earlier
    versions also hold an ``after`` key, which a resume overwrote with the
    mask of the moment; it is not read.)"""
    order, images = list(STAGES), state["stage_images"]
    after = {}
    for stage, nxt in zip(order, order[1:]):
        after[stage] = np.zeros(len(state["clean"]), bool)
        after[stage][np.asarray(images[nxt], np.int64)] = True
    after[order[-1]] = np.array(state["robust"], bool)
    return after


def reference_attacks(twin, image_shape, eps, norm, seed, quick=False):
    """torchattacks' four attacks at AutoAttack's standard settings (100
    iterations, 9 targets, 5,000 queries; ``quick``: 5 and 20), in order."""
    import torch
    import torchattacks
    steps, queries = (5, 20) if quick else (100, 5000)
    k = int(twin(torch.zeros(1, *image_shape)).shape[-1])
    tnorm = {"linf": "Linf", "l2": "L2"}[norm]
    return {
        "apgd-ce": torchattacks.APGD(twin, norm=tnorm, eps=eps, steps=steps, n_restarts=1,
                                     loss="ce", seed=seed),
        "apgd-t": torchattacks.APGDT(twin, norm=tnorm, eps=eps, steps=steps, n_restarts=1,
                                     n_classes=k, seed=seed),
        "fab-t": torchattacks.FAB(twin, norm=tnorm, eps=eps, steps=steps, n_restarts=1,
                                  multi_targeted=True, n_classes=k, seed=seed),
        "square": torchattacks.Square(twin, norm=tnorm, eps=eps, n_queries=queries,
                                      n_restarts=1, p_init=0.8, seed=seed),
    }


def set_threads(threads):
    """The same threads for both sides (TensorFlow: inter-op 1)."""
    import torch
    torch.set_num_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def torch_reference(twin, x, y, eps, seed, quick, batch_size, norm="linf", progress=None):
    """torchattacks' four attacks at AutoAttack's standard settings, in order,
    each on the images still robust: per-stage robust masks and seconds (the
    sum of the batches' times, across resumed runs)."""
    import torch
    made = reference_attacks(twin, x.shape[1:], eps, norm, seed, quick)
    progress = progress or _Progress(None, None)
    st = progress.state
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    if "clean" not in st:
        with torch.no_grad():
            st["clean"] = np.concatenate([
                (twin(xt[i:i + batch_size]).argmax(1) == yt[i:i + batch_size]).numpy()
                for i in range(0, len(x), batch_size)]).tolist()
        st["robust"] = list(st["clean"])
    robust = np.array(st["robust"], bool)
    for name, atk in made.items():
        # The images this stage attacks: those robust when it started.
        todo = np.array(st.setdefault("stage_images", {}).setdefault(
            name, np.flatnonzero(robust).tolist()), np.int64)
        done = st["done"].setdefault(name, 0)
        for i in range(done, len(todo), batch_size):
            start = time.time()
            sub = torch.from_numpy(todo[i:i + batch_size])
            adv = atk(xt[sub], yt[sub])
            with torch.no_grad():
                ok = (twin(adv).argmax(1) == yt[sub]).numpy()
            robust[todo[i:i + batch_size][~ok]] = False
            st["seconds"][name] = st["seconds"].get(name, 0.0) + time.time() - start
            st["robust"], st["done"][name] = robust.tolist(), i + len(sub)
            progress.save()
        st["seconds"].setdefault(name, 0.0)
        progress.save()
    return np.array(st["clean"], bool), _after_masks(st), dict(st["seconds"])


def shipped_class(twin, x, y, eps, seed, batch_size, norm="linf"):
    import torch
    import torchattacks
    k = int(twin(torch.zeros(1, *x.shape[1:])).shape[-1])
    aa = torchattacks.AutoAttack(twin, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", n_classes=k,
                                 seed=seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    start = time.time()
    ok = []
    for i in range(0, len(x), batch_size):
        adv = aa(xt[i:i + batch_size], yt[i:i + batch_size])
        with torch.no_grad():
            ok.append((twin(adv).argmax(1) == yt[i:i + batch_size]).numpy())
    return float(np.concatenate(ok).mean()), time.time() - start


def _entry_norm(meta):
    """A zoo entry's threat model as an attack norm ("Linf" -> "linf")."""
    return str(meta["threat_model"].get("norm", "linf")).lower()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="zoo:NAME or a .keras file")
    p.add_argument("--route", default=None, help="MixBN route (default: the entry's)")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--source", default=None)
    p.add_argument("--path", default=None, help="data folder (zoo entries: their own)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norm", choices=["linf", "l2"], default=None,
                   help="threat model (default: the zoo entry's, else linf)")
    p.add_argument("--epsilon", default=None,
                   help="default: the zoo entry's, else 8/255 (linf) or 0.5 (l2)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shipped", action="store_true",
                   help="also run torchattacks.AutoAttack(version='standard') as shipped")
    p.add_argument("--quick", action="store_true", help="short attacks: a smoke test")
    p.add_argument("--twin", choices=["bridge", "export"], default="bridge",
                   help="the PyTorch copy attacked: the bridge's twin, or the state dict "
                        "advscale zoo export writes (zoo entries of its architectures)")
    p.add_argument("--workdir", default=None,
                   help="where both sides save their finished batches, so that the same "
                        "command resumes a killed run (default: not saved)")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch
    import torchattacks
    set_threads(args.threads)

    model, meta = load_model(args.model, args.route)
    source, path = args.source, args.path
    if meta is not None and meta.get("recipe"):  # the entry's own data, unless told otherwise
        d = zoo.data_args(meta["recipe"]["config"], source, path)
        source, path = d["source"], d["path"]
    norm = args.norm or (_entry_norm(meta) if meta else "linf")
    eps_text = args.epsilon or (meta["threat_model"]["epsilon"] if meta and norm == _entry_norm(meta)
                                else {"linf": "8/255", "l2": "0.5"}[norm])
    eps = float(fractions.Fraction(str(eps_text)))
    x, y, info = data.as_numpy(args.dataset, "test", source=source, path=path,
                               subset=args.n, seed=args.seed)
    y = y.astype(np.int32)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    round_trip = None
    if args.twin == "export":
        if meta is None:
            raise SystemExit("--twin export needs a zoo entry (--model zoo:NAME)")
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            twin, round_trip = exported_twin(model, meta, x, tmp, args.dataset)
    else:
        twin = bridge.torch_twin(model, route=args.route)
    keras_logits, torch_logits = bridge.keras_logits_and_twin_logits(model, x, twin)
    max_diff = float(np.abs(keras_logits - torch_logits).max())

    aa = attacks.AutoAttack(eps, norm=norm, n_target_classes=min(9, keras_logits.shape[1] - 1))
    if args.quick:
        short = [("apgd-ce", attacks.APGD(eps, 5, norm=norm)),
                 ("apgd-t", attacks.APGD(eps, 5, norm=norm, loss="dlr_targeted")),
                 ("fab-t", attacks.FAB(eps, 5, norm=norm)),
                 ("square", attacks.Square(eps, 20, norm=norm))]
        aa.attacks = lambda: short
    settings = {"model": args.model, "route": args.route, "twin": args.twin,
                "data": [args.dataset, source, path, args.n, args.seed], "epsilon": eps_text,
                "norm": norm, "quick": args.quick, "batch_size": args.batch_size}
    workdir = args.workdir
    correct, ours_seconds = run_attacks(
        model, x, y, {"autoattack": aa}, args.batch_size, args.seed,
        workdir=os.path.join(workdir, "tf_advscale") if workdir else None,
        settings=settings, verbose=True)
    # The attack's own seconds, summed over batches (and over resumed runs).
    ours_s = sum(ours_seconds.values())
    ours = {st: float(correct[stage_key("autoattack", st)].mean()) for st in STAGES}

    # Its versions too: a resumed run under another torch would mix two runs
    # (one saved APGD-CE stage could not be reproduced under another torch).
    progress = _Progress(os.path.join(workdir, "torchattacks.json") if workdir else None,
                         {**settings, "torch": torch.__version__,
                          "torchattacks": torchattacks.__version__})
    clean_t, after_t, theirs_seconds = torch_reference(twin, x_nchw, y, eps, args.seed,
                                                       args.quick, args.batch_size, norm,
                                                       progress)
    theirs_s = sum(theirs_seconds.values())
    theirs = {st: float(after_t[st].mean()) for st in STAGES}

    result = {
        "what": ("smoke test with short attacks (--quick): not a measurement" if args.quick
                 else "AutoAttack standard version, ours against torchattacks on identical weights"),
        "model": args.model, "route": args.route,
        "data": f"{args.dataset} ({info['source']}) test, {len(y)} images drawn with seed "
                f"{args.seed}",
        "epsilon": eps_text, "threat_model": {"linf": "Linf", "l2": "L2"}[norm],
        "twin": args.twin,
        "twin_max_abs_logit_difference": max_diff,
        "round_trip_max_abs_logit_difference": round_trip,
        "clean_accuracy": {"tf_advscale": float(correct["clean"].mean()),
                           "torchattacks": float(clean_t.mean())},
        "robust_accuracy_after_each_attack": {"tf_advscale": ours,
                                              "torchattacks_standard_settings": theirs},
        "autoattack_accuracy": {"tf_advscale": ours["square"],
                                "torchattacks_standard_settings": theirs["square"]},
        "difference_pp": {st: round(100 * (ours[st] - theirs[st]), 2) for st in STAGES},
        "seconds": {"tf_advscale": round(ours_s, 1),
                    "torchattacks_standard_settings": round(theirs_s, 1),
                    "torchattacks_per_attack": {k: round(v, 1) for k, v in theirs_seconds.items()}},
        "speedup_tf_advscale_over_torchattacks": round(theirs_s / max(ours_s, 1e-9), 2),
        "threads": args.threads,
        "versions": {"tf_advscale": tf_advscale.__version__, "tensorflow": tf.__version__,
                     "torch": torch.__version__, "torchattacks": torchattacks.__version__},
        "machine": distribute.describe_machine(),
    }
    if args.shipped:
        acc, secs = shipped_class(twin, x_nchw, y, eps, args.seed, args.batch_size, norm)
        result["torchattacks_autoattack_class"] = {
            "accuracy": acc, "seconds": round(secs, 1),
            "note": "torchattacks.AutoAttack(version='standard') as shipped: APGD, APGD-T "
                    "and FAB at 10 iterations, not the standard version's 100"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
