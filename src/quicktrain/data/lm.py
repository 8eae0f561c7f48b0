"""Language-model data: token shards (or the built-in corpus) -> `TokenSplits`, and the batch source that trains on
them, resident in memory when it fits and streamed from disk when it does not.

Splits: train is the training shards, read window by window (quicktrain.data.tokens); the validation file's first
`data.eval_tokens` tokens, cut into fixed windows, are the validation split (stopping, targets, tuning); the next
`data.eval_tokens` of it are the test split, which only reports. Both are small tensors by construction, so evaluation
needs no streaming. Data with too little validation text for two windows is refused (one line naming the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quicktrain.config import DataConfig
from quicktrain.data.types import Split
from quicktrain.errors import DataError

_MB = 2**20


@dataclass
class TokenSplits:
    """The splits of a next-token task. `sample` holds the first training windows, for shape checks, the `auto`
    race and FLOP counting; the training stream itself is `data.train`."""

    data: Any  # quicktrain.data.tokens.TokenData
    val: Split
    test: Split
    sample: Split
    context: int
    name: str
    fingerprint: str
    bytes_per_token: float
    source: DataConfig
    augment: str = "none"

    @property
    def vocab_size(self) -> int:
        return int(self.data.vocab_size)

    @property
    def num_classes(self) -> int:
        return self.vocab_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.context,)

    @property
    def train_tokens(self) -> int:
        return sum(len(f) for f in self.data.train)

    @property
    def train_mb(self) -> float:
        return sum(f.nbytes for f in self.data.train) / _MB


def load_lm(cfg: DataConfig, sample: int = 64) -> TokenSplits:
    """The token splits `cfg` describes: `data.path` (a nanoGPT or llm.c shard directory) when set, else the
    built-in corpus (`stdlib`: the Python standard library's source, bytes). `sample`: training windows kept in
    memory for shape checks, the `auto` race and FLOP counting."""
    from quicktrain.data.corpus import stdlib_corpus
    from quicktrain.data.tokens import eval_windows, open_tokens

    path = Path(cfg.path).expanduser() if cfg.path else stdlib_corpus()
    data = open_tokens(path)
    windows = eval_windows(data.val, cfg.context, 2 * cfg.eval_tokens)
    if len(windows) < 2:
        raise DataError(f"{_first(data.val)}: too little validation data for context {cfg.context} "
                        f"(need 2 windows of {cfg.context + 1} tokens, one for validation and one for test)")
    half = min(len(windows) // 2, max(1, cfg.eval_tokens // cfg.context))
    val, test = windows[:half], windows[half : 2 * half]
    examples = eval_windows(data.train, cfg.context, sample * cfg.context)
    bpt = float(getattr(data, "bytes_per_token", 0.0) or 0.0)
    name = "stdlib" if not cfg.path else Path(cfg.path).name
    return TokenSplits(data, _split(val), _split(test), _split(examples), cfg.context, name, data.fingerprint, bpt, cfg)


def _split(windows: torch.Tensor) -> Split:
    return Split(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())


def _first(files: list[Any]) -> str:
    return str(getattr(files[0], "path", files[0])) if files else "validation split"


def lm_batches(splits: TokenSplits, cfg: DataConfig, seed: int, device: torch.device,
               say: Any = lambda _m: None) -> tuple[Any, str]:
    """The training batch source: all training tokens resident on the device when they fit in
    `data.resident_max_mb` (and `data.stream` is not on), else windows streamed from the files. Both yield the same
    batches for the same seed (one order function), so the choice changes speed, never numbers. Returns the source
    and which path was taken ("resident" | "streamed"), which the result records."""
    from quicktrain.data.tokens import ResidentWindows, TokenWindows

    stream = cfg.stream == "on" or (cfg.stream == "auto" and splits.train_mb > cfg.resident_max_mb)
    if stream:
        say(f"data: streaming {splits.train_tokens:,} training tokens ({splits.train_mb:.0f} MB) from "
            f"{len(splits.data.train)} file(s), window by window")
        return TokenWindows(splits.data.train, cfg.context, seed, device), "streamed"
    say(f"data: {splits.train_tokens:,} training tokens ({splits.train_mb:.0f} MB) resident on {device.type}")
    return ResidentWindows(splits.data.train, cfg.context, seed, device), "resident"
