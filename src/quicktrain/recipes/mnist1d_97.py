"""MNIST-1D, higher tier: a 20-seed mean test accuracy of at least 97% (above the paper's human figure, 96%), as fast
as possible. Chosen on the validation split (docs/BENCHMARKS.md, "Higher tiers")."""

from dataclasses import replace

from quicktrain.recipes.mnist1d import CONFIG as FAST

CONFIG = replace(
    FAST,
    name="mnist1d_97",
    train=replace(FAST.train, epochs=6.0, target=0.97),
)
