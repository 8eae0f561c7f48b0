"""LARS and LAMB: layer-wise adaptive learning rates for large-batch training.

Both scale each parameter tensor's update by a *trust ratio*, ||w|| over the norm of the proposed update, so that
every layer moves by about the same fraction of its own size whatever the scale of its gradient. That is what let
the papers raise the batch size (and the LR with it) without divergence in the first steps.

- `LARS` (You, Gitman & Ginsburg 2017, "Large batch training of convolutional networks"): per tensor,
  local_lr = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps), d = local_lr * (g + weight_decay * w),
  then momentum on d exactly as torch's SGD does it (heavy ball, or Nesterov with `nesterov=True`; no dampening),
  and w <- w - lr * v. Weight decay is L2 inside the trust ratio, as in the paper. With trust_coefficient = 0.001
  (the paper's η) a layer moves by lr * 0.001 of its norm per step, so LARS wants a peak LR hundreds of times larger
  than SGD's (the paper's ResNet-50 runs use LRs of 2 to 30 at 0.001).
- `LAMB` (You et al. 2020, "Large batch optimization for deep learning: training BERT in 76 minutes", Algorithm 2,
  with bias correction): Adam's moments m, v; r = m_hat / (sqrt(v_hat) + eps) + weight_decay * w; the trust ratio is
  phi(||w||) / ||r|| with phi the identity, and the ratio clamped above at `max_trust` (10 by default; None: no
  clamp), since a layer whose weights are large next to its Adam update would otherwise step ||w|| / ||r|| times
  Adam's (the paper allows a bounded phi, min(max(z, gamma_l), gamma_u)); then w <- w - lr * trust * r.
- Guards: when ||w|| or the update's norm (||g||, ||r||) is 0 the trust ratio is 1, so zero-initialised weights and a
  zero gradient give a finite, plain update. Norms are taken in at least float32.
- Each group has `adapt`: True applies the trust ratio; False makes the group plain momentum SGD (LARS, with its
  weight decay as L2 on the gradient) or AdamW (LAMB). Biases and norm gains (every parameter with ndim < 2) are
  excluded from adaptation and from weight decay: `quicktrain.optim.make_optimizer` puts them in a group with
  adapt=False and weight_decay=0 (with `optim.no_decay_1d=false` every parameter is adapted and decayed), as both
  papers' reference implementations do.
- State is the standard Optimizer state (momentum_buffer; step, exp_avg, exp_avg_sq), so `state_dict` /
  `load_state_dict` resume bitwise; parameters without a gradient are skipped; CPU and CUDA alike (no host syncs).

Should you use them? Nado et al. 2021 ("A large batch optimizer reality check: traditional, generic optimizers
suffice across batch sizes") matched LARS's ResNet-50 results and LAMB's BERT results at the same large batch sizes
with well-tuned Nesterov momentum and Adam: the gains came from tuning (warmup, LR, decay) more than from the trust
ratio. So they are here for comparisons and for batch sizes far past what a recipe was tuned for, not as defaults;
no recipe uses them. On: `--optim.name=lars` (with `optim.momentum`, `optim.weight_decay`,
`optim.trust_coefficient` and a peak `optim.lr` on LARS's scale) or `--optim.name=lamb` (with `optim.betas`,
`optim.eps`, `optim.weight_decay`); off: any other `optim.name`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["LAMB", "LARS", "trust_ratio"]


def _norm(t: Tensor) -> Tensor:
    """The 2-norm of a whole tensor, in at least float32 (a bf16 or fp16 norm of many elements is coarse)."""
    return torch.linalg.vector_norm(t, dtype=torch.promote_types(t.dtype, torch.float32))


def trust_ratio(w_norm: Tensor, u_norm: Tensor, ratio: Tensor) -> Tensor:
    """`ratio` where both ||w|| and the update's norm are positive, else 1 (a tensor: no host sync on CUDA)."""
    return torch.where((w_norm > 0) & (u_norm > 0), ratio, torch.ones_like(ratio))


def _params_with_grad(group: dict[str, Any], name: str) -> Iterable[tuple[Tensor, Tensor]]:
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        yield p, p.grad


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling on momentum SGD (module docstring). Group options: lr, momentum, nesterov,
    weight_decay, trust_coefficient, eps, adapt."""

    def __init__(self, params: Any, lr: float, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, trust_coefficient: float = 0.001, eps: float = 1e-9,
                 adapt: bool = True) -> None:
        if lr < 0:
            raise ValueError(f"LARS: invalid lr {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS: invalid momentum {momentum}")
        if nesterov and momentum <= 0:
            raise ValueError("LARS: Nesterov momentum needs momentum > 0")
        if weight_decay < 0 or trust_coefficient <= 0 or eps < 0:
            raise ValueError(f"LARS: invalid weight_decay {weight_decay}, trust_coefficient {trust_coefficient} "
                             f"or eps {eps}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "trust_coefficient": trust_coefficient, "eps": eps, "adapt": adapt}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p, g in _params_with_grad(group, "LARS"):
                d = g.add(p, alpha=wd) if wd else g.clone()
                if group["adapt"]:
                    w_norm, g_norm = _norm(p), _norm(g)
                    local = group["trust_coefficient"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    d.mul_(trust_ratio(w_norm, g_norm, local).to(d.dtype))
                if momentum:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:  # d is a fresh tensor, never changed in place below
                        buf = state["momentum_buffer"] = d
                    else:
                        buf.mul_(momentum).add_(d)
                    d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.add_(d, alpha=-lr)
        return loss


class LAMB(torch.optim.Optimizer):
    """Layer-wise adaptive moments (Adam with a per-tensor trust ratio; module docstring). Group options: lr, betas,
    eps, weight_decay, max_trust (None: no clamp), adapt."""

    def __init__(self, params: Any, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, max_trust: float | None = 10.0, adapt: bool = True) -> None:
        if lr < 0:
            raise ValueError(f"LAMB: invalid lr {lr}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"LAMB: invalid betas {betas}")
        if eps < 0 or weight_decay < 0 or (max_trust is not None and max_trust <= 0):
            raise ValueError(f"LAMB: invalid eps {eps}, weight_decay {weight_decay} or max_trust {max_trust}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "max_trust": max_trust,
                    "adapt": adapt}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (beta1, beta2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
            for p, g in _params_with_grad(group, "LAMB"):
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                # r = m_hat / (sqrt(v_hat) + eps) + wd * w, with the bias corrections as Python floats
                denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
                r = (m / (1 - beta1**t)).div_(denom)
                if wd:
                    r.add_(p, alpha=wd)
                if group["adapt"]:
                    w_norm, r_norm = _norm(p), _norm(r)
                    ratio = w_norm / r_norm
                    if group["max_trust"] is not None:
                        ratio = ratio.clamp(max=group["max_trust"])
                    r.mul_(trust_ratio(w_norm, r_norm, ratio).to(r.dtype))
                p.add_(r, alpha=-group["lr"])
        return loss
