"""Data parallel through PyTorch's own engine: `torchrun --nproc-per-node N -m quicktrain run ...` (one machine) or
`torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m quicktrain run ...`
(several). quicktrain has no launcher of its own: it reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR/PORT) and joins the process group; without it, a run is one process as before.

What a run does under data parallel, and why:
- process group: gloo on CPU, NCCL on CUDA (`system.backend`), with an explicit timeout (`system.dist_timeout`,
  300 s; torch's default is 30 minutes), so a rank whose peer died or hangs fails within it instead of waiting;
- the global batch: `train.batch_size` is the global batch, each rank takes an equal 1/N of it (a batch size that
  N does not divide is a one-line error). Every rank draws the same global batch (the order is a function of the
  seed), applies the same augmentation, then keeps its slice: N ranks then compute exactly what one process would
  (token windows are read rank by rank, only the rank's rows). Batch norm is synced (quicktrain.sync_bn) when
  system.sync_bn says so (auto: below 32 examples per rank), else each rank keeps its own statistics, as DDP does;
- the model is wrapped in DistributedDataParallel (gradients all-reduced in buckets during backward; with
  micro-batches every micro-step but the last runs in `no_sync`, quicktrain.step);
- decisions every rank must take at the same step (a stop signal that reached one rank, a time budget, a non-finite
  loss, the target) come from all-reduced values, so the ranks never disagree and deadlock;
- evaluation is sharded: each rank scores its part of the validation split and the sums are all-reduced;
- rank 0 alone prints, writes the run directory and checkpoints; on resume every rank loads the checkpoint rank 0
  chose, so the run directory must be on a file system every node sees (one machine: any directory).
- choices measured per process (the `auto` precision race, the memory plan, the LR finder) are rank 0's, sent to
  the others, so every rank runs the same program.
Off: run without torchrun. One process per rank: `torchrun` sets OMP_NUM_THREADS=1 unless told otherwise, and
`system.threads` overrides it.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from quicktrain.config import SystemConfig
from quicktrain.errors import ConfigError, UserError

__all__ = ["SINGLE", "Dist", "check_batch", "device_for", "env_world_size", "setup"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size, ranks per node, and the collectives the loop needs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collective tensors live

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        """Machines in the job (each with local_world ranks): what a run's cost multiplies by."""
        return max(1, self.world // max(1, self.local_world))

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true on every rank if it is true on any (one all-reduce; none in one process)."""
        if not self.on:
            return flags
        t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def sum(self, values: Tensor) -> Tensor:
        """`values` summed over the ranks (a new float64 tensor on the input's device)."""
        if not self.on:
            return values
        t = values.detach().to(self.device, torch.float64)
        dist.all_reduce(t)
        return t.to(values.device)

    def share_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (per-rank batch-norm statistics) copied into every rank's `model`, one broadcast per
        dtype: the sharded evaluation then scores exactly the model rank 0 checkpoints and returns. Training is
        unchanged: DDP broadcasts them again at the next forward."""
        if not self.on:
            return
        groups: dict[torch.dtype, list[Tensor]] = {}
        for b in model.buffers():
            groups.setdefault(b.dtype, []).append(b)
        for bufs in groups.values():
            flat = torch.cat([b.detach().reshape(-1) for b in bufs]).to(self.device)
            dist.broadcast(flat, 0)
            i = 0
            for b in bufs:
                b.data.copy_(flat[i:i + b.numel()].view_as(b))
                i += b.numel()

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's `value` (JSON-able) on every rank. Sent as UTF-8 bytes, never pickled."""
        if not self.on:
            return value
        data = json.dumps(value).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buf, 0)
        return json.loads(bytes(buf.cpu().tolist()).decode()) if not self.is_main else value

    def barrier(self) -> None:
        if self.on:
            dist.barrier()

    def part(self, t: Tensor) -> Tensor:
        """This rank's equal slice of a global batch along dim 0 (its length is a multiple of the world size)."""
        if not self.on:
            return t
        b = len(t) // self.world
        return t[self.rank * b:(self.rank + 1) * b]

    def shard(self, t: Tensor) -> Tensor:
        """This rank's contiguous share of an evaluation split (sizes differ by at most one)."""
        return t.tensor_split(self.world)[self.rank] if self.on else t


SINGLE = Dist()


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise UserError(f"environment variable WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise UserError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


def _backend(system: SystemConfig, cuda: bool) -> str:
    name = system.backend if system.backend != "auto" else ("nccl" if cuda else "gloo")
    if name == "nccl" and not cuda:
        raise ConfigError("config key system.backend: nccl needs CUDA devices and this rank runs on the CPU; use gloo "
                          "(or system.backend=auto)")
    available = dist.is_nccl_available() if name == "nccl" else dist.is_gloo_available()
    if not available:
        raise ConfigError(f"config key system.backend: {name} is not available in this torch build "
                          f"({torch.__version__}); use {'gloo' if name == 'nccl' else 'nccl'}")
    return name


def setup(system: SystemConfig, batch_size: int = 0) -> Dist:
    """Join the process group torchrun describes (once per process), or return SINGLE outside torchrun. A process
    group the caller created already is used as it is. `batch_size` (the global batch) is checked before joining."""
    if batch_size:
        check_batch(batch_size, "train.batch_size", env_world_size())
    if not dist.is_available():
        if env_world_size() > 1:
            raise UserError("torch.distributed is not available in this torch build; run without torchrun")
        return SINGLE
    if not dist.is_initialized():
        if env_world_size() == 1:
            return SINGLE
        _init(system)
    world, rank = dist.get_world_size(), dist.get_rank()
    if world == 1:
        return SINGLE
    backend = str(dist.get_backend())
    local_rank = _env_int("LOCAL_RANK", rank)
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return Dist(rank, world, local_rank, _env_int("LOCAL_WORLD_SIZE", world), backend, device)


def _init(system: SystemConfig) -> None:
    cuda = system.device.startswith("cuda") or (system.device == "auto" and torch.cuda.is_available())
    backend = _backend(system, cuda)
    if backend == "nccl":
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        if name not in os.environ:
            raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {name} is not set: start data-parallel runs "
                            f"with torchrun (torchrun --nproc-per-node N -m quicktrain run ...)")
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=system.dist_timeout))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not join the process group ({backend}, rank {os.environ.get('RANK')} of "
                        f"{os.environ['WORLD_SIZE']}, {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}): "
                        f"{first}") from None
    atexit.register(_close)


_ENDED_TOGETHER = [False]


def ended_together() -> None:
    """Say that every rank has reached the same end (the run finished, or a stop every rank agreed on): at exit the
    ranks then meet once more before the process group is destroyed. Without that meeting, a rank that tore down
    gloo while its peer was still closing its connections died with SIGABRT ("terminate called without an active
    exception") after a successful run: seen in 1 of 2 to 1 of 8 two-rank runs on this CPU, none in 24 with it."""
    _ENDED_TOGETHER[0] = True


def _close() -> None:
    if dist.is_initialized():
        if _ENDED_TOGETHER[0]:  # a rank that failed alone must not wait here for peers that may never come
            gc.collect()  # DistributedDataParallel objects left in cycles go before their process group
            dist.barrier()
        dist.destroy_process_group()


def check_batch(batch_size: int, key: str, world: int) -> None:
    """A global batch every rank can take an equal share of (checked before joining, so a bad one fails at once)."""
    if world > 1 and batch_size % world:
        raise ConfigError(f"config key {key}: {batch_size} is not divisible by the {world} ranks (WORLD_SIZE="
                          f"{world}): each rank takes an equal share of every batch; use a multiple of {world}")


def device_for(name: str, d: Dist) -> str:
    """The device a rank trains on: under NCCL, `auto` and `cuda` mean this rank's GPU (cuda:LOCAL_RANK)."""
    if d.on and d.backend == "nccl" and name in ("auto", "cuda"):
        return f"cuda:{d.local_rank}"
    return name
