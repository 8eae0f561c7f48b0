"""Helpers shared by test modules (conftest.py holds the fixtures)."""

from dataclasses import replace

from quicktrain.config import Config, DataConfig, Mnist1dArgs

SMALL_MNIST1D = DataConfig(name="mnist1d", mnist1d=Mnist1dArgs(num_samples=1000))


def steps(cfg: Config, n: int) -> Config:
    """cfg trimmed to exactly n steps of its batch size on the 800-example training split."""
    return replace(cfg, train=replace(cfg.train, epochs=n * cfg.train.batch_size / 800, eval_every=100.0))
