"""scikit-learn's 8x8 digits (1,797 images): a small ResNet-style net with the fast techniques on, 5 epochs
(validation: 98.2% mean at 4 epochs, 98.9% at 6; benchmarks/grids/digits.py). Chosen on the validation split."""

from quicktrain.config import (Config, DataConfig, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig,
                               SystemConfig, TrainConfig)

CONFIG = Config(
    name="digits",
    tuned_for="digits",  # its constants were chosen on this recipe's model and data
    data=DataConfig(name="digits", augment="auto", shift=1),
    model=ModelConfig(name="resnet2d", channels=(16, 32)),
    optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=5e-4),
    schedule=ScheduleConfig(kind="onecycle", warmup=0.3),
    train=TrainConfig(epochs=5.0, batch_size=64, target=0.97, eval_from=1.0),
    methods=MethodsConfig(label_smoothing=0.0, tta=True),
    system=SystemConfig(precision="auto", compile="auto", channels_last="auto"),
)
