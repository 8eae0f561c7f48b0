"""Batch norm over the global batch under data parallel, on any device (gloo on CPU included).

Why: with DistributedDataParallel each rank normalises its own 1/N of the batch, so N ranks at a global batch B train
a different model from one process at B (a "ghost batch" of B/N, Hoffer et al. 2017). torch's `nn.SyncBatchNorm`
fixes that on GPUs only: on CPU it raises "SyncBatchNorm expected input tensor to be on GPU" (torch 2.13). This
module's `SyncBatchNorm` works wherever `torch.distributed` does: each rank sums x and x^2 per channel, one
all-reduce of [sum, sum of squares, count] gives the global mean and variance, and the all-reduce is the
differentiable one (a sum in forward and in backward), so autograd carries every rank's loss back
through the shared statistics exactly as torch's CUDA kernel does. Running statistics are updated with the global
mean and unbiased variance, identical on every rank (so DDP need not broadcast them).

Cost: one all-reduce of 2C+1 numbers per BN layer per training forward (latency-bound on gloo); evaluation (eval
mode) does no communication. Numerics: the variance is E[x^2] - E[x]^2 accumulated in float64 from float32 sums,
not torch's Welford pass, so it equals one process's BatchNorm to rounding (tests/test_dist.py, allclose).

`convert_sync_bn(model)` swaps every BatchNorm1d/2d/3d in place for this class, reusing the same Parameter and
buffer objects (an optimizer built before still holds them; state_dict keys are unchanged); `local_copy(model)` is a
deep copy with plain BatchNorm back, for work one rank does alone (the LR finder's sweep).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["SyncBatchNorm", "convert_sync_bn", "local_copy"]

_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across the default process group (any
    input rank >= 2: (N, C), (N, C, L), (N, C, H, W), ...). Outside a process group it is plain batch norm."""

    plain: type[nn.Module] = nn.BatchNorm1d  # what local_copy turns it back into

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x: Tensor) -> Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        n = x.numel() // x.shape[1]
        stats = torch.cat([x.sum(dims).double(), (x * x).sum(dims).double(), x.new_full((1,), n, dtype=torch.float64)])
        stats = _AllReduce.apply(stats)  # differentiable: backward all-reduces the gradient of every rank's loss
        c = x.shape[1]
        count = stats[-1]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running(mean.detach(), var.detach(), float(count.detach()))
        shape = [1, c] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(x.dtype).view(shape)
        out = (x - mean.to(x.dtype).view(shape)) * scale
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: float) -> None:
        assert self.num_batches_tracked is not None and self.running_mean is not None
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / max(count - 1.0, 1.0))
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)


class _AllReduce(torch.autograd.Function):
    """Sum over the ranks, forward and backward: rank r's loss depends on every rank's statistics, so the
    gradient reaching a rank's inputs is the sum of every rank's gradient with respect to the shared sums."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def _swap(module: nn.Module, make: type[nn.Module], keep: type[nn.Module] | None) -> nn.Module:
    """A module of class `make` sharing `module`'s parameters and buffers (the same objects)."""
    twin = make.__new__(make)
    nn.Module.__init__(twin)
    for key in ("num_features", "eps", "momentum", "affine", "track_running_stats", "training"):
        setattr(twin, key, getattr(module, key))
    for name, p in module._parameters.items():
        twin._parameters[name] = p
    for name, b in module._buffers.items():
        twin._buffers[name] = b
    if keep is not None:
        twin.plain = keep  # type: ignore[assignment]
    return twin


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in `model` (the model itself included) by SyncBatchNorm, in place where
    possible; returns the model (a new object only when `model` itself is a BatchNorm)."""
    if isinstance(model, _PLAIN):
        return _swap(model, SyncBatchNorm, type(model))
    for name, child in model.named_children():
        if isinstance(child, _PLAIN):
            setattr(model, name, _swap(child, SyncBatchNorm, type(child)))
        else:
            convert_sync_bn(child)
    return model


def _unsync(model: nn.Module) -> nn.Module:
    if isinstance(model, SyncBatchNorm):
        return _swap(model, model.plain, None)
    for name, child in model.named_children():
        setattr(model, name, _unsync(child))
    return model


def local_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with plain BatchNorm layers: it trains on one rank without communicating."""
    return _unsync(copy.deepcopy(model))
