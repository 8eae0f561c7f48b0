"""Shared fixtures: a private cache directory for the session, fixed seeds, and a tiny config (a few steps)."""

from __future__ import annotations

import os
import random
import numpy as np
import pytest
import torch

from support import SMALL_MNIST1D

from quicktrain.config import (Config, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig, SystemConfig,
                               TrainConfig)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Datasets, peak-FLOP and autotune measurements go to a fresh directory, never the user's cache."""
    os.environ["QUICKTRAIN_CACHE"] = str(tmp_path_factory.mktemp("qt-cache"))
    os.environ.pop("QUICKTRAIN_PRICES", None)


@pytest.fixture(autouse=True)
def _seeds() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg() -> Config:
    """A run of a handful of steps on a small MNIST-1D draw (800 train / 200 val / 200 test)."""
    return Config(
        name="tiny",
        tuned_for="",  # fixed constants: a test (or benchmark) of the loop itself, never adapted
        data=SMALL_MNIST1D,
        model=ModelConfig(name="tiny1d"),
        optim=OptimConfig(lr=1e-2),
        schedule=ScheduleConfig(),
        train=TrainConfig(epochs=0.5, batch_size=32, target=0.0, eval_every=0.25, eval_from=0.0),
        methods=MethodsConfig(tta=False),
        system=SystemConfig(precision="fp32", compile="off", channels_last="off"),
    )
