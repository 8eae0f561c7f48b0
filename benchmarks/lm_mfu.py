"""FLOP utilisation of a GPT training step: model FLOPs (attention included) over wall time over the measured peak
matmul rate of the precision used, on this machine.

    python benchmarks/lm_mfu.py [--width 512] [--layers 4] [--heads 8] [--context 256] [--batch 16]
                                [--precision fp32] [--steps 30] [--threads 0] [--compile off]

Model FLOPs per step are counted two ways and both reported: torch's FlopCounterMode on the real step
(quicktrain.measure.count_train_flops: matmuls, convolutions and attention kernels, what the loop reports) and the
PaLM formula 6N + 12*L*d*T per token (GPT.flops_per_token, nanoGPT's estimate_mfu). The peak is
quicktrain.measure.peak_flops (a large matmul of that dtype, cached per machine). Steps are timed after warm-up, on a
batch from the built-in corpus, the optimizer included (the step the loop runs: quicktrain.step.train_step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from quicktrain import measure
from quicktrain.config import DataConfig
from quicktrain.data.lm import load_lm
from quicktrain.models.gpt import gpt
from quicktrain.muon import MuonAdamW
from quicktrain.precision import Precision
from quicktrain.step import train_step
from quicktrain.tasks import next_token_loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--optim", default="adamw", choices=("adamw", "muon"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", default="off", choices=("on", "off"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    splits = load_lm(DataConfig(name="stdlib", context=args.context, eval_tokens=args.context * 4),
                     sample=args.batch)
    x, y = splits.sample.x[: args.batch], splits.sample.y[: args.batch]
    model = gpt(splits.vocab_size, args.context, args.layers, args.heads, args.width)
    opt = MuonAdamW(model, lr=1e-3, weight_decay=0.0) if args.optim == "muon" else \
        torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    prec = Precision(args.precision, device)
    net = torch.compile(model) if args.compile == "on" else model
    counted = measure.count_train_flops(model, x, y, next_token_loss)
    formula = model.flops_per_token(args.context) * x.numel()
    for _ in range(3):  # warm-up (and compilation)
        train_step(net, opt, prec, next_token_loss, x, y)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        train_step(net, opt, prec, next_token_loss, x, y).item()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    peak = measure.peak_flops(device, prec.dtype)
    report = {
        "benchmark": "lm_mfu", "device": measure.device_name(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "model": {"layers": args.layers, "heads": args.heads, "width": args.width,
                                                       "context": args.context, "params": model.num_params()},
        "batch": args.batch, "precision": args.precision, "optim": args.optim, "compile": args.compile,
        "step_seconds_median": step, "step_seconds_min": min(times), "step_seconds_max": max(times),
        "flops_counted": counted, "flops_palm": formula, "peak_flops": peak,
        "mfu_counted": counted / step / peak, "mfu_palm": formula / step / peak,
        "tokens_per_second": x.numel() / step,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
