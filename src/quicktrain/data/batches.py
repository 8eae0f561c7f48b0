"""Device-resident batching: the training split lives on the device as two tensors and each batch is an index_select
there. For datasets that fit in device memory this replaces a DataLoader (no worker processes, no host-to-device copy
per step), which for small nets is much of the step time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class DeviceBatches:
    """Training split kept as tensors on the device; batches are index_select'ed there, no DataLoader.

    Each epoch's order is a permutation drawn from a CPU generator seeded with `seed`, so the order is the same on CPU
    and CUDA, and moved to the device once per epoch. `sequential=True` keeps data order (the MNIST-1D reference
    slices x[i:i + bs]). Batches are drop-last: a batch that would run past the end starts the next epoch instead.
    The batch size may change from call to call (a batch-size ramp). `state_dict` captures everything, so a restored
    object yields exactly the batches the original would have.
    """

    def __init__(self, x: Tensor, y: Tensor, seed: int, sequential: bool = False) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
        self.x, self.y = x, y
        self.n = len(x)
        self.sequential = sequential
        self.generator = torch.Generator()  # CPU on purpose: same order on every device
        self.generator.manual_seed(seed)
        self.epoch = 0  # completed epochs
        self.pos = 0  # examples of the current epoch already handed out
        self._set_perm(self._draw_perm())

    def _draw_perm(self) -> Tensor:
        if self.sequential:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=self.generator)

    def _set_perm(self, perm: Tensor) -> None:
        self.perm = perm  # CPU copy, for state_dict
        self._perm = perm.to(self.x.device)  # the one host-to-device copy per epoch

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.pos = 0
        self._set_perm(self._draw_perm())

    def next(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """The next `batch_size` examples (x, y), on the device. No host sync: one slice and two index_selects."""
        if not 1 <= batch_size <= self.n:
            raise ValueError(f"batch_size {batch_size} must be in [1, {self.n}] (the training split's size)")
        if self.pos + batch_size > self.n:  # drop-last: the remainder of this epoch is skipped
            self._new_epoch()
        start, self.pos = self.pos, self.pos + batch_size
        if self.sequential:
            xb, yb = self.x[start:self.pos], self.y[start:self.pos]
        else:
            idx = self._perm[start:self.pos]
            xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
        if self.pos == self.n:  # an exact end of epoch counts at once, so `epoch` is never behind
            self._new_epoch()
        return xb, yb

    def fork(self, seed: int) -> "DeviceBatches":
        """The same examples (no copy), shuffled by another seed, from the start (the LR finder's data)."""
        return DeviceBatches(self.x, self.y, seed=seed)

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm.clone(), "pos": self.pos, "epoch": self.epoch,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        perm = torch.as_tensor(state["perm"], dtype=torch.int64).cpu()
        if perm.shape != (self.n,):
            raise ValueError(f"saved batch order is for {perm.numel()} examples, this split has {self.n}")
        self.generator.set_state(state["generator"])
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])
        self._set_perm(perm.clone())
