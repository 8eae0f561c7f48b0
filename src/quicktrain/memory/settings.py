"""The memory settings a run uses, decided once in `build_run`: a resumed run's recorded ones; else, under a cap
(`system.memory`), the planner's; else the config's own (`memory.micro_batch`, `memory.checkpoint`,
`model.reversible`). The result goes into the run's `Choices.memory`, so a resume keeps it whatever the device's
free memory is by then.

Settings the user made explicitly win: with `memory.micro_batch`, `memory.checkpoint` or `model.reversible` set,
the planner does not run (a note says so)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import torch
from torch import Tensor

from quicktrain.config import Config
from quicktrain.errors import UserError
from quicktrain.memory.planner import Builder, OptFactory, Plan, plan_memory, resolve_cap, variants
from quicktrain.precision import candidates
from quicktrain.step import LossFn

__all__ = ["apply_settings", "memory_settings"]


def _configured(cfg: Config, cap: int | None) -> dict[str, Any]:
    return {"micro_batch": cfg.memory.micro_batch, "checkpoint": cfg.memory.checkpoint,
            "reversible": cfg.model.reversible, "precision": None, "planned": False, "cap": cap}


def memory_settings(cfg: Config, recorded: dict[str, Any] | None, device: torch.device, build: Builder,
                    can_reverse: bool, make_opt: OptFactory, loss_fn: LossFn, x: Tensor, y: Tensor,
                    extra_bytes: int = 0, say: Callable[[str], None] = lambda _m: None, every: bool = False
                    ) -> Plan:
    """The run's memory plan: `plan.memory()` are its settings. `build(variant)` gives a fresh model for a
    variant; `x, y` is one batch. With `every` (plan-memory's table) every variant is measured."""
    if recorded:
        return Plan(recorded.get("cap"), len(x), given=dict(recorded))
    cap = resolve_cap(cfg.system.memory, device)
    mc = cfg.memory
    explicit = mc.micro_batch > 0 or mc.checkpoint != "off" or cfg.model.reversible
    if cap is None and every:
        raise UserError("config key system.memory: plan-memory needs a cap on this device, e.g. "
                        "--system.memory=512MiB (on CPU there is none by default)")
    if cap is None or (explicit and not every):
        if cap is not None:
            say("system.memory: memory.micro_batch / memory.checkpoint / model.reversible are set explicitly, so "
                "they are used as given (not planned)")
        return Plan(cap, len(x), given=_configured(cfg, cap))
    precisions = candidates(device) if cfg.system.precision == "auto" else [cfg.system.precision]
    plan = plan_memory(cap, build, make_opt, loss_fn, x, y, variants(precisions, can_reverse), extra_bytes,
                       every=every)
    say(plan.summary())
    return plan


def apply_settings(cfg: Config, settings: dict[str, Any]) -> Config:
    """`cfg` with the settings in its fields (a planned precision replaces `auto`)."""
    memory = replace(cfg.memory, micro_batch=int(settings.get("micro_batch", cfg.memory.micro_batch)),
                     checkpoint=settings.get("checkpoint", cfg.memory.checkpoint))
    model = replace(cfg.model, reversible=bool(settings.get("reversible", cfg.model.reversible)))
    precision = settings.get("precision") or cfg.system.precision
    return replace(cfg, memory=memory, model=model, system=replace(cfg.system, precision=precision))
