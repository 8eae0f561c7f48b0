"""Data: built-in datasets, file-format readers, device-resident batching and on-device augmentation.

`load_data(cfg, data)` returns `Splits` (train/val/test tensors on the CPU); the loop moves the training split to the
device once and draws batches there with `DeviceBatches` (quicktrain.data.batches), augmenting them with the pure
functions of quicktrain.data.augment. Cached datasets live under `cache_dir()` (quicktrain.data.cache).
"""

from quicktrain.data.load import load_data
from quicktrain.data.types import Split, Splits

__all__ = ["Split", "Splits", "load_data"]
