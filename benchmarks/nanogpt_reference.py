"""nanoGPT's own `train.py`, unchanged, on the files quicktrain wrote: the outside reference for the `nanogpt` recipe.

    python benchmarks/nanogpt_reference.py NANOGPT_DIR [--out docs/results/lm/nanogpt_reference.json] [--seeds 1]

NANOGPT_DIR is a checkout of github.com/karpathy/nanoGPT (its train.py, model.py, configurator.py and
config/train_shakespeare_char.py are used as they are; nothing is patched). The built-in corpus is written by
quicktrain in nanoGPT's layout (train.bin, val.bin, meta.pkl with vocab_size 256) and linked as data/stdlib in a
scratch copy of the checkout, then the README's CPU command runs there with `--dataset=stdlib`:

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
        --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
        --dropout=0.0 --dataset=stdlib --seed... (nanoGPT has no seed flag: it seeds 1337; --seeds > 1 repeats it)

Reported: wall seconds of the process, the sum of nanoGPT's own per-iteration times (its `time XXms` log), and its
val losses at each eval (nanoGPT's estimate: 20 random batches of 12 x 64 tokens of val.bin). quicktrain's L* is its
own validation loss on fixed windows of val.bin's first `data.eval_tokens` tokens: the two estimates are of the same
file but not the same tokens, so they agree only to within nanoGPT's sampling noise (stated in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quicktrain.data.corpus import stdlib_corpus
from quicktrain.measure import cpu_model

FLAGS = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
         "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000",
         "--dropout=0.0", "--dataset=stdlib", "--out_dir=out-stdlib"]
FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")


def run_once(checkout: Path, corpus: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        for name in FILES:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / name, tmp / name)
        (tmp / "data").mkdir()
        (tmp / "data" / "stdlib").symlink_to(corpus)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "train.py", "config/train_shakespeare_char.py", *FLAGS], cwd=tmp,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed:\n{proc.stderr[-2000:]}")
    evals = [(int(s), float(tr), float(va)) for s, tr, va in
             re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", proc.stdout)]
    iter_ms = [float(ms) for ms in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", proc.stdout)]
    return {"wall_seconds": wall, "iter_seconds_sum": sum(iter_ms) / 1e3, "iters": len(iter_ms),
            "evals": evals, "final_val_loss": evals[-1][2] if evals else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    missing = [f for f in FILES if not (args.checkout / f).is_file()]
    if missing:
        raise SystemExit(f"{args.checkout} is not a nanoGPT checkout (missing {', '.join(missing)})")
    corpus = stdlib_corpus()
    import torch

    report = {"benchmark": "nanogpt_reference", "command": " ".join(["python train.py",
              "config/train_shakespeare_char.py", *FLAGS]), "cpu": cpu_model(), "torch": torch.__version__,
              "corpus": str(corpus), "runs": [run_once(args.checkout, corpus) for _ in range(args.seeds)]}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
