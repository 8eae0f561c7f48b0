"""Muon for the hidden 2-D weights, AdamW for everything else, behind one torch optimizer object.

Why: modded-nanogpt (Keller Jordan et al.) set its GPT speedrun records with Muon (momentum, then the update
orthogonalised by a Newton-Schulz iteration; kellerjordan.github.io/posts/muon) on the transformer blocks' matrices
and Adam on the embedding, the head and the scalar gains, which Muon is not meant for. The training loop knows one
optimizer: `MuonAdamW` is a `torch.optim.Optimizer` whose `param_groups`, `state`, `step`, `zero_grad` and
`state_dict`/`load_state_dict` cover both inner optimizers (torch.optim.Muon and torch.optim.AdamW), which share its
group dicts and its one `state` mapping, so a resumed run continues bitwise (tests/test_muon.py).

The split (`muon_split`): Muon gets every trainable 2-D parameter except nn.Embedding weights (token and position
tables) and the weight of the last nn.Linear registered in the model (taken to be the output layer, e.g. the LM head;
a head tied to the embedding is an embedding weight). Everything else (the embeddings, the head, 1-D gains and biases,
conv kernels of 3+ dims) goes to AdamW. For `quicktrain.models.gpt.GPT` that is exactly the q, k, v, out and MLP
matrices of the blocks. A model whose output layer is not its last registered Linear should not rely on the rule.

One learning rate drives both: the Muon groups use torch's adjust_lr_fn="match_rms_adamw" (Moonshot, Liu et al.
2025, "Muon is Scalable for LLM Training"): the orthogonalised update is scaled by 0.2*sqrt(max(A, B)) so its RMS
(about 0.2) matches a typical AdamW update's, and AdamW's learning rate and weight decay carry over; hence
`muon_lr_scale=1.0` by default. (torch's "original" is Keller Jordan's sqrt(max(1, A/B)) scale, which wants a
Muon rate tens of times Adam's: modded-nanogpt uses 0.05 for Muon next to 0.008 for its head.)
Each group has an `lr_scale`; the loop sets group["lr"] = lr * group["lr_scale"]. Muon's `lr_scale` is
`muon_lr_scale`, AdamW's is 1, except `embed_lr_scale` for the embeddings and `head_lr_scale` for the output layer.

Weight decay: decoupled in both (torch's Muon decays p <- p * (1 - lr * wd), as AdamW), on every 2-D parameter
including the embeddings and the head (nanoGPT's >= 2-D rule), none on 1-D ones when `no_decay_1d`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim._muon import _adjust_lr

__all__ = ["MuonAdamW", "muon_split", "muon_step"]

ADJUST_LR_FN = "match_rms_adamw"


def _last_linear(model: nn.Module) -> nn.Linear | None:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return last


def muon_split(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """(hidden 2-D weights for Muon, every other trainable parameter for AdamW), each in `model.parameters()` order
    and a shared tensor once. The rule is in the module docstring."""
    excluded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = _last_linear(model)
    if head is not None:
        excluded.add(id(head.weight))
    hidden, other = [], []
    for p in model.parameters():
        if p.requires_grad:
            (hidden if p.ndim == 2 and id(p) not in excluded else other).append(p)
    assert all(p.ndim == 2 for p in hidden), "torch.optim.Muon takes 2-D parameters only"
    return hidden, other


def _adamw_scales(model: nn.Module, embed: float, head: float) -> Callable[[Tensor], float]:
    """p -> its AdamW LR scale: `embed` for nn.Embedding weights (a tied head included), `head` for the output
    layer's weight (`_last_linear`), 1 otherwise. modded-nanogpt's early records gave their embeddings Adam at 0.6
    and their head 0.008; on stdlib_lm (bytes, raw embedding, zero-initialised head) the measurement went the other
    way: embeddings at 10x the peak LR were worse, the head at 4x better (docs/results/lm/selection2.jsonl)."""
    embeds = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    last = _last_linear(model)
    head_id = id(last.weight) if last is not None and id(last.weight) not in embeds else None
    return lambda p: embed if id(p) in embeds else head if id(p) == head_id else 1.0


def _orthogonalise(x: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> Tensor:
    """torch.optim.Muon's Newton-Schulz iteration (bf16, Frobenius-normalised) on a stack (n, rows, cols) of
    matrices with rows <= cols at once, as modded-nanogpt batches its banks of same-shaped weights."""
    a, b, c = coefficients
    x = x.bfloat16()
    x = x / x.flatten(1).norm(dim=1).clamp(min=eps)[:, None, None]
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


@torch.no_grad()
def muon_step(group: dict[str, Any], state: Any) -> None:
    """One torch.optim.Muon step of `group` (Nesterov momentum, the Newton-Schulz orthogonalisation, decoupled decay,
    the adjusted LR), with the orthogonalisation batched over matrices of one shape (a tall one transposed): 2 chains
    of 5 iterations instead of one per matrix (24 for a 4-layer GPT): 13.5 -> 7.0 ms a step for the 4-layer,
    width-128 GPT (`python benchmarks/lm_step_cost.py`, 1 thread, Xeon, docs/results/lm/step_cost_20261206.json); the
    same arithmetic as torch's, so the same result up to the batched kernels' rounding
    (tests/test_muon.py)."""
    lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
    updates: dict[tuple[int, int], list[tuple[Tensor, Tensor]]] = {}
    for p in group["params"]:
        if p.grad is None:
            continue
        st = state[p]
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
        buf = st["momentum_buffer"]
        buf.lerp_(p.grad, 1 - momentum)
        update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
        wide = update if update.size(0) <= update.size(1) else update.T
        updates.setdefault(tuple(wide.shape), []).append((p, wide))
    for pairs in updates.values():
        ortho = _orthogonalise(torch.stack([u for _, u in pairs]), group["ns_coefficients"], group["ns_steps"],
                               group["eps"])
        for (p, _), o in zip(pairs, ortho):
            p.mul_(1 - lr * wd)
            p.add_(o if p.size(0) <= p.size(1) else o.T,
                   alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))


def _fused_ok(params: list[Tensor]) -> bool:
    """Fused AdamW exists for floating-point parameters on CPU and CUDA."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer: torch.optim.Muon on `muon_split(model)[0]`, fused AdamW on the rest (see the module docstring).

    Groups, in order: Muon (if any hidden weight), AdamW decayed (2-D and up, or all with `no_decay_1d=False`),
    AdamW undecayed (1-D). Each has "lr", "lr_scale", "weight_decay" and "muon" (True for the Muon group).
    `embed_lr_scale` / `head_lr_scale` other than 1 split an AdamW group by scale (embeddings, head, the rest)."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95),
                 muon_lr_scale: float = 1.0, muon_momentum: float = 0.95, no_decay_1d: bool = True, *,
                 eps: float = 1e-8, ns_steps: int = 5, embed_lr_scale: float = 1.0,
                 head_lr_scale: float = 1.0) -> None:
        hidden, other = muon_split(model)
        if not hidden and not other:
            raise ValueError("MuonAdamW: the model has no trainable parameters")
        muon_groups = [{"params": hidden, "lr": lr * muon_lr_scale, "lr_scale": muon_lr_scale,
                        "weight_decay": weight_decay, "muon": True}] if hidden else []
        decay = [p for p in other if p.ndim >= 2 or not no_decay_1d]
        no_decay = [p for p in other if p.ndim < 2 and no_decay_1d]
        scale = _adamw_scales(model, embed_lr_scale, head_lr_scale)
        adamw_groups = [{"params": [p for p in ps if scale(p) == s], "lr": lr * s, "lr_scale": s,
                         "weight_decay": wd, "muon": False}
                        for ps, wd in ((decay, weight_decay), (no_decay, 0.0)) if ps
                        for s in dict.fromkeys(scale(p) for p in ps)]  # one group per scale, in parameter order
        # the inner optimizers fill in their own defaults (nesterov, ns_steps, fused, ...) in these same dicts
        self._muon = torch.optim.Muon(muon_groups, lr=lr * muon_lr_scale, weight_decay=weight_decay,
                                      momentum=muon_momentum, nesterov=True, ns_steps=ns_steps,
                                      adjust_lr_fn=ADJUST_LR_FN) if muon_groups else None
        self._adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                        fused=_fused_ok(other)) if adamw_groups else None
        super().__init__(muon_groups + adamw_groups, {"lr": lr, "lr_scale": 1.0, "weight_decay": weight_decay})
        self._sync()

    def _sync(self) -> None:
        """Point the inner optimizers at this one's group dicts and state (load_state_dict replaces both)."""
        for inner, is_muon in ((self._muon, True), (self._adamw, False)):
            if inner is not None:
                inner.param_groups = [g for g in self.param_groups if bool(g["muon"]) == is_muon]
                inner.state = self.state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync()  # cheap, and robust to anything that reassigned param_groups or state
        if self._muon is not None:  # torch.optim.Muon's step, its orthogonalisation batched by shape
            for group in self._muon.param_groups:
                muon_step(group, self.state)
        if self._adamw is not None:
            self._adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._sync()

    def __getstate__(self) -> dict[str, Any]:  # pickling and deepcopy keep the inner optimizers
        return {**super().__getstate__(), "_muon": self._muon, "_adamw": self._adamw}

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickling, and the base load_state_dict
        super().__setstate__(state)
        if "_muon" in self.__dict__:
            self._sync()
