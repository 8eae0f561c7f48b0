"""Where a small GPT's CPU step goes: the step time with each modern toggle off in turn, Muon vs AdamW, and the two
CPU attention kernels (flash vs math) in fp32 and bf16, and the two hand-fused pieces of the step against what they
replace: ReLU^2 as one autograd function vs relu().square() (fwd + bwd on the MLP hidden of one step), and Muon's
Newton-Schulz batched over same-shaped matrices (quicktrain.muon.muon_step) vs torch.optim.Muon's own step.

    python benchmarks/lm_step_cost.py [--batch 16] [--context 64] [--width 128] [--threads 1] [--repeats 3]

Steps are the loop's train_step (forward, loss, backward, optimizer), timed after warm-up, variants interleaved,
median of `--repeats` blocks of 10 steps. Attention: fwd + bwd of F.scaled_dot_product_attention (causal) on
(batch, heads, context, width/heads) tensors under each torch.nn.attention.SDPBackend.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from quicktrain.measure import device_name
from quicktrain.models.gpt import gpt
from quicktrain.muon import MuonAdamW, muon_step
from quicktrain.precision import Precision
from quicktrain.step import train_step
from quicktrain.tasks import next_token_loss

MODERN = {"rotary": True, "qk_norm": True, "relu2": True, "tied_head": False, "zero_init": True}
VARIANTS = {"modern": {}, "no rotary": {"rotary": False}, "no QK-norm": {"qk_norm": False},
            "no ReLU^2": {"relu2": False}, "tied head": {"tied_head": True},
            "nanoGPT blocks": {"rotary": False, "qk_norm": False, "relu2": False, "tied_head": True,
                               "zero_init": False}}


def _ms(fn, n: int = 10) -> float:  # type: ignore[no-untyped-def]
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def step_costs(batch: int, context: int, width: int, repeats: int) -> dict[str, float]:
    x, y = torch.randint(0, 256, (batch, context)), torch.randint(0, 256, (batch, context))
    prec, out = Precision("fp32", torch.device("cpu")), {}
    runs = {}
    for name, change in VARIANTS.items():
        for opt in ("adamw", "muon"):
            model = gpt(256, context, 4, 4, width, **{**MODERN, **change})
            o = MuonAdamW(model, 1e-3, 0.0) if opt == "muon" else torch.optim.AdamW(model.parameters(), 1e-3,
                                                                                     fused=True)
            runs[f"{name}, {opt}"] = (model, o)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, (model, o) in runs.items():
            times[k].append(_ms(lambda: train_step(model, o, prec, next_token_loss, x, y).item()))
    out = {k: statistics.median(v) for k, v in times.items()}
    return out


def attention_costs(batch: int, context: int, width: int) -> dict[str, float]:
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(batch, 4, context, width // 4, dtype=dtype, requires_grad=True) for _ in range(3))
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
            with sdpa_kernel(backend):
                out[f"{str(dtype).split('.')[-1]} {backend.name.lower()}"] = _ms(
                    lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward())
    return out


def fused_costs(batch: int, context: int, width: int, repeats: int) -> dict[str, float]:
    from quicktrain.models.gpt import ReLU2

    h = torch.randn(batch * context, 4 * width, requires_grad=True)
    fused, plain = ReLU2(), (lambda t: F.relu(t).square())
    model = gpt(256, context, 4, 4, width, **{**MODERN, "zero_init": False})
    opt = MuonAdamW(model, 1e-3, 0.0)
    muon = opt._muon  # the Muon groups only: the AdamW part of the step is the same either way
    assert muon is not None
    x = torch.randint(0, 256, (batch, context + 1))
    F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()  # gradients to step on
    times: dict[str, list[float]] = {k: [] for k in ("relu2 fused", "relu2 autograd", "muon batched",
                                                      "muon torch")}
    for _ in range(repeats):  # interleaved
        times["relu2 fused"].append(_ms(lambda: fused(h).sum().backward()))
        times["relu2 autograd"].append(_ms(lambda: plain(h).sum().backward()))
        times["muon batched"].append(_ms(lambda: [muon_step(g, opt.state) for g in muon.param_groups]))
        times["muon torch"].append(_ms(muon.step))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {"benchmark": "lm_step_cost", "device": device_name(torch.device("cpu")), "torch": torch.__version__,
              "batch": args.batch, "context": args.context, "width": args.width,
              "step_ms_fp32": step_costs(args.batch, args.context, args.width, args.repeats),
              "attention_fwd_bwd_ms": attention_costs(args.batch * 2, args.context, args.width),
              "fused_ms": fused_costs(args.batch, args.context, args.width, args.repeats)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
