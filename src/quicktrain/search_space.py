"""Search spaces for `quicktrain tune`: declared in the recipe (`SEARCH_SPACE = {...}` next to `CONFIG`), or derived
from the recipe with sane defaults around its own values.

A space maps config keys to specs:
    ("log", low, high)      log-uniform float (learning rates, weight decay)
    ("float", low, high)    uniform float
    ("int", low, high)      uniform int, inclusive
    ("choice", [a, b, ...]) one of the values
A bad space (unknown key, bad spec, a value the config rejects) is a one-line ConfigError naming the key.
"""

from __future__ import annotations

import itertools
import math
from types import ModuleType
from typing import Any

from quicktrain.config import Config, apply_overrides, iter_keys
from quicktrain.errors import ConfigError, UserError

Spec = tuple[Any, ...]
KINDS = ("log", "float", "int", "choice")


def default_space(cfg: Config) -> dict[str, Spec]:
    """Peak LR, batch size, warmup and duration around the recipe's own values, plus the range each registered
    technique declares (weight decay, label smoothing: quicktrain.methods.registry)."""
    from quicktrain.methods.registry import TECHNIQUES

    lr, bs, epochs, steps = cfg.optim.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.steps
    duration: dict[str, Spec] = {"train.steps": ("int", max(1, steps // 2), steps * 2)} if steps else \
        {"train.epochs": ("float", epochs / 2, epochs * 2)}  # a budget in steps (LM recipes) varies in steps
    space: dict[str, Spec] = {
        "optim.lr": ("log", lr / 8, lr * 8),
        "train.batch_size": ("choice", sorted({max(8, bs // 2), bs, bs * 3 // 2, bs * 2})),
        "schedule.warmup": ("float", 0.1, 0.6) if not cfg.data.language else ("float", 0.0, 0.2),
        **duration,
    }
    return space | {t.key: t.search for t in TECHNIQUES if t.search is not None and t.applies(cfg)}


def recipe_space(recipe: Any, cfg: Config) -> dict[str, Spec]:
    """The recipe module's SEARCH_SPACE if it declares one, else `default_space(cfg)`; checked either way."""
    module = _module(recipe)
    space = getattr(module, "SEARCH_SPACE", None) if module is not None else None
    return check_space(space if space is not None else default_space(cfg), cfg)


def _module(recipe: Any) -> ModuleType | None:
    import importlib
    from pathlib import Path

    from quicktrain.recipes import BUILTIN, _from_file

    if isinstance(recipe, ModuleType):
        return recipe
    if isinstance(recipe, str) and recipe in BUILTIN:
        return importlib.import_module(f"quicktrain.recipes.{recipe}")
    if isinstance(recipe, (str, Path)) and str(recipe).endswith(".py"):
        return _from_file(Path(recipe))
    return None


def check_space(space: Any, cfg: Config) -> dict[str, Spec]:
    if not isinstance(space, dict) or not space:
        raise ConfigError("search space: must be a non-empty dict of config key -> spec")
    keys = {k for k, _, _ in iter_keys(cfg)}
    out = {}
    for key, spec in space.items():
        if key not in keys:
            raise ConfigError(f"search space key {key!r}: not a config key")
        if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in KINDS:
            raise ConfigError(f"search space key {key!r}: spec must start with one of {', '.join(KINDS)} "
                              f"(got {spec!r})")
        kind = spec[0]
        if kind == "choice":
            if len(spec) != 2 or not isinstance(spec[1], (list, tuple)) or not spec[1]:
                raise ConfigError(f"search space key {key!r}: ('choice', [values...]) needs a non-empty list")
            values = list(spec[1])
        else:
            if len(spec) != 3 or not all(isinstance(v, (int, float)) for v in spec[1:]) or not spec[1] < spec[2]:
                raise ConfigError(f"search space key {key!r}: ({kind!r}, low, high) needs numbers with low < high")
            if kind == "log" and spec[1] <= 0:
                raise ConfigError(f"search space key {key!r}: a log range needs low > 0")
            values = [spec[1], spec[2]]
        for v in values:  # every edge of the space must be a valid config
            apply_overrides(cfg, {key: int(v) if kind == "int" else v})
        out[key] = (kind, list(spec[1])) if kind == "choice" else (kind, spec[1], spec[2])
    return out


def sample(trial: Any, space: dict[str, Spec]) -> dict[str, Any]:
    """Ask an Optuna trial for one point of the space."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec[0]
        if kind == "choice":
            out[key] = trial.suggest_categorical(key, spec[1])
        elif kind == "int":
            out[key] = trial.suggest_int(key, int(spec[1]), int(spec[2]))
        else:
            out[key] = trial.suggest_float(key, spec[1], spec[2], log=kind == "log")
    return out


def grid(space: dict[str, Spec], levels: int = 3) -> list[dict[str, Any]]:
    """The space as a grid: `levels` points per continuous range (geometric for log), every value of a choice."""
    axes = []
    for key, spec in space.items():
        kind = spec[0]
        if kind == "choice":
            values = list(spec[1])
        elif kind == "log":
            lo, hi = math.log(spec[1]), math.log(spec[2])
            values = [math.exp(lo + (hi - lo) * i / (levels - 1)) for i in range(levels)]
        elif kind == "int":
            values = sorted({round(spec[1] + (spec[2] - spec[1]) * i / (levels - 1)) for i in range(levels)})
        else:
            values = [spec[1] + (spec[2] - spec[1]) * i / (levels - 1) for i in range(levels)]
        axes.append([(key, v) for v in values])
    return [dict(point) for point in itertools.product(*axes)]


def parse_budget(text: str) -> tuple[str, float]:
    """'600s' | '20000steps' | '0.50usd' -> (kind, amount)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|steps|usd)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"budget {text!r}: use seconds (600s), training steps (20000steps) or dollars (0.50usd)")
    return m.group(2), float(m.group(1))
