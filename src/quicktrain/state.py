"""The whole state of a run as (tensors, JSON), and back: what an exact resume needs.

Nested state (state_dicts, RNG states, counters) is flattened into a dict of tensors plus a JSON skeleton in which
each tensor is a reference by name. Dict keys keep their types (an optimizer's state is keyed by int), tuples stay
tuples, numpy arrays come back as numpy arrays. Nothing here pickles.

For people who keep their own loop, `save_state` / `restore_state` are the documented pair: model, optimizer, grad
scaler, every random generator and any extra state of yours, written with the same crash-safe checkpoint format.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quicktrain.checkpoint import read_latest, write_checkpoint


def flatten(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """A JSON-able skeleton of `obj`; its tensors (and numpy arrays) are moved into `tensors` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True)
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj.copy())
        return {"__ndarray__": path, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, tensors, f"{path}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {path or '/'}")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__ndarray__" in skeleton:
        return tensors[skeleton["__ndarray__"]].numpy().astype(skeleton["dtype"])
    if "__tuple__" in skeleton:
        return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
    return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}


def rng_state() -> dict[str, Any]:
    """Every global random generator: python, numpy, torch CPU, and each CUDA device."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def weights_sha256(model: nn.Module) -> str:
    """A hash of the model's parameters and buffers in a canonical order (sorted names; name, dtype, shape, bytes),
    so two runs can be checked for bitwise-identical results without shipping the weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # bytes as stored (bf16 has no numpy dtype)
    return h.hexdigest()


def save_state(directory: str | Path, step: int, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               scaler: Any = None, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Checkpoint your own loop at `step`: model, optimizer, grad scaler, every RNG, and `extra` (numbers, strings,
    tensors, numpy arrays, nested dicts/lists). Crash-safe; keeps the newest `keep`. Returns the checkpoint's path."""
    tensors: dict[str, torch.Tensor] = {}
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(), "extra": extra or {}}
    meta = {"step": step, "kind": "user", "state": flatten(state, tensors)}
    return write_checkpoint(Path(directory), step, tensors, meta, keep=keep)


def load_optimizer_state(optimizer: Any, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict(state)`, then each per-parameter state tensor laid out in memory like its parameter.

    Why (issue #8): a checkpoint stores tensors contiguous, so a channels_last model's Adam moments came back in the
    default layout while the parameters stayed channels_last. torch's fused CPU Adam(W) kernel (our default) walks
    parameter, gradient and moments as if they had the same strides, so each moment was applied to the wrong
    element: the resumed run diverged from the first step after the restore (measured on an Intel Xeon with AVX512,
    fastnet1d + channels_last, fp32 and bf16 alike; the foreach kernel and SGD were unaffected). Values are copied
    unchanged; only the strides move back to the parameter's. tests/test_resume_choices.py holds this."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def restore_state(directory: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                  scaler: Any = None, warn: Any = None) -> dict[str, Any] | None:
    """Restore the newest valid checkpoint written by `save_state` into model/optimizer/scaler and every RNG.
    Returns {"step": ..., "extra": ...}, or None when the directory has no checkpoint yet. A damaged newest
    checkpoint is skipped with a warning (`warn`, default warnings.warn); if none verifies, CorruptCheckpoint."""
    import warnings

    found = read_latest(Path(directory), warn or (lambda m: warnings.warn(m, stacklevel=2)))
    if found is None:
        return None
    _, tensors, meta = found
    state = unflatten(meta["state"], tensors)
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        load_optimizer_state(optimizer, state["optimizer"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return {"step": meta["step"], "extra": state["extra"]}
