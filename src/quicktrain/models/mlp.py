"""A multilayer perceptron for inputs of any fixed shape (flattened): the baseline every conv net should beat."""

from __future__ import annotations

import math

from torch import nn

from quicktrain.models._checks import widths


def mlp(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = ()) -> nn.Module:
    """flatten -> Linear(d, h) -> ReLU -> Linear(h, h) -> ReLU -> Linear(h, classes); `channels` = (h,), default (128,).
    PyTorch's default init. Not size-agnostic: d is fixed by input_shape, so progressive resizing cannot be used."""
    (hidden,) = widths("mlp", channels, (128,), exactly=1)
    d = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
