"""quicktrain: train neural networks to a target accuracy in the least wall-time and money, and measure it.

    import quicktrain as qt
    result = qt.train(qt.recipes.mnist1d)                  # fast defaults on a built-in task
    result = qt.train(cfg, model=my_net, data=(x, y))      # any nn.Module, any tensors or Dataset
    print(result.seconds_to_target, result.test_acc, result.cost_usd_on_demand)
"""

from quicktrain import recipes
from quicktrain.checkpoint import CheckpointWriteError, CorruptCheckpoint
from quicktrain.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    MemoryConfig,
    MethodsConfig,
    Mnist1dArgs,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    SystemConfig,
    TrainConfig,
    apply_overrides,
)
from quicktrain.errors import ConfigError, DataError, Preempted, TrainingDiverged, UserError
from quicktrain.loop import evaluate, train
from quicktrain.lr_find import LRFindResult, find_lr
from quicktrain.optim import make_optimizer, param_groups
from quicktrain.recipes import load_recipe
from quicktrain.result import Result
from quicktrain.schedules import batch_size_at, lr_batch_scale, lr_factor
from quicktrain.state import restore_state, save_state, weights_sha256

__version__ = "0.1.0"


def tune(*args, **kwargs):  # type: ignore[no-untyped-def]
    """quicktrain.tuning.tune (imported on first use: Optuna is a heavy import)."""
    from quicktrain.tuning import tune as _tune

    return _tune(*args, **kwargs)


__all__ = [
    "CheckpointConfig",
    "CheckpointWriteError",
    "Config",
    "CorruptCheckpoint",
    "LRFindResult",
    "ConfigError",
    "DataConfig",
    "DataError",
    "MemoryConfig",
    "MethodsConfig",
    "Mnist1dArgs",
    "ModelConfig",
    "OptimConfig",
    "Preempted",
    "Result",
    "ScheduleConfig",
    "SystemConfig",
    "TrainConfig",
    "TrainingDiverged",
    "UserError",
    "apply_overrides",
    "batch_size_at",
    "evaluate",
    "find_lr",
    "load_recipe",
    "lr_batch_scale",
    "lr_factor",
    "make_optimizer",
    "param_groups",
    "recipes",
    "restore_state",
    "save_state",
    "train",
    "tune",
    "weights_sha256",
]

