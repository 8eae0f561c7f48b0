"""A trained next-token run, for `quicktrain sample`: its model rebuilt from config.json with the weights of its
newest valid checkpoint (verified before anything is parsed; quicktrain.checkpoint), and its data's text codec
(quicktrain.data.corpus.encode / decode: bytes, nanoGPT's meta.pkl, or the BPE tokenizer.json of `prepare-text`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from quicktrain.checkpoint import read_latest
from quicktrain.config import Config, check_config, from_dict
from quicktrain.errors import UserError
from quicktrain.state import unflatten


def run_config(run_dir: Path) -> Config:
    """The config of the run in `run_dir`; a one-line UserError if it is not a next-token run directory."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a quicktrain run directory (no config.json)")
    try:
        cfg = check_config(from_dict(json.loads(path.read_text())))
    except ValueError:
        raise UserError(f"{path} is not valid JSON") from None
    if not cfg.data.language:
        raise UserError(f"{run_dir} is a classification run; `sample` needs a next-token run (data.name=stdlib/tokens)")
    return cfg


def data_dir(cfg: Config) -> Path:
    from quicktrain.data.corpus import stdlib_corpus

    return Path(cfg.data.path).expanduser() if cfg.data.path else stdlib_corpus()


def load_run_model(run_dir: Path, cfg: Config, vocab_size: int, warn: Callable[[str], None]) -> nn.Module:
    """The run's model with the weights of its newest valid checkpoint, in eval mode on the CPU."""
    from quicktrain.models import build_model

    found = read_latest(Path(run_dir) / "checkpoints", warn)
    if found is None:
        raise UserError(f"{run_dir} has no checkpoint to sample from (the run wrote none yet)")
    _, tensors, meta = found
    state = unflatten(meta["state"], tensors)
    model = build_model(cfg.model, (cfg.data.context,), vocab_size)
    model.load_state_dict(state["model"])
    return model.eval()


def sample_text(run_dir: Path, prompt: str, tokens: int, temperature: float, top_k: int | None, seed: int,
                warn: Callable[[str], None]) -> str:
    """`tokens` new tokens after `prompt` from the run's model, decoded to text (prompt included)."""
    from quicktrain.data.corpus import decode, encode
    from quicktrain.data.tokens import open_tokens
    from quicktrain.sample import generate

    cfg = run_config(run_dir)
    directory = data_dir(cfg)
    vocab = open_tokens(directory).vocab_size
    model = load_run_model(run_dir, cfg, vocab, warn)
    ids = encode(prompt, directory) or [0]
    if max(ids) >= vocab:
        raise UserError(f"the prompt has a token id {max(ids)} >= the model's vocabulary {vocab}")
    gen = torch.Generator().manual_seed(seed)
    out = generate(model, torch.tensor([ids]), tokens, temperature=temperature, top_k=top_k, generator=gen)
    return decode(out[0].tolist(), directory)
