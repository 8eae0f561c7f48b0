"""The mnist1d repository's own setup (greydanus/mnist1d, notebooks/train.py and models.py): ConvBase (5,210
parameters), Adam at lr 1e-2 held constant, no weight decay, batch 100 taken in order (x[b:b+100], unshuffled),
no schedule, fp32, 8000 steps (= 200 epochs of 4000 examples). Like the repository, it trains the whole budget
rather than stopping at the target, so its time to the target (validation, or test as the paper reports it) is read
off the metrics.

The repository evaluates every 250 steps; here every 50 steps (1.25 epochs), so its time to a target is resolved
5x more finely (evaluation is cheap for this net, and a coarser check would only make the reference look slower).
"""

from quicktrain.config import (Config, DataConfig, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               SystemConfig, TrainConfig)

CONFIG = Config(
    name="reference",
    tuned_for="",  # fixed constants, as the baseline has them: never adapted
    data=DataConfig(name="mnist1d", augment="none"),
    model=ModelConfig(name="convbase"),
    optim=OptimConfig(name="adam", lr=1e-2, weight_decay=0.0, no_decay_1d=False),
    schedule=ScheduleConfig(kind="constant"),
    train=TrainConfig(epochs=200, batch_size=100, target=0.94, stop_on_target=False, eval_every=1.25,
                       eval_from=0.0, sequential=True),
    methods=MethodsConfig(label_smoothing=0.0, ema=0.0, resize_from=1.0, tta=False),
    system=SystemConfig(precision="fp32", compile="off", channels_last="off"),
)
