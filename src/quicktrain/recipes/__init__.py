"""Recipes: Python files that define `CONFIG`. A recipe argument is a built-in name or a path to such a file.

Built-ins: mnist1d (the fast default), plain (what library defaults give), reference (the mnist1d repository's own
setup), the higher-accuracy MNIST-1D tiers, digits / mnist5k, and the next-token recipes nanogpt (nanoGPT's CPU
configuration) and stdlib_lm (the fast default on the built-in corpus).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from quicktrain.config import Config, check_config
from quicktrain.errors import UserError

BUILTIN = ("mnist1d", "plain", "reference", "mnist1d_97", "mnist1d_98", "digits", "mnist5k", "nanogpt", "stdlib_lm")


def _from_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserError(f"recipe file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"quicktrain_recipe_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"recipe file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as exc:  # a user's file: report it in one line, naming the file
        raise UserError(f"recipe file {path} failed to load: {type(exc).__name__}: {exc}") from None
    return module


def load_recipe(recipe: str | Path | Config | ModuleType) -> Config:
    """A Config from a built-in name, a recipe file path, a recipe module, or a Config (returned checked)."""
    if isinstance(recipe, Config):
        return check_config(recipe)
    if isinstance(recipe, ModuleType):
        module, where = recipe, recipe.__name__
    elif str(recipe) in BUILTIN:
        module, where = importlib.import_module(f"quicktrain.recipes.{recipe}"), str(recipe)
    elif str(recipe).endswith(".py") or Path(recipe).exists():
        module, where = _from_file(Path(recipe)), str(recipe)
    else:
        raise UserError(f"unknown recipe {str(recipe)!r} (built-ins: {', '.join(BUILTIN)}; "
                        "or a path to a .py file defining CONFIG)")
    cfg = getattr(module, "CONFIG", None)
    if not isinstance(cfg, Config):
        raise UserError(f"recipe {where} must define CONFIG = quicktrain.Config(...)")
    return check_config(cfg)


def __getattr__(name: str) -> ModuleType:
    """`quicktrain.recipes.mnist1d` works without importing every recipe up front."""
    if name in BUILTIN:
        return importlib.import_module(f"quicktrain.recipes.{name}")
    raise AttributeError(name)


__all__ = ["BUILTIN", "load_recipe"]
