"""A training process for the preemption tests and benchmarks/preempt_soak.py.

    python tests/preempt_child.py RUN_DIR TRACE [--slow-writes SECONDS] [--steps-per-checkpoint K]

Trains a small MNIST-1D run with every stateful technique on (EMA, augmentation, label smoothing, one-cycle) and
checkpoints every K steps. It appends to TRACE, unbuffered, one line per step as the batch is taken:
`<step> <comma-separated sample indices>` (indices recovered from the batch contents), and around each checkpoint
write `W+ <step>` / `W- <step>`; each message the run logs as `L <message>`. `--slow-writes` sleeps inside each write
(after the tensors file, before the manifest) to stand for a slow disk, so a test can kill the process in the middle of
one. Exit status: 0 done, 75 stopped by a signal after checkpointing (quicktrain's convention).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import quicktrain.checkpoint as ckpt
from quicktrain import apply_overrides, load_recipe, train
from quicktrain.data.batches import DeviceBatches
from quicktrain.errors import Preempted

OVERRIDES = {
    "data.mnist1d.num_samples": 1000, "model.name": "tiny1d", "model.channels": (), "train.batch_size": 32,
    "train.epochs": 8.0, "train.target": 0.0, "train.eval_every": 1.0, "train.eval_from": 0.0, "methods.ema": 0.9,
    "methods.label_smoothing": 0.1, "methods.tta": True, "system.precision": "fp32", "system.channels_last": "off",
    "checkpoint.every_seconds": 0.0, "checkpoint.keep": 2,
    "adapt.mode": "off",  # the recipe's constants on a smaller net: a fixed number of steps to kill and resume
}

DIGITS = {"data.name": "digits", "data.augment": "crop"}  # a 2-D net, where channels_last applies
FULL = {"data.mnist1d.num_samples": 5000, "model.name": "fastnet1d", "model.channels": (32, 48, 64),
        "train.batch_size": 64, "train.epochs": 6.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("trace")
    ap.add_argument("--slow-writes", type=float, default=0.0)
    ap.add_argument("--steps-per-checkpoint", type=int, default=3)
    ap.add_argument("--precision", default="fp32", help="system.precision (forced, so a test names what it covers)")
    ap.add_argument("--channels-last", default="off", help="system.channels_last")
    ap.add_argument("--compile", default="off", help="system.compile")
    ap.add_argument("--model", default="", help="model.name instead of the default (tiny2d: on digits, 2-D convs)")
    ap.add_argument("--full", action="store_true", help="the paper's MNIST-1D (4,000 training examples) and the fast "
                    "recipe's net at batch 64 for 6 epochs (375 steps), instead of a 1,000-example draw and a tiny net")
    args = ap.parse_args()
    overrides = {**OVERRIDES, "checkpoint.every_steps": args.steps_per_checkpoint}
    if args.full:
        overrides |= FULL
    overrides |= {"system.precision": args.precision, "system.channels_last": args.channels_last,
                  "system.compile": args.compile}
    if args.model:
        overrides |= {"model.name": args.model, **(DIGITS if args.model.endswith("2d") else {})}
    cfg = apply_overrides(load_recipe("mnist1d"), overrides)
    fd = os.open(args.trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    step = [0]
    index: dict[bytes, int] = {}

    original_next = DeviceBatches.next

    def traced_next(self: DeviceBatches, batch_size: int):  # type: ignore[no-untyped-def]
        if not index:
            index.update({row.numpy().tobytes(): i for i, row in enumerate(self.x)})
            assert len(index) == self.n, "training examples must be distinct to trace them"
        x, y = original_next(self, batch_size)
        step[0] += 1
        ids = ",".join(str(index[row.numpy().tobytes()]) for row in x)
        os.write(fd, f"{step[0]} {ids}\n".encode())
        return x, y

    original_write = ckpt._write_file

    def slow_write(directory, name, data):  # type: ignore[no-untyped-def]
        out = original_write(directory, name, data)
        if name == ckpt.TENSORS and args.slow_writes:
            time.sleep(args.slow_writes)
        return out

    original_checkpoint = ckpt.write_checkpoint

    def marked_checkpoint(root, at, tensors, meta, keep=2):  # type: ignore[no-untyped-def]
        os.write(fd, f"W+ {at}\n".encode())
        path = original_checkpoint(root, at, tensors, meta, keep)
        os.write(fd, f"W- {at}\n".encode())
        return path

    def on_log(message: str) -> None:
        os.write(fd, f"L {message}\n".encode())
        if message.startswith("resumed from"):
            step[0] = int(message.split(" at step ")[1].split()[0])
            os.write(fd, f"R {step[0]}\n".encode())

    DeviceBatches.next = traced_next  # type: ignore[method-assign]
    ckpt._write_file = slow_write  # type: ignore[assignment]
    ckpt.write_checkpoint = marked_checkpoint  # type: ignore[assignment]
    import quicktrain.rundir as rundir

    rundir.write_checkpoint = marked_checkpoint  # type: ignore[assignment]
    os.write(fd, f"P {os.getpid()}\n".encode())
    try:
        train(cfg, run_dir=args.run_dir, progress=False, log=on_log)
    except Preempted:
        return 75
    os.write(fd, b"D\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
