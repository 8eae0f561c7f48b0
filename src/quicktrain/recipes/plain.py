"""What library defaults give: the fast recipe's model, Adam at lr 1e-3 held constant, fp32, batch 128, shuffled,
no weight decay, no schedule, no augmentation, no tricks. Like most hand-written loops it trains a fixed number of
epochs (long enough to reach the target) rather than stopping there; its time to the target is read off the metrics."""

from quicktrain.config import (Config, DataConfig, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               SystemConfig, TrainConfig)

CONFIG = Config(
    name="plain",
    tuned_for="",  # fixed constants, as the baseline has them: never adapted
    data=DataConfig(name="mnist1d", augment="none"),
    model=ModelConfig(name="fastnet1d"),
    optim=OptimConfig(name="adam", lr=1e-3, weight_decay=0.0, no_decay_1d=False),
    schedule=ScheduleConfig(kind="constant"),
    train=TrainConfig(epochs=100, batch_size=128, target=0.94, stop_on_target=False, eval_every=1.0,
                       eval_from=0.0),
    methods=MethodsConfig(label_smoothing=0.0, ema=0.0, resize_from=1.0, tta=False),
    system=SystemConfig(precision="fp32", compile="off", channels_last="off"),
)
