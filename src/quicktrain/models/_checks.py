"""Shape and width checks shared by the model builders, so every builder fails with the same one-line ConfigError."""

from __future__ import annotations

from quicktrain.errors import ConfigError

_KIND = {1: "1-D signals (N, C, L)", 2: "2-D images (N, C, H, W)"}


def require_dims(name: str, input_shape: tuple[int, ...], dims: int) -> None:
    """Raise unless `input_shape` (per sample, no batch dimension) has `dims` spatial dimensions."""
    if len(input_shape) != dims + 1:
        raise ConfigError(f"config key model.name: model {name!r} takes {_KIND[dims]}; "
                          f"this data is {tuple(input_shape)}")


def widths(name: str, channels: tuple[int, ...], default: tuple[int, ...],
           exactly: int | None = None) -> tuple[int, ...]:
    """The stage widths to build: `default` for (), else `channels` checked for count (`exactly`, or >= 1) and sign."""
    if not channels:
        return default
    if exactly is not None and len(channels) != exactly:
        raise ConfigError(f"config key model.channels: model {name!r} takes {exactly} width{'s' * (exactly != 1)}, "
                          f"got {len(channels)} {tuple(channels)} (default {default})")
    if any(c <= 0 for c in channels):
        raise ConfigError(f"config key model.channels: widths must be > 0 (got {tuple(channels)})")
    return tuple(channels)


def conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution (torch.nn.Conv1d docs, dilation 1)."""
    return (length + 2 * padding - kernel) // stride + 1
