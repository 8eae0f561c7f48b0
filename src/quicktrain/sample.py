"""Autoregressive sampling from a language model: the eyeball check that a trained GPT learned its corpus.

Why here: a validation loss says how well a model predicts; a sample shows what it learned (nanoGPT's sample.py is
the same loop: crop to the context, temperature, optional top-k, multinomial draw). Given a `torch.Generator` the
draw is deterministic, so a sample can go in a report and be reproduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quicktrain.models.contract import logits_of

__all__ = ["generate"]


def _context_of(model: nn.Module) -> int | None:
    """`model.context`, looked up through the model contract's LogitsAdapter (`.wrapped`) too."""
    for candidate in (model, getattr(model, "wrapped", None)):
        context = getattr(candidate, "context", None)
        if isinstance(context, int) and context > 0:
            return context
    return None


def _next_token(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """(B, vocab) last-position logits -> (B, 1) token ids; temperature 0 is greedy (argmax)."""
    logits = logits.float()
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def _check(prompt_ids: Tensor, max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    if prompt_ids.ndim != 2 or prompt_ids.size(1) < 1 or prompt_ids.dtype != torch.int64:
        raise ValueError(f"generate: prompt_ids must be int64 (B, T0) with T0 >= 1, got {prompt_ids.dtype} "
                         f"{tuple(prompt_ids.shape)}")
    if max_new_tokens < 0 or temperature < 0.0 or (top_k is not None and top_k < 1):
        raise ValueError("generate: needs max_new_tokens >= 0, temperature >= 0 and top_k >= 1 (or None)")


@torch.no_grad()
def generate(model: nn.Module, prompt_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """prompt_ids (B, T0) int64 followed by `max_new_tokens` sampled ids: (B, T0 + max_new_tokens).

    The model runs in eval mode (every submodule's mode is restored after) on at most its last `model.context`
    tokens (a LogitsAdapter's wrapped model's counts; all tokens if there is none); its output may be any the model
    contract accepts (a tensor, a (logits, loss) tuple, ...), logits (B, T, vocab). `temperature` divides the logits
    (0: greedy), `top_k` keeps the k likeliest tokens. The generator must be on the model's device; None uses
    torch's global RNG."""
    _check(prompt_ids, max_new_tokens, temperature, top_k)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    context = _context_of(model)
    idx = prompt_ids
    try:
        for _ in range(max_new_tokens):
            window = idx if context is None else idx[:, -context:]
            logits = logits_of(model(window))
            if logits is None or logits.ndim != 3:
                raise ValueError("generate: the model must return logits (B, T, vocab)")
            idx = torch.cat((idx, _next_token(logits[:, -1, :], temperature, top_k, generator)), dim=1)
    finally:
        for module, training in modes:
            module.training = training
    return idx
