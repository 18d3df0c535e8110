"""Throughput of adversarial training and evaluation: tf_advscale against the
tools users would pick instead, in the same run, on the same machine.

    pip install ".[bench]"       # torch 2.13 (CPU), torchattacks 3.5.1, IBM ART 1.20.1
    python benchmarks/peers.py --out results/bench_peers.json

Workloads (images/s, after warm-up; median over timed repeats):
  * PreActResNet-18 fast (N-FGSM) training step, batch 128, float32 and
    bfloat16, ours against plain PyTorch in channels-last memory format
    (``--only-fast`` runs just this one)
  * CIFAR ResNet-20, batch 128, 32x32x3; ResNet-50, batch 8, 224x224x3 (``--skip-r50`` omits it)
  * PGD-7 training step (epsilon 8/255, step 2/255, random start; attack with
    BN in inference mode), FGSM-RS training step (Wong et al. 2020), PGD-20
    evaluation of one batch
  * tf_advscale (AdversarialModel, graph mode), PyTorch + torchattacks (same
    architecture, same attack settings), IBM ART's TensorFlow adversarial
    trainer (``AdversarialTrainerMadryPGD``, PGD-7 step only: ART has no
    FGSM-RS trainer for TF and its evaluation is the same PGD)

FLOPs are counted analytically from the Keras model: 2 x multiply-adds of
every convolution and dense layer for one forward pass F (BN, ReLU, pooling
not counted). A step costs, per image: PGD-K training K x 2F (forward + input
gradient) + 3F (forward + backward for the weights), FGSM-RS 1 x 2F + 3F,
PGD-K evaluation K x 2F + F. "Achieved GFLOP/s" = that count x images/s.
Two ceilings. The machine's: the best float32 GFLOP/s TensorFlow reaches here
for a large matmul and for 3x3 convolutions (``conv_best``). The model's: the
time its own Conv2D layers take when run alone, one by one, at the same batch
(forward, input gradient, kernel gradient; see ``conv_roofline``), so that
``fraction_of_model_conv_ceiling`` = conv-only time / step time says how much
the step adds to its convolutions (BN, ReLU, the attack's projection, ...).
"""

import argparse
import json
import os
import statistics
import sys
import time

# Measure this checkout, not an installed copy of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tf_advscale  # noqa: E402,F401  first: it asks for TensorFlow's oneDNN kernels

EPS, STEP = 8 / 255, 2 / 255


def _threads(n):
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def _time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# -- FLOPs and the ceiling ------------------------------------------------------

def _leaf_layers(model):
    """The layers of ``model``, nested models expanded."""
    import keras
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def forward_flops(model):
    """2 x multiply-adds of the Conv2D and Dense layers, per image."""
    import keras
    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            kh, kw, cin, cout = layer.kernel.shape
            total += 2 * out[1] * out[2] * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout
    return total


def ceilings(repeats):
    import tensorflow as tf
    out = {}
    a = tf.random.normal([2048, 2048])
    mm = tf.function(lambda: tf.matmul(a, a))
    t = _time(lambda: mm().numpy(), repeats)
    out["matmul_2048"] = 2 * 2048 ** 3 / t / 1e9
    for name, (n, hw, c) in {"conv3x3_b128_32px_16ch": (128, 32, 16),
                             "conv3x3_b128_8px_64ch": (128, 8, 64),
                             "conv3x3_b8_56px_64ch": (8, 56, 64),
                             "conv3x3_b8_14px_256ch": (8, 14, 256)}.items():
        x = tf.random.normal([n, hw, hw, c])
        k = tf.random.normal([3, 3, c, c])
        conv = tf.function(lambda x=x, k=k: tf.nn.conv2d(x, k, 1, "SAME"))
        t = _time(lambda: conv().numpy(), repeats)
        out[name] = 2 * n * hw * hw * 9 * c * c / t / 1e9
    out["conv_best"] = max(v for k, v in out.items() if k.startswith("conv"))
    return {k: round(v, 1) for k, v in out.items()}


def conv_layers(model):
    """(input shape, kernel shape, strides, padding) of every Conv2D layer."""
    import keras
    return [(tuple(layer.input.shape[1:]), tuple(layer.kernel.shape), tuple(layer.strides),
             layer.padding.upper())
            for layer in _leaf_layers(model) if isinstance(layer, keras.layers.Conv2D)]


def conv_roofline(model, batch, repeats):
    """Seconds per image that the model's convolutions alone take, run one
    by one at this batch size: forward, input gradient and kernel gradient
    of each Conv2D layer. A step made only of its convolutions, at the speed
    they reach alone, would take (per image): PGD-K training K x (fwd + dx)
    + fwd + dx + dw; FGSM-RS 1 x (fwd + dx) + fwd + dx + dw; PGD-K
    evaluation K x (fwd + dx) + fwd. This is the ceiling for these shapes,
    which small-channel layers keep well below the machine's best conv."""
    import tensorflow as tf
    totals = {"fwd": 0.0, "dx": 0.0, "dw": 0.0}
    timed = {}
    for shape, kshape, strides, padding in conv_layers(model):
        key = (shape, kshape, strides, padding)
        if key not in timed:
            x = tf.random.normal((batch, *shape))
            k = tf.random.normal(kshape)
            y = tf.nn.conv2d(x, k, strides, padding)
            dy = tf.random.normal(y.shape)
            fns = {
                "fwd": tf.function(lambda: tf.nn.conv2d(x, k, strides, padding)),
                "dx": tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=x.shape, filter=k, out_backprop=dy,
                    strides=[1, *strides, 1], padding=padding)),
                "dw": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=k.shape, out_backprop=dy,
                    strides=[1, *strides, 1], padding=padding)),
            }
            timed[key] = {n: _time(lambda f=f: f().numpy(), repeats) for n, f in fns.items()}
        for n, t in timed[key].items():
            totals[n] += t / batch
    fd = totals["fwd"] + totals["dx"]
    return {"pgd7_train": 7 * fd + fd + totals["dw"],
            "fgsm_rs_train": fd + fd + totals["dw"],
            "pgd20_eval": 20 * fd + totals["fwd"]}


# -- tf_advscale ------------------------------------------------------------------

def ours(depth, family, shape, batch, repeats, num_classes):
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_advscale import attacks
    from tf_advscale.models import resnet
    from tf_advscale.training import AdversarialModel

    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(batch, *shape)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, size=(batch,)).astype("int32"))
    out = {}
    specs = {"pgd7_train": attacks.PGD(epsilon=EPS, step_size=STEP, steps=7),
             "fgsm_rs_train": attacks.fgsm_rs(EPS)}
    for name, attack in specs.items():
        keras.utils.set_random_seed(0)
        classifier = resnet(depth=depth, family=family, num_classes=num_classes,
                            input_shape=shape)
        model = AdversarialModel(classifier, attack=attack, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        t = _time(lambda: model.train_on_batch(x, y), repeats)
        out[name] = batch / t
    pgd20 = attacks.PGD(epsilon=EPS, step_size=2.5 * EPS / 20, steps=20)
    fn = tf.function(lambda a, b: pgd20(lambda i: classifier(i, training=False), a, b))
    out["pgd20_eval"] = batch / _time(lambda: fn(x, y).numpy(), repeats)
    return out, forward_flops(classifier), conv_roofline(classifier, batch, repeats)


# -- PyTorch + torchattacks ---------------------------------------------------------

def torch_resnet(depth, family, num_classes):
    """The same ResNets as tf_advscale.models.resnet (post-activation)."""
    import torch.nn as nn

    from tf_advscale.models.resnet import STAGE_FILTERS, blocks_for
    block, stages = blocks_for(family, depth)
    expansion = 4 if block == "bottleneck" else 1

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)

    class Block(nn.Module):
        def __init__(self, cin, f, stride):
            super().__init__()
            out = f * expansion
            if block == "basic":
                self.body = nn.Sequential(nn.Conv2d(cin, f, 3, stride, 1, bias=False), bn(f),
                                          nn.ReLU(), nn.Conv2d(f, f, 3, 1, 1, bias=False), bn(f))
            else:
                self.body = nn.Sequential(
                    nn.Conv2d(cin, f, 1, bias=False), bn(f), nn.ReLU(),
                    nn.Conv2d(f, f, 3, stride, 1, bias=False), bn(f), nn.ReLU(),
                    nn.Conv2d(f, out, 1, bias=False), bn(out))
            self.proj = None
            if stride != 1 or cin != out:
                self.proj = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), bn(out))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + (x if self.proj is None else self.proj(x)))

    filters = STAGE_FILTERS[family]
    if family == "cifar":
        layers = [nn.Conv2d(3, filters[0], 3, 1, 1, bias=False), bn(filters[0]), nn.ReLU()]
    else:
        layers = [nn.Conv2d(3, filters[0], 7, 2, 3, bias=False), bn(filters[0]), nn.ReLU(),
                  nn.MaxPool2d(3, 2, 1)]
    cin = filters[0]
    for s, (n, f) in enumerate(zip(stages, filters)):
        for i in range(n):
            layers.append(Block(cin, f, 2 if (i == 0 and s > 0) else 1))
            cin = f * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def peer_torch(depth, family, shape, batch, repeats, num_classes, threads):
    import numpy as np
    import torch
    import torchattacks
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(size=(batch, shape[2], shape[0], shape[1])).astype("float32"))
    y = torch.tensor(rng.integers(0, num_classes, size=(batch,)))
    out = {}
    for name, make in {"pgd7_train": lambda m: torchattacks.PGD(m, eps=EPS, alpha=STEP, steps=7,
                                                                 random_start=True),
                       "fgsm_rs_train": lambda m: torchattacks.FFGSM(m, eps=EPS,
                                                                     alpha=1.25 * EPS)}.items():
        model = torch_resnet(depth, family, num_classes)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        attack = make(model)  # attacks with BN in eval mode (torchattacks' default)

        def step():
            adv = attack(x, y)
            model.train()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(adv), y).backward()
            opt.step()
        out[name] = batch / _time(step, repeats)
    model.eval()
    pgd20 = torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / 20, steps=20, random_start=True)
    out["pgd20_eval"] = batch / _time(lambda: pgd20(x, y), repeats)
    return out


# -- Fast adversarial training: PreActResNet-18, N-FGSM --------------------------------

def random_batch(batch):
    """A seeded batch of CIFAR-sized images in [0, 1] and int32 labels."""
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(batch,)).astype("int32")
    return x, y


def nfgsm_step_rate(family, depth, precision, x, y, repeats, warmup=2):
    """Images/s of our N-FGSM training step (configs/fast.py's attack, an
    AdversarialModel in graph mode) of ``resnet(depth, family=family)`` on
    the batch ``x, y``, under the Keras dtype policy ``precision``."""
    import keras

    from tf_advscale.models import resnet
    from tf_advscale.training import AdversarialModel

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = AdversarialModel(resnet(depth, 10, family=family),
                                 attack={"name": "n_fgsm", "epsilon": EPS},
                                 weight_decay=5e-4, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        return len(x) / _time(lambda: model.train_on_batch(x, y), repeats, warmup=warmup)
    finally:
        keras.config.set_dtype_policy(previous)


def fast_training(batch, repeats, threads, precisions=("float32", "mixed_bfloat16")):
    """One N-FGSM training step of PreActResNet-18 (configs/fast.py's recipe),
    images/s: tf_advscale (AdversarialModel, graph mode) against plain PyTorch
    (the same network from tf_advscale.torch_models, channels-last memory
    format, the same step written out), in each of ``precisions``: float32,
    mixed_bfloat16 (Keras' policy; torch.autocast on the CPU)."""
    dtypes = {"float32": None, "mixed_bfloat16": "bfloat16"}
    unknown = [p for p in precisions if p not in dtypes]
    if not precisions or unknown:
        raise ValueError(f"precisions must be some of {sorted(dtypes)}. "
                         f"Received: {list(precisions)}")
    import torch

    from tf_advscale.torch_models import preact_resnet18

    x, y = random_batch(batch)
    out = {"tf_advscale": {}, "torch_channels_last": {}}
    for precision in precisions:
        out["tf_advscale"][precision] = nfgsm_step_rate("preact", 18, precision, x, y, repeats)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(
        memory_format=torch.channels_last)
    yt = torch.from_numpy(y.astype("int64"))
    net = preact_resnet18().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for precision in precisions:
        dtype = dtypes[precision] and getattr(torch, dtypes[precision])

        def cast():
            return torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast(
                "cpu", enabled=False)

        def step():
            # N-FGSM (de Jorge et al. 2022), attack with BN in eval mode as ours.
            net.eval()
            delta = (torch.rand_like(xt) * 2 - 1) * 2 * EPS
            delta = (torch.clamp(xt + delta, 0, 1) - xt).requires_grad_(True)
            with cast():
                loss = torch.nn.functional.cross_entropy(net(xt + delta), yt)
            grad, = torch.autograd.grad(loss, delta)
            adv = torch.clamp(xt + delta.detach() + EPS * grad.sign(), 0, 1)
            net.train()
            opt.zero_grad()
            with cast():
                torch.nn.functional.cross_entropy(net(adv), yt).backward()
            opt.step()
        out["torch_channels_last"][precision] = batch / _time(step, repeats)
    out["ours_over_torch"] = {p: round(out["tf_advscale"][p] / out["torch_channels_last"][p], 3)
                              for p in out["tf_advscale"]}
    for tool in ("tf_advscale", "torch_channels_last"):
        out[tool] = {p: round(v, 2) for p, v in out[tool].items()}
    return out


# -- IBM ART (TensorFlow) -----------------------------------------------------------

def peer_art(depth, family, shape, batch, repeats, num_classes):
    import keras
    import numpy as np
    import tensorflow as tf
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import TensorFlowV2Classifier

    from tf_advscale.models import resnet
    keras.utils.set_random_seed(0)
    model = resnet(depth=depth, family=family, num_classes=num_classes, input_shape=shape)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(model, images, labels):
        with tf.GradientTape() as tape:
            value = loss(labels, model(images, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    classifier = TensorFlowV2Classifier(model=model, nb_classes=num_classes, input_shape=shape,
                                        loss_object=loss, train_step=train_step,
                                        clip_values=(0.0, 1.0))
    rng = np.random.default_rng(0)
    n = batch * (repeats + 1)
    x = rng.uniform(size=(n, *shape)).astype("float32")
    y = rng.integers(0, num_classes, size=(n,))
    trainer = AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=batch, eps=EPS,
                                         eps_step=STEP, max_iter=7)
    trainer.fit(x[:batch], y[:batch])  # warm-up (tracing)
    t = time.perf_counter()
    trainer.fit(x[batch:], y[batch:])
    return {"pgd7_train": (n - batch) / (time.perf_counter() - t)}


# -- the table ---------------------------------------------------------------------

STEP_FLOPS = {"pgd7_train": lambda f: 7 * 2 * f + 3 * f,
              "fgsm_rs_train": lambda f: 1 * 2 * f + 3 * f,
              "pgd20_eval": lambda f: 20 * 2 * f + f}


def markdown(report):
    """The README table of a report."""
    names = {"tf_advscale": "tf_advscale", "torch_torchattacks": "PyTorch + torchattacks",
             "art_tf": "IBM ART (TF)"}
    lines = ["| model | step | tool | images/s | GFLOP/s | % of best conv | % of own convs "
             "| tf_advscale / tool |", "|---|---|---|---|---|---|---|---|"]
    for name, w in report["workloads"].items():
        for step in STEP_FLOPS:
            base = w["tf_advscale"][step]["images_per_s"]
            for tool in w["tools"]:
                if step in w[tool]:
                    r = w[tool][step]
                    lines.append(
                        f"| {name} | {step} | {names.get(tool, tool)} | {r['images_per_s']:.2f} "
                        f"| {r['gflops']:.0f} | {100 * r['fraction_of_conv_ceiling']:.0f} "
                        f"| {100 * r['fraction_of_model_conv_ceiling']:.0f} "
                        f"| {base / r['images_per_s']:.2f} |")
    c = report["ceiling_gflops"]
    lines.append("")
    lines.append(f"Ceilings (GFLOP/s): best conv {c['conv_best']:.0f}, matmul 2048 "
                 f"{c['matmul_2048']:.0f}; each model's convolutions alone: " + "; ".join(
                     f"{name} {w['conv_only_gflops']['pgd7_train']:.0f} (PGD-7 mix)"
                     for name, w in report["workloads"].items()) + ".")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/bench_peers.json")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-r50", action="store_true", help="only the CIFAR ResNet-20")
    p.add_argument("--only-fast", action="store_true",
                   help="only the PreActResNet-18 fast-training step (ours and PyTorch)")
    p.add_argument("--precisions", default="float32,mixed_bfloat16",
                   help="with --only-fast: comma-separated, float32 and/or mixed_bfloat16 "
                        "(bfloat16 is several times slower on a CPU without native support)")
    p.add_argument("--peers", default="torch,art", help="comma-separated: torch, art")
    p.add_argument("--markdown", metavar="JSON", help="print the README table of a saved "
                                                      "report and exit")
    a = p.parse_args()
    if a.markdown:
        with open(a.markdown) as f:
            print(markdown(json.load(f)))
        return
    _threads(a.threads)
    if a.only_fast:
        import tensorflow as tf
        import torch

        from tf_advscale import distribute
        report = {"machine": distribute.describe_machine(),
                  "threads": a.threads, "batch": 128,
                  "versions": {"tensorflow": tf.__version__, "torch": torch.__version__},
                  "preactresnet18_nfgsm_train_images_per_s": fast_training(
                      128, a.repeats, a.threads, [s for s in a.precisions.split(",") if s])}
        from tf_advscale.files import write_json
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        write_json(a.out, report)
        print(json.dumps(report, indent=2))
        return
    peers = [s for s in a.peers.split(",") if s]
    workloads = [("resnet20_cifar_b128", 20, "cifar", (32, 32, 3), 128, 10)]
    if not a.skip_r50:
        workloads.append(("resnet50_224_b8", 50, "imagenet", (224, 224, 3), 8, 1000))
    from tf_advscale import distribute
    report = {"machine": distribute.describe_machine(), "threads": a.threads,
              "python": sys.version.split()[0], "ceiling_gflops": ceilings(a.repeats),
              "workloads": {}}
    import keras
    import tensorflow as tf
    report["versions"] = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for name, depth, family, shape, batch, k in workloads:
        w = {"batch": batch}
        ips, flops, roof = ours(depth, family, shape, batch, a.repeats, k)
        w["forward_gflop_per_image"] = round(flops / 1e9, 4)
        w["tf_advscale"] = ips
        if "torch" in peers:
            import torch
            import torchattacks
            report["versions"].update(torch=torch.__version__,
                                      torchattacks=torchattacks.__version__)
            w["torch_torchattacks"] = peer_torch(depth, family, shape, batch, a.repeats, k,
                                                 a.threads)
        if "art" in peers:
            import art
            report["versions"]["art"] = art.__version__
            w["art_tf"] = peer_art(depth, family, shape, batch, max(2, a.repeats // 2), k)
        tools = [t for t in w if isinstance(w[t], dict)]
        for tool in tools:
            w[tool] = {step: {"images_per_s": round(v, 2),
                              "gflops": round(STEP_FLOPS[step](flops) * v / 1e9, 1),
                              "fraction_of_conv_ceiling": round(
                                  STEP_FLOPS[step](flops) * v / 1e9
                                  / report["ceiling_gflops"]["conv_best"], 3),
                              # conv-only time / step time: 1.0 = the step costs
                              # no more than its convolutions run alone
                              "fraction_of_model_conv_ceiling": round(roof[step] * v, 3)}
                       for step, v in w[tool].items()}
        w["conv_only_seconds_per_image"] = {s: round(v, 6) for s, v in roof.items()}
        w["conv_only_gflops"] = {s: round(STEP_FLOPS[s](flops) / v / 1e9, 1)
                                 for s, v in roof.items()}
        w["tools"] = tools
        report["workloads"][name] = w
        print(json.dumps({name: w}), flush=True)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"ceiling (GFLOP/s): {report['ceiling_gflops']}")
    for name, w in report["workloads"].items():
        print(f"{name} convolutions alone (GFLOP/s): {w['conv_only_gflops']}")
    for name, w in report["workloads"].items():
        for step in STEP_FLOPS:
            row = [f"{name:20s} {step:14s}"]
            base = w["tf_advscale"][step]["images_per_s"]
            for tool in w["tools"]:
                if step in w[tool]:
                    r = w[tool][step]
                    row.append(f"{tool}: {r['images_per_s']:.1f} img/s "
                               f"({r['gflops']} GFLOP/s = {r['fraction_of_conv_ceiling']:.0%} "
                               f"of best conv, {r['fraction_of_model_conv_ceiling']:.0%} of "
                               f"own convs; ours/{tool} = {base / r['images_per_s']:.2f})")
            print("  ".join(row))


if __name__ == "__main__":
    main()
