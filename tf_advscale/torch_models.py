"""PyTorch definitions of the robust CIFAR-10 architectures, with the module
names their published checkpoints use (PreActResNet-18 as in Wong et al.
2020 and RobustBench; ResNet-18 as in the common CIFAR code; WideResNet as
in RobustBench / TRADES), so that a state
dict published for them loads with ``strict=True``. They serve the benchmarks
(the same network in both frameworks) and the checkpoint importer.

PyTorch is imported by the functions, not at module import: ``pip install
torch==2.13.0``.
"""


def _nn():
    try:
        import torch
    except ImportError as e:
        raise ImportError("PyTorch models need torch: pip install torch==2.13.0") from e
    return torch


def preact_resnet18(num_classes=10):
    """PreActResNet-18: keys ``conv1``, ``layer{1..4}.{0,1}.{bn1,conv1,bn2,conv2}``,
    ``layer{2..4}.0.shortcut.0``, ``bn``, ``linear``."""
    torch = _nn()
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

        def forward(self, x):
            out = F.relu(self.bn1(x))
            skip = self.shortcut(out) if hasattr(self, "shortcut") else x
            out = self.conv2(F.relu(self.bn2(self.conv1(out))))
            return out + skip

    class PreActResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            cin = 64
            for i, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
                setattr(self, f"layer{i + 1}", nn.Sequential(Block(cin, cout, stride),
                                                             Block(cout, cout, 1)))
                cin = cout
            self.bn = nn.BatchNorm2d(512)
            self.linear = nn.Linear(512, num_classes)

        def forward(self, x):
            out = self.conv1(x)
            for i in range(4):
                out = getattr(self, f"layer{i + 1}")(out)
            out = F.relu(self.bn(out))
            return self.linear(out.mean(dim=(2, 3)))

    return PreActResNet18()


def resnet18_cifar(num_classes=10):
    """ResNet-18 for 32x32 images (post-activation, 3x3 stem, no max-pool):
    keys ``conv1``, ``bn1``, ``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}``,
    ``layer{2..4}.0.shortcut.{0,1}``, ``linear``."""
    torch = _nn()
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(out + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            cin = 64
            for i, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
                setattr(self, f"layer{i + 1}", nn.Sequential(Block(cin, cout, stride),
                                                             Block(cout, cout, 1)))
                cin = cout
            self.linear = nn.Linear(512, num_classes)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            for i in range(4):
                out = getattr(self, f"layer{i + 1}")(out)
            return self.linear(out.mean(dim=(2, 3)))

    return ResNet18()


def resnet_cifar(depth=20, num_classes=10, in_channels=3, activation="relu"):
    """The zoo's CIFAR ResNets (He et al. 2016, depth 6n+2: a 3x3 stem of 16,
    three stages of n post-activation basic blocks with 16, 32, 64 channels,
    1x1 projection shortcuts with BN where the shape changes), as
    ``tf_advscale.models``' ``cifar_resnet{depth}`` builds them. Its convs pad
    as TensorFlow's ``"same"`` does: at stride 2 on an even size, one pixel at
    the bottom/right only, not PyTorch's symmetric ``padding=1``; the weights
    of a Keras model therefore give the same logits here. Keys ``conv1``,
    ``bn1``, ``layer{1..3}.{i}.{conv1,bn1,conv2,bn2}``,
    ``layer{2,3}.0.shortcut.{0,1}``, ``linear``. ``in_channels``: 1 for
    Fashion-MNIST's 28x28 images."""
    torch = _nn()
    nn, F = torch.nn, torch.nn.functional
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (n >= 1). Received: depth={depth!r}")
    n = (depth - 2) // 6
    act = {"relu": F.relu, "silu": F.silu}[activation]

    class SameConv(nn.Conv2d):
        """Conv2d with TensorFlow's "same" padding (the odd pixel after)."""

        def __init__(self, cin, cout, kernel, stride=1):
            super().__init__(cin, cout, kernel, stride, 0, bias=False)

        def forward(self, x):
            pads = []
            for size, k, s in reversed(list(zip(x.shape[2:], self.kernel_size, self.stride))):
                total = max((-(-size // s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            return F.conv2d(F.pad(x, pads), self.weight, None, self.stride)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-5)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = SameConv(cin, cout, 3, stride)
            self.bn1 = bn(cout)
            self.conv2 = SameConv(cout, cout, 3)
            self.bn2 = bn(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(SameConv(cin, cout, 1, stride), bn(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(act(self.bn1(self.conv1(x)))))
            return act(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = SameConv(in_channels, 16, 3)
            self.bn1 = bn(16)
            cin = 16
            for i, (cout, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
                setattr(self, f"layer{i + 1}", nn.Sequential(*[
                    Block(cin if j == 0 else cout, cout, stride if j == 0 else 1)
                    for j in range(n)]))
                cin = cout
            self.linear = nn.Linear(64, num_classes)

        def forward(self, x):
            out = act(self.bn1(self.conv1(x)))
            for i in range(3):
                out = getattr(self, f"layer{i + 1}")(out)
            return self.linear(out.mean(dim=(2, 3)))

    return ResNet()


def wide_resnet(depth=28, width=10, num_classes=10, activation="relu"):
    """WideResNet-depth-width: keys ``conv1``,
    ``block{1..3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``."""
    torch = _nn()
    nn = torch.nn
    if (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n+4. Received: depth={depth!r}")
    n = (depth - 4) // 6
    act = {"relu": nn.ReLU, "silu": nn.SiLU}[activation]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.relu1 = act()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu2 = act()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.equal = cin == cout
            if not self.equal:
                self.convShortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

        def forward(self, x):
            pre = self.relu1(self.bn1(x))
            out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
            return out + (x if self.equal else self.convShortcut(pre))

    class Group(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.layer = nn.Sequential(*[Block(cin if i == 0 else cout, cout,
                                               stride if i == 0 else 1) for i in range(n)])

        def forward(self, x):
            return self.layer(x)

    class WideResNet(nn.Module):
        def __init__(self):
            super().__init__()
            c = [16, 16 * width, 32 * width, 64 * width]
            self.conv1 = nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
            self.block1 = Group(c[0], c[1], 1)
            self.block2 = Group(c[1], c[2], 2)
            self.block3 = Group(c[2], c[3], 2)
            self.bn1 = nn.BatchNorm2d(c[3])
            self.relu = act()
            self.fc = nn.Linear(c[3], num_classes)

        def forward(self, x):
            out = self.block3(self.block2(self.block1(self.conv1(x))))
            return self.fc(self.relu(self.bn1(out)).mean(dim=(2, 3)))

    return WideResNet()
