"""What torch.compile costs and saves on a recipe's model here, the measurement behind `system.compile=auto`.

    python benchmarks/compile_gain.py [recipe] [--steps 200]

Times eager steps, then compiles a copy (first two steps: compilation) and times the same number of compiled steps;
reports compile seconds, per-step saving, and the run length (steps) at which compiling would pay for itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from quicktrain import load_recipe
from quicktrain.autotune import time_steps
from quicktrain.data import load_data
from quicktrain.methods.label_smoothing import loss_fn
from quicktrain.models import build_model
from quicktrain.optim import make_optimizer
from quicktrain.precision import Precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", nargs="?", default="mnist1d")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    cfg = load_recipe(args.recipe)
    splits = load_data(cfg.data)
    device = torch.device("cpu")
    model = build_model(cfg.model, splits.input_shape, splits.num_classes)
    x, y = splits.train.x[: cfg.train.batch_size], splits.train.y[: cfg.train.batch_size]
    lossf, prec = loss_fn(cfg.methods.label_smoothing), Precision("fp32", device)
    eager = copy.deepcopy(model)
    eager_step = time_steps(eager, make_optimizer(eager, cfg.optim, device), x, y, lossf, prec, steps=args.steps)
    compiled = torch.compile(copy.deepcopy(model))
    opt = make_optimizer(compiled, cfg.optim, device)
    t0 = time.perf_counter()
    time_steps(compiled, opt, x, y, lossf, prec, steps=1, warmup=1)
    compile_seconds = time.perf_counter() - t0
    compiled_step = time_steps(compiled, opt, x, y, lossf, prec, steps=args.steps)
    saving = eager_step - compiled_step
    out = {"benchmark": "compile_gain", "recipe": args.recipe, "batch": cfg.train.batch_size, "precision": "fp32",
           "eager_ms_per_step": 1e3 * eager_step, "compiled_ms_per_step": 1e3 * compiled_step,
           "saving_pct": 100 * saving / eager_step, "compile_seconds": compile_seconds,
           "break_even_steps": compile_seconds / saving if saving > 0 else None, "torch": torch.__version__}
    print(f"eager {1e3 * eager_step:.2f} ms/step, compiled {1e3 * compiled_step:.2f} ms/step "
          f"({out['saving_pct']:+.1f}%), compile {compile_seconds:.1f} s, break-even after "
          f"{out['break_even_steps'] or float('inf'):.0f} steps")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
