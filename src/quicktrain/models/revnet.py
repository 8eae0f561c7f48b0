"""revnet1d: a deep residual 1-D conv net at constant width, plain or reversible, to measure what activation
checkpointing and reversible blocks buy as depth grows (benchmarks/memory_depth.py).

Plain: a conv stem to width C, then `depth` residual blocks h + F(h), F = conv3-BN-ReLU-conv3-BN on all C
channels, in an nn.ModuleList (what `memory.checkpoint` wraps), global average pooling, a linear head.
Reversible (`reversible=True`, RevNet: Gomez et al. 2017): the same stem and head; the blocks are couplings on the
two channel halves, y1 = x1 + F(x2), y2 = x2 + G(y1), F and G each conv3-BN-ReLU-conv3-BN on C/2 channels, run as
one `ReversibleSequence` that keeps no activations inside. At the same width a coupling has half the parameters of
a plain block (two half-width residual functions instead of one full-width one), as in the RevNet paper's
comparisons; widen it with `model.channels` to match parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from quicktrain.errors import ConfigError
from quicktrain.memory.reversible import Coupling, ReversibleSequence
from quicktrain.models._checks import require_dims, widths

__all__ = ["revnet1d"]


def _residual(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(width, width, 3, padding=1, bias=False), nn.BatchNorm1d(width),
                         nn.ReLU(inplace=True), nn.Conv1d(width, width, 3, padding=1, bias=False),
                         nn.BatchNorm1d(width))


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.f = _residual(width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.f(x)


class RevNet1d(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int, reversible: bool) -> None:
        super().__init__()
        self.reversible = reversible
        self.stem = nn.Sequential(nn.Conv1d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm1d(width),
                                  nn.ReLU(inplace=True))
        if reversible:
            half = width // 2
            self.blocks: nn.ModuleList = ReversibleSequence(Coupling(_residual(half), _residual(half))
                                                            for _ in range(depth))
        else:
            self.blocks = nn.ModuleList(Residual(width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        if self.reversible:
            x1, x2 = h.chunk(2, dim=1)
            h = torch.cat(self.blocks(x1, x2), dim=1)
        else:
            for block in self.blocks:
                h = block(h)
        return self.head(h.mean(dim=2))


def revnet1d(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (), depth: int = 8,
             reversible: bool = False) -> nn.Module:
    """`depth` residual blocks (or reversible couplings) at width `channels` = (C,), default (64,); any length."""
    require_dims("revnet1d", input_shape, 1)
    (width,) = widths("revnet1d", channels, (64,), exactly=1)
    if reversible and width % 2:
        raise ConfigError(f"config key model.channels: reversible revnet1d splits the width in two halves; "
                          f"{width} is odd")
    return RevNet1d(input_shape[0], num_classes, width, depth, reversible)
