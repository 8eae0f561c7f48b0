"""The model contract: what `train(cfg, model=...)` accepts, checked once at setup with one probe batch.

Any `nn.Module` whose forward takes one batch `x` (N, *input_shape) works, once `prepare_model` has:

- refused, in one line (a UserError), what cannot train: parameters on the `meta` device (no data), no trainable
  parameter at all, a forward that needs more than `x`, a forward that fails on a batch of the data, an output with
  no logits in it, or logits whose shape is not (N, num_classes) (the message names both shapes);
- unwrapped a `torch.compile`d model (an `OptimizedModule`): its `_orig_mod` is what trains, so the user's module (and
  their compiled wrapper, which shares it) is trained in place, checkpoints keep plain keys, and the run's own
  `system.compile` decides whether to compile (compile options the user gave are not kept);
- moved parameters and buffers to `device` (from wherever they are: another GPU, the CPU);
- materialised lazy modules (`nn.LazyLinear`, `nn.LazyConv2d`, ...) with one forward on the sample batch, so that
  counting, grouping and compiling parameters all see real tensors;
- wrapped a model whose output is not a tensor in `LogitsAdapter`, which returns the logits tensor and keeps the
  wrapped model's state_dict keys (checkpoints, resume and `weights_sha256` are unaffected).

Where the logits are found: a tensor is the logits; a tuple or list gives its first item (nanoGPT's `(logits, loss)`,
torchvision's `(logits, aux)`); a mapping gives its `"logits"` entry and any other object its `.logits` attribute
(Hugging Face `ModelOutput`, a dataclass).

Models that compute their own loss (nanoGPT's `forward(idx, targets=None) -> (logits, loss)`, Hugging Face's
`labels=None`): quicktrain calls `model(x)` alone, never with targets, and applies its own loss (label smoothing and
all) to the logits; the model's loss, None without targets, is ignored. So the targets argument needs a default;
a forward that requires it is refused with that advice.

The probe forwards run without gradients, once in eval mode (which materialises lazy modules) and once in train mode
(a model may return other things in training, e.g. auxiliary logits); buffers (BatchNorm running statistics), every
submodule's train/eval mode and, for the train-mode probe, the RNG state (dropout) are restored after, so the probes
leave no trace but the materialised parameters (whose initialisation draws from the RNG, as building them eagerly
would). Nothing here runs per step: the adapter adds one Python call and a few isinstance checks to a forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from quicktrain.errors import UserError

__all__ = ["LogitsAdapter", "logits_of", "prepare_model", "unwrap_compiled"]

Note = Callable[[str], None]
_INNER = "wrapped"  # the adapter's one child; its name never appears in state_dict keys


def logits_of(out: Any) -> Tensor | None:
    """The logits tensor in a model's output (see the module docstring for where it is looked for), or None."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):  # before tuple: a Hugging Face ModelOutput is both
        found = out.get("logits")
    elif isinstance(out, (tuple, list)):
        found = out[0] if out else None
    else:
        found = getattr(out, "logits", None)
    return found if isinstance(found, Tensor) else None


def _strip_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: `<prefix>wrapped.k` -> `<prefix>k`, in order, so the keys are the wrapped model's."""
    inner = f"{prefix}{_INNER}."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:  # module versions: keep them under the keys a plain model would have
        for key in [k for k in metadata if k == inner[:-1] or k.startswith(inner)]:
            metadata[(prefix + key[len(inner):]).rstrip(".")] = metadata.pop(key)


def _add_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook, the inverse of `_strip_prefix`: every key under `prefix` belongs to the child.
    (Module versions saved in the metadata are not looked up under the child's name: no built-in layer's loading
    depends on them when every key is present, and quicktrain.state.flatten keeps no metadata anyway.)"""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[f"{prefix}{_INNER}.{key[len(prefix):]}"] = state_dict.pop(key)


class LogitsAdapter(nn.Module):
    """`model` whose forward returns the logits tensor out of whatever `model` returns (tuple, dict, `.logits`).

    Its state_dict has exactly the wrapped model's keys and loads a state_dict saved from the bare model (and the
    reverse), so a checkpoint does not depend on whether the adapter was needed. `adapter.wrapped` is the model."""

    wrapped: nn.Module

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.wrapped = model  # registered as the one child, named _INNER
        # Plain functions, not bound methods: torch marks public hooks with an attribute, and they must deepcopy.
        self.register_state_dict_post_hook(_strip_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        out = self.wrapped(*args, **kwargs)
        logits = logits_of(out)
        if logits is None:  # both modes were probed at setup, so this means the output changed kind mid-run
            raise UserError(f"model returned {_kind(out)} mid-run, with no logits in it")
        return logits


def unwrap_compiled(model: nn.Module) -> tuple[nn.Module, bool]:
    """(the eager module, whether it was wrapped): torch.compile's OptimizedModule keeps the module as `_orig_mod`."""
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        return unwrap_compiled(inner)[0], True
    return model, False


def prepare_model(model: nn.Module, sample_x: Tensor, num_classes: int, device: torch.device | str,
                  note: Note | None = None) -> nn.Module:
    """`model` ready to train on `device`: checked, moved, materialised and, if its output is not a tensor, wrapped
    (see the module docstring). `sample_x` is a few training inputs (2 or more: a train-mode BatchNorm needs them).
    Returns `model` itself (moved in place) unless it was compiled (then the module inside) or needs the adapter.
    `note(message)` hears what was done, in one line each. Raises a one-line UserError saying what to change."""
    say = note or (lambda _msg: None)
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model, was_compiled = unwrap_compiled(model)
    if was_compiled:
        say("model: training the module inside its torch.compile wrapper; system.compile decides compilation")
    _refuse_meta(model)
    device = torch.device(device)
    model.to(device)  # in place for modules: the user's object is what trains
    x = sample_x.to(device)
    _refuse_required_extra_args(model, x)
    lazy = sum(1 for t in chain(model.parameters(), model.buffers()) if is_lazy(t))
    eval_out = _probe(model, x, train=False)  # materialises lazy modules
    if lazy:
        say(f"model: materialised {lazy} lazy parameters and buffers from a batch of shape {_shape(x)}")
    _refuse_untrainable(model)
    train_out = _probe(model, x, train=True)
    for out in (eval_out, train_out):
        _check_logits(out, x, num_classes)
    if isinstance(eval_out, Tensor) and isinstance(train_out, Tensor):
        return model
    say(f"model: returns {_kind(train_out)}; training on its logits (LogitsAdapter)")
    return LogitsAdapter(model)


# ---------------------------------------------------------------------------------------------------------------------
# Checks and the probe


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _kind(out: Any) -> str:
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {', '.join(map(repr, out)) or '(none)'}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} item{'s' * (len(out) != 1)}"
    return f"an object of type {type(out).__name__}"


def _refuse_meta(model: nn.Module) -> None:
    names = [n for n, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if names:
        raise UserError(f"model has parameters on the meta device, which hold no values (first: {names[0]}): "
                        f"load its weights (e.g. load_state_dict(..., assign=True)) or build it on a real device")


def _refuse_untrainable(model: nn.Module) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("model has no trainable parameters (every requires_grad is False): unfreeze at least one")


def _refuse_required_extra_args(model: nn.Module, x: Tensor) -> None:
    """quicktrain calls model(x) alone; a forward that requires more (targets) would fail at the first step."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a builtin or scripted forward: the probe will tell
        return
    try:
        signature.bind(x)
    except TypeError:
        raise UserError(f"model.forward{signature} needs more than the batch: quicktrain calls model(x) and "
                        f"applies its own loss to the logits, so give the other arguments defaults "
                        f"(e.g. targets=None)") from None


def _probe(model: nn.Module, x: Tensor, train: bool) -> Any:
    """One forward without gradients in the given mode; modes, initialised buffers and (in train mode) the RNG are
    restored after. Lazy buffers are not saved (they have no values yet); they materialise in eval mode, untouched."""
    modes = [(m, m.training) for m in model.modules()]
    saved = [(b, b.detach().clone()) for b in model.buffers() if not is_lazy(b)]
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=train):
            model.train(train)
            return model(x)
    except UserError:
        raise
    except Exception as exc:  # the user's forward: say what failed, in one line
        first = next((line for line in str(exc).splitlines() if line.strip()), "")[:300]
        raise UserError(f"model failed on a batch of shape {_shape(x)} in {'train' if train else 'eval'} mode: "
                        f"{type(exc).__name__}: {first}") from None
    finally:
        for m, was_training in modes:
            m.training = was_training
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _check_logits(out: Any, x: Tensor, num_classes: int) -> None:
    logits = logits_of(out)
    if logits is None:
        raise UserError(f"model returns {_kind(out)}, with no logits in it: return a tensor (N, classes), a tuple "
                        f"whose first item is that, a dict with key 'logits', or an object with a .logits attribute")
    want = (len(x), num_classes)
    if tuple(logits.shape) == want:
        return
    if logits.ndim == 2 and logits.shape[0] == len(x):
        raise UserError(f"model output has shape {_shape(logits)} but the data has {num_classes} classes: "
                        f"make the last layer output {num_classes} features")
    raise UserError(f"model output has shape {_shape(logits)} for a batch of shape {_shape(x)}; it must be {want} "
                    f"(batch, classes): e.g. flatten or pool before the last layer")


def prepare_lm(model: nn.Module, sample_x: Tensor, vocab_size: int, device: torch.device | str) -> nn.Module:
    """A next-token model ready to train on `device`: it must map token ids (B, T) to logits (B, T, vocab) as a
    tensor; anything else is a one-line UserError saying what to change. Returns `model`, moved in place."""
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model, _ = unwrap_compiled(model)
    _refuse_meta(model)
    model.to(torch.device(device))
    x = sample_x.to(device)
    _refuse_untrainable(model)
    out = _probe(model, x, train=False)
    want = (*x.shape, vocab_size)
    if not isinstance(out, Tensor) or tuple(out.shape) != want:
        got = _shape(out) if isinstance(out, Tensor) else _kind(out)
        raise UserError(f"a next-token model must return logits of shape {want} (batch, time, vocab) for token ids "
                        f"of shape {_shape(x)}; got {got}")
    return model
