"""MNIST-1D, top tier: a 20-seed mean test accuracy of at least 98%. Chosen on the validation split
(docs/BENCHMARKS.md, "Higher tiers")."""

from dataclasses import replace

from quicktrain.recipes.mnist1d import CONFIG as FAST

CONFIG = replace(
    FAST,
    name="mnist1d_98",
    model=replace(FAST.model, channels=(32, 64, 96)),
    train=replace(FAST.train, epochs=10.0, target=0.98),
)
