"""Activation checkpointing per block: keep a block's input, drop what it computed inside, recompute that in backward.

What: `apply_checkpointing(model, "full" | "selective")` wraps each repeated residual block of the model (see
`find_blocks` for the rule) in `torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`, in place. "full" keeps
only each block's inputs and recomputes the whole block in backward (Chen et al. 2016, "Training deep nets with
sublinear memory cost": one extra forward, ~+30% step time in their paper). "selective" keeps the outputs of the
expensive ops as well (`SAVED_OPS`: convolutions, matmuls, attention kernels) and recomputes only the cheap ones
(batch norm, ReLU/GELU/squares, residual adds, RMS/layer norm, dropout masks, views), the idea of Korthikanti et
al. 2022 ("Reducing activation recomputation in large transformer models"): less recompute time, more memory kept.
Measured on revnet1d (width 64, batch 128, this 2-core CPU; benchmarks/memory_depth.py, docs/BENCHMARKS.md "Memory
vs depth"): full checkpointing cuts peak activation memory by the factor stated there, selective by less.

Correctness that torch does not give for free:
- batch norm: the recompute in backward runs the block again in training mode, which would update BN running
  statistics a second time (pytorch/pytorch#96136, open). The wrapper snapshots every BN buffer of the block
  (running_mean, running_var, num_batches_tracked) before the recompute and restores it after, so the statistics
  after a checkpointed step equal the plain step's exactly (tests/test_checkpointing.py).
- dropout: `preserve_rng_state=True` replays the forward's RNG state in the recompute, so the same mask is drawn and
  the RNG stream afterwards is the plain one.
- checkpoints: the wrapper's `state_dict` keys are the block's own (a state-dict hook strips the wrapper's prefix,
  a load pre-hook adds it back), so checkpoints and resume are unchanged by turning checkpointing on or off.
  `named_parameters()` does show the wrapper (`blocks.0.block.attn...`); quicktrain keys nothing on those names.

Off: `--memory.checkpoint=off` (the default), or `remove_checkpointing(model)`. Works with torch.compile off; with
compile on, dynamo traces the checkpoint as a higher-order op (tested cheaply in tests/test_checkpointing.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from quicktrain.errors import UserError

__all__ = ["SAVED_OPS", "Checkpointed", "apply_checkpointing", "checkpoint_call", "find_blocks", "frozen_bn_stats",
           "remove_checkpointing"]

Policy = Literal["full", "selective"]
_aten = torch.ops.aten

# Ops whose outputs "selective" keeps: the FLOP-heavy ones. Everything else in a block (native_batch_norm, relu,
# gelu, pow, mul/add, rsqrt/mean of the norms, bernoulli_ of dropout, views) is recomputed: O(elements) work.
SAVED_OPS = frozenset({
    _aten.convolution.default, _aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default,
    _aten._scaled_dot_product_flash_attention.default, _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_efficient_attention.default, _aten._scaled_dot_product_cudnn_attention.default,
})


def _is_block_list(module: nn.Module) -> bool:
    composite = sum(1 for child in module.children() if _is_composite(child))
    if isinstance(module, nn.ModuleList):  # a ModuleList is declared as a list of repeated modules
        return composite >= 1
    return isinstance(module, nn.Sequential) and composite >= 2


def _is_composite(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def _is_reversible(module: nn.Module) -> bool:
    from quicktrain.memory.reversible import ReversibleSequence  # lazy: the two modules import each other

    return isinstance(module, ReversibleSequence)


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of `model`, in forward order. The rule: walk the module tree from the model down
    (pre-order); the first nn.ModuleList with a composite child, or nn.Sequential with >= 2 composite children
    (a composite module is one with sub-modules), found on a path is a block list, and its composite children are
    the blocks; nothing inside a block list is searched further. Leaf children of a block list (a bare ReLU) are
    not blocks: checkpointing one layer saves nothing. A `ReversibleSequence` is skipped, children and all: its
    blocks already keep no activations.

    So: gpt -> its `blocks`; fastnet1d -> its conv stages; resnet2d -> the stem, downsampling conv_bns and residual
    blocks of `features`; revnet1d -> its residual blocks; a plain nn.Sequential of Linear/ReLU layers -> none."""
    return [block for _, _, block in _block_slots(model)]


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Restore every batch-norm buffer under `module` (running_mean, running_var, num_batches_tracked) on exit, so a
    recompute in backward does not update the running statistics a second time (pytorch/pytorch#96136).

    The copies are made with every dispatch mode off: inside a selective checkpoint's recompute, an op the forward
    did not run (this clone) is an error of the checkpoint's own caching mode."""
    with _disable_current_modes():
        saved = [(buf, buf.clone()) for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                 and m.training and m.track_running_stats for buf in m.buffers(recurse=False)]
    try:
        yield
    finally:  # also when checkpoint's early stop raises out of the recompute
        with _disable_current_modes(), torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts() -> tuple[Any, Any]:
    return create_selective_checkpoint_contexts(_policy)


def checkpoint_call(fn: Callable[..., Any], module: nn.Module, *args: Any, policy: Policy = "full",
                    **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` under non-reentrant checkpointing, `module` being what `fn` runs (its BN statistics are
    restored around the recompute). The first call of the inner function is the forward, any later one a recompute
    in backward: only those run with the statistics frozen."""
    calls = 0

    def run(*a: Any, **k: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return fn(*a, **k)
        with frozen_bn_stats(module):
            return fn(*a, **k)

    context = {"context_fn": _selective_contexts} if policy == "selective" else {}
    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True, **context, **kwargs)


class Checkpointed(nn.Module):
    """`block` run under activation checkpointing when training with gradients; plain otherwise (evaluation keeps no
    activations anyway). Its state_dict keys are `block`'s, without this wrapper's `block.` prefix."""

    def __init__(self, block: nn.Module, policy: Policy) -> None:
        super().__init__()
        self.block = block
        self.policy = policy
        self._register_state_dict_hook(_strip_prefix)
        self._register_load_state_dict_pre_hook(_add_prefix, with_module=True)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.training and torch.is_grad_enabled()):
            return self.block(*args, **kwargs)
        return checkpoint_call(self.block, self.block, *args, policy=self.policy, **kwargs)

    def extra_repr(self) -> str:
        return f"policy={self.policy}"


def _strip_prefix(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state if k.startswith(prefix + "block.")]:
        state[prefix + key[len(prefix) + len("block."):]] = state.pop(key)


def _add_prefix(wrapper: Checkpointed, state: dict[str, Any], prefix: str, *args: Any) -> None:
    # every key under `prefix` belongs to this wrapper's subtree (prefix ends with "."); the block expects "block."
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + "block.")]:
        state[prefix + "block." + key[len(prefix):]] = state.pop(key)


def apply_checkpointing(model: nn.Module, policy: Policy) -> int:
    """Wrap each block of `model` (`find_blocks`) in `Checkpointed`, in place; returns how many were wrapped. Blocks
    already wrapped are re-set to `policy`. Reversible sequences are left as they are (they count 0). A model with
    neither is a one-line UserError. Call it before torch.compile; the optimizer may be built before or after (the
    parameters stay the same objects)."""
    if policy not in ("full", "selective"):
        raise UserError(f"config key memory.checkpoint: {policy!r} is not a checkpointing policy "
                        "(choose full or selective; off means do not call apply_checkpointing)")
    count = 0
    for parent, name, child in list(_block_slots(model)):
        if isinstance(child, Checkpointed):
            child.policy = policy
        else:
            setattr(parent, name, Checkpointed(child, policy))
        count += 1
    if count == 0 and not any(_is_reversible(m) for m in model.modules()):
        raise UserError(f"memory.checkpoint={policy}: model {type(model).__name__} has no repeated blocks to "
                        "checkpoint (an nn.ModuleList, or an nn.Sequential of >= 2 sub-modules that have layers)")
    return count


def remove_checkpointing(model: nn.Module) -> int:
    """Undo `apply_checkpointing` in place; returns how many wrappers were removed."""
    slots = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, Checkpointed)]
    for parent, name, child in slots:
        setattr(parent, name, child.block)
    return len(slots)


def _block_slots(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, block) for each block of `find_blocks`' rule; a wrapped block is composite too, so a
    second call finds the same slots."""
    if _is_reversible(model):
        return
    if _is_block_list(model):
        yield from ((model, name, child) for name, child in model.named_children() if _is_composite(child))
        return
    for child in model.children():
        yield from _block_slots(child)
