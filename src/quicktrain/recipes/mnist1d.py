"""The fast default on MNIST-1D: reach 94% validation accuracy in the least train-clock time.

Every value here was chosen on the validation split (docs/BENCHMARKS.md, "MNIST-1D speed"); the test split only
reports. The config defaults are this recipe, spelled out so the file reads as the recipe.
"""

from quicktrain.config import (Config, DataConfig, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               SystemConfig, TrainConfig)

CONFIG = Config(
    name="mnist1d",
    data=DataConfig(name="mnist1d", augment="auto", shift=4),
    model=ModelConfig(name="fastnet1d"),
    optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=5e-4, no_decay_1d=True),
    schedule=ScheduleConfig(kind="onecycle", warmup=0.4),
    train=TrainConfig(epochs=3.0, batch_size=128, target=0.94, eval_every=1.0),
    methods=MethodsConfig(label_smoothing=0.0, ema=0.0, resize_from=1.0, tta=True),
    system=SystemConfig(precision="auto", compile="auto", channels_last="auto"),
)
