"""Batch norm over the global batch under data parallel, on any device (gloo on CPU included).

Why: with DistributedDataParallel each rank normalises its own 1/N of the batch, so N ranks at a global batch B train
a different model from one process at B (a "ghost batch" of B/N, Hoffer et al. 2017). torch's `nn.SyncBatchNorm`
fixes that on GPUs only: on CPU it raises "SyncBatchNorm expected input tensor to be on GPU" (torch 2.13). This
module's `SyncBatchNorm` works wherever `torch.distributed` does: each rank sums x and x^2 per channel, one
all-reduce of [sum, sum of squares, count] gives the global mean and variance, and the all-reduce is the
differentiable one (a sum in forward and in backward), so autograd carries every rank's loss back
through the shared statistics exactly as torch's CUDA kernel does. Running statistics are updated with the global
mean and unbiased variance, identical on every rank (so DDP need not broadcast them).

Cost: one all-reduce of 2C+1 numbers per BN layer per training forward and one of 2C in backward (latency-bound
on gloo); evaluation (eval mode) does no communication; the arithmetic is native kernels (`_SyncBN`). Numerics: each
rank's mean and variance come from `var_mean` (float32), combined across ranks in float64, so the result equals one
process's BatchNorm to rounding (tests/test_dist.py, allclose).

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
        out, mean, var, count = _SyncBN.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running(mean, var, count)
        return out

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        assert self.num_batches_tracked is not None and self.running_mean is not None
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (count / (count - 1.0).clamp_min(1.0)).to(var.dtype)  # a tensor: no host sync on CUDA
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)


class _SyncBN(torch.autograd.Function):
    """Batch norm over every rank's examples, in native kernels: one fused pass for the local statistics
    (`var_mean`), one all-reduce of [n * mean, n * E[x^2], n] in float64, and the normalisation by `batch_norm` in
    eval mode with the global statistics (one fused pass). Backward, as torch's CUDA SyncBatchNorm: eval-mode
    `native_batch_norm_backward` gives this rank's sum(dy) and sum(dy * xhat) (the weight and bias gradients, which
    DDP averages like any other), one all-reduce of both turns them into the global means, and the input gradient
    dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) takes two fused passes. Rank r's loss depends on
    every rank's statistics, so each rank's input gradient is that of the sum of all ranks' losses, the same sum
    DDP divides by the world size for the parameters. Native kernels instead of plain ops (x * x, (x - mean) *
    scale, ..., each a pass over the activations and each saved for autograd) keep no intermediates for autograd.
    The cost that remains is the collectives: a 2-rank resnet2d step takes 116 ms synced against 58 ms per rank
    (`python benchmarks/ddp_cpu.py latency`, 2-vCPU Xeon, gloo: one small all-reduce 0.5-1.6 ms, 18 a step here;
    hence system.sync_bn)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x if x.dtype in (torch.float32, torch.float64) else x.float(), dims,
                                   correction=0)
        n = x.numel() // c
        m64 = mean.double()
        stats = torch.cat([m64 * n, (var.double() + m64 * m64) * n, m64.new_full((1,), float(n))])
        dist.all_reduce(stats)
        count = stats[-1:]  # kept on the device: a float() here would sync the host once per layer on CUDA
        gmean = stats[:c] / count
        gvar = (stats[c:2 * c] / count - gmean * gmean).clamp_min(0.0)
        mean32, var32 = gmean.float(), gvar.float()
        w = weight if weight is not None else torch.ones(c, dtype=torch.float32, device=x.device)
        out = torch.batch_norm(x, w, bias, mean32, var32, False, 0.0, eps, False)
        ctx.save_for_backward(x, w, mean32, var32)
        ctx.eps, ctx.count, ctx.affine = eps, count.float(), weight is not None
        ctx.mark_non_differentiable(mean32, var32, count)
        return out, mean32, var32, count

    @staticmethod
    def backward(ctx: Any, gy: Tensor, *_: Any) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, w, mean, var = ctx.saved_tensors
        # eval-mode backward with the global statistics: grad_weight = sum(dy * xhat), grad_bias = sum(dy), local
        _, g_w, g_b = torch.ops.aten.native_batch_norm_backward(gy, x, w, mean, var, None, None, False, ctx.eps,
                                                                [False, True, True])
        gx = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([g_b.float(), g_w.float()])
            dist.all_reduce(sums)
            c = mean.numel()
            mean_dy, mean_dy_xhat = sums[:c] / ctx.count, sums[c:] / ctx.count
            invstd = torch.rsqrt(var + ctx.eps)
            k = w.float() * invstd
            shape = [1, c] + [1] * (x.dim() - 2)
            # dx = k * dy + x * (-k * invstd * mean_dy_xhat) + k * (mean * invstd * mean_dy_xhat - mean_dy)
            a = (-k * invstd * mean_dy_xhat).to(x.dtype).view(shape)
            b = (k * (mean * invstd * mean_dy_xhat - mean_dy)).to(x.dtype).view(shape)
            gx = torch.addcmul(torch.addcmul(b, gy, k.to(x.dtype).view(shape)), x, a)
        return gx, (g_w if ctx.affine and ctx.needs_input_grad[1] else None), \
            (g_b if ctx.needs_input_grad[2] else None), None


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
