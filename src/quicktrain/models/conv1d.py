"""1-D convolutional nets for signals shaped (N, C, L): the mnist1d reference CNN, our fast net, and a tiny test net.

Initialisation is PyTorch's default everywhere (Kaiming-uniform with a=sqrt(5) for conv/linear weights, BN weight 1 and
bias 0): the techniques measured in this project are compared on the same init, and the reference must match its paper.
"""

from __future__ import annotations

from torch import Tensor, nn

from quicktrain.errors import ConfigError
from quicktrain.models._checks import conv_out, require_dims, widths


class ConvBase(nn.Module):
    """The mnist1d repository's reference CNN (greydanus/mnist1d, notebooks/models.py `ConvBase`), unchanged except
    that the classifier's input width is computed from L (125 for the paper's L = 40) and nothing is printed.
    Three strided convs with ReLU, no norm and no residuals; 5,210 parameters for L = 40 and 10 classes."""

    def __init__(self, length: int, num_classes: int, width: int = 25) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        out = conv_out(conv_out(conv_out(length, 5, 2, 1), 3, 2, 1), 3, 2, 1)
        self.linear = nn.Linear(width * out, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(-1, 1, x.shape[-1])
        h = self.conv3(self.conv2(self.conv1(x).relu()).relu()).relu()
        return self.linear(h.view(h.shape[0], -1))


def convbase(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = ()) -> nn.Module:
    """The reference CNN; `channels` = (width,) changes its conv width (default 25, the paper's)."""
    require_dims("convbase", input_shape, 1)
    c, length = input_shape
    if c != 1:
        raise ConfigError("config key model.name: model 'convbase' takes 1-channel signals (N, 1, L); "
                          f"this data is {tuple(input_shape)}")
    if length < 3:  # below this conv1 (kernel 5, padding 1) has no output
        raise ConfigError("config key model.name: model 'convbase' needs length >= 3; "
                          f"this data is {tuple(input_shape)}")
    (width,) = widths("convbase", channels, (25,), exactly=1)
    return ConvBase(length, num_classes, width)


def _stage(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    # A 1-D conv written as a 2-D one with a (1, k) kernel over an (N, C, 1, L) view: measured on this Zen 4 CPU, the
    # 2-D kernels are faster than Conv1d's (1.71 vs 2.39 ms a step at batch 128), and only they can use channels_last,
    # which cut BatchNorm's cost by 40% and the convs' by 25% more (see docs/BENCHMARKS.md). Same maths as Conv1d.
    # bias=False: BatchNorm's shift makes a conv bias redundant (Ioffe & Szegedy 2015, section 3.2).
    return nn.Sequential(nn.Conv2d(c_in, c_out, (1, kernel), stride=(1, stride), padding=(0, kernel // 2), bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class GlobalMaxHead(nn.Module):
    """Max over every spatial position, then a linear classifier. Length-agnostic, so shorter inputs work."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(2).amax(dim=-1))


class FastNet1d(nn.Module):
    """Stages of conv -> BatchNorm -> ReLU, a global max over length, then a linear classifier.

    Stage i uses kernel 5 (i = 0) or 3, padding k // 2, and by default stride 2 for the first two stages and 1 after
    (`strides` overrides it, one per stage: a stride-1 first stage sees the full signal, for more accuracy); with the
    default widths (32, 48, 64) a length-40 signal is seen at 20, 10 and 10 positions. Downsampling is by stride, not
    pooling: measured on this 2-core Zen 4 CPU, MaxPool1d forward+backward cost ~570 us against ~70 us for ReLU on a
    128x32x40 batch, and a stride-2 conv computes half the outputs of a stride-1 one. The global max makes the net
    length-agnostic, so progressive resizing can feed it shorter signals. Input (N, C, L) is viewed as (N, C, 1, L)
    for the 2-D kernels (see `_stage`), so `channels_last` applies when autotune measures it faster.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: tuple[int, ...] = (32, 48, 64),
                 strides: tuple[int, ...] = ()) -> None:
        super().__init__()
        strides = strides or tuple(2 if i < 2 else 1 for i in range(len(channels)))
        stages, c_in = [], in_channels
        for i, (width, stride) in enumerate(zip(channels, strides)):
            stages.append(_stage(c_in, width, 5 if i == 0 else 3, stride))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = GlobalMaxHead(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(x.unsqueeze(2)))


def fastnet1d(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (),
              strides: tuple[int, ...] = ()) -> nn.Module:
    """Our fast 1-D net; `channels` gives one width per stage (any number >= 1), default (32, 48, 64); `strides` one
    stride per stage, default 2, 2, then 1."""
    require_dims("fastnet1d", input_shape, 1)
    ch = widths("fastnet1d", channels, (32, 48, 64))
    if strides and len(strides) != len(ch):
        raise ConfigError(f"config key model.strides: {len(strides)} strides for {len(ch)} stages {ch}")
    return FastNet1d(input_shape[0], num_classes, ch, tuple(strides))


def tiny1d(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = ()) -> nn.Module:
    """A test model: one Conv1d(C, 8, 3, stride 2, padding 1) + BN + ReLU, global max, linear. Microseconds a step."""
    require_dims("tiny1d", input_shape, 1)
    (width,) = widths("tiny1d", channels, (8,), exactly=1)
    conv = nn.Sequential(nn.Conv1d(input_shape[0], width, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm1d(width), nn.ReLU(inplace=True))
    return nn.Sequential(conv, GlobalMaxHead(width, num_classes))
