"""2-D convolutional nets for images shaped (N, C, H, W): a small ResNet and a tiny test net.

Initialisation is PyTorch's default (Kaiming-uniform with a=sqrt(5) for conv/linear weights, BN weight 1, bias 0); no
zero-init of the last BN in each block or other scheme, so results compare against plain PyTorch code.
"""

from __future__ import annotations

from torch import Tensor, nn

from quicktrain.models._checks import require_dims, widths


def conv_bn(c_in: int, c_out: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """3x3 conv (padding 1, no bias: BN's shift makes it redundant, Ioffe & Szegedy 2015) -> BN [-> ReLU]."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """The basic block of He et al. 2016 ("Deep residual learning"): relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(width, width), conv_bn(width, width, relu=False))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.body(x))


class GlobalAvgHead(nn.Module):
    """Mean over every spatial position, then a linear classifier: size-agnostic, so progressive resizing works.
    Average rather than max: it is the ResNet paper's choice and the mean of a feature map changes little with its
    resolution, so features learned on small early images carry over to the full size (Touvron et al. 2019, FixRes)."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.mean(dim=(2, 3)))


class ResNet2d(nn.Module):
    """stem conv_bn at channels[0]; per stage: a stride-2 conv_bn into the stage's width (all but the first stage), then
    one residual block; global average pool; linear. One block a stage keeps it cheap on a CPU: with the default widths
    (32, 64, 128) a 32x32 image costs ~0.13 GFLOP forward, most of it in the six block convs."""

    def __init__(self, in_channels: int, num_classes: int, channels: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(in_channels, channels[0])]
        for i, width in enumerate(channels):
            if i > 0:  # downsample at every stage boundary, ResNet-style, even where the width stays the same
                layers.append(conv_bn(channels[i - 1], width, stride=2))
            layers.append(Residual(width))
        self.features = nn.Sequential(*layers)
        self.head = GlobalAvgHead(channels[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resnet2d(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = ()) -> nn.Module:
    """A small ResNet for digits (1x8x8), MNIST (1x28x28) or CIFAR-10 (3x32x32); one width per stage, default
    (32, 64, 128)."""
    require_dims("resnet2d", input_shape, 2)
    return ResNet2d(input_shape[0], num_classes, widths("resnet2d", channels, (32, 64, 128)))


def tiny2d(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = ()) -> nn.Module:
    """A test model: one Conv2d(C, 8, 3, stride 2, padding 1) + BN + ReLU, global average, linear."""
    require_dims("tiny2d", input_shape, 2)
    (width,) = widths("tiny2d", channels, (8,), exactly=1)
    conv = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    return nn.Sequential(conv, GlobalAvgHead(width, num_classes))
