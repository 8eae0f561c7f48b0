"""Activation checkpointing (quicktrain.memory.checkpointing): full and selective policies give plain gradients,
BN running statistics and dropout masks; state_dict keys are unchanged; fewer bytes are saved (#10)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from quicktrain.config import ModelConfig
from quicktrain.errors import UserError
from quicktrain.memory.checkpointing import Checkpointed, apply_checkpointing, find_blocks, remove_checkpointing
from quicktrain.memory.tracking import saved_bytes
from quicktrain.models import build_model
from quicktrain.models.gpt import gpt
from quicktrain.tasks import next_token_loss

CE = nn.functional.cross_entropy


def revnet(depth: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="revnet1d", depth=depth, channels=(16,)), (1, 40), 10).double()


def step(model: nn.Module, x: Tensor, y: Tensor, loss_fn: object = CE) -> tuple[list[Tensor], list[Tensor]]:
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()  # type: ignore[operator]
    return [p.grad.clone() for p in model.parameters()], [b.clone() for b in model.buffers()]


@pytest.mark.parametrize("policy", ["full", "selective"])
def test_checkpointed_gradients_and_bn_statistics_equal_plain(policy: str) -> None:
    plain = revnet()
    ckpt = copy.deepcopy(plain)
    assert apply_checkpointing(ckpt, policy) == 4  # type: ignore[arg-type]
    x, y = torch.randn(8, 1, 40, dtype=torch.float64), torch.randint(0, 10, (8,))
    (g1, b1), (g2, b2) = step(plain, x, y), step(ckpt, x, y)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(g1, g2))
    assert all(torch.equal(a, b) for a, b in zip(b1, b2))  # updated once, not again on recompute


@pytest.mark.parametrize("policy", ["full", "selective"])
def test_dropout_replays_its_mask_in_the_recompute(policy: str) -> None:
    torch.manual_seed(0)
    plain = gpt(64, 16, layers=2, heads=2, width=32, zero_init=False, dropout=0.3).double()
    ckpt = copy.deepcopy(plain)
    apply_checkpointing(ckpt, policy)  # type: ignore[arg-type]
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    torch.manual_seed(3)
    g1, _ = step(plain, x, y, next_token_loss)
    rng1 = torch.get_rng_state()
    torch.manual_seed(3)
    g2, _ = step(ckpt, x, y, next_token_loss)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(g1, g2))
    assert torch.equal(rng1, torch.get_rng_state())


def test_state_dict_keys_are_unchanged_and_load_both_ways() -> None:
    plain = revnet()
    ckpt = copy.deepcopy(plain)
    apply_checkpointing(ckpt, "full")
    assert list(ckpt.state_dict()) == list(plain.state_dict())
    other = revnet(depth=4)
    apply_checkpointing(other, "full")
    other.load_state_dict(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), plain.state_dict().values()))
    assert remove_checkpointing(other) == 4 and not any(isinstance(m, Checkpointed) for m in other.modules())
    assert apply_checkpointing(ckpt, "selective") == 4  # re-applied: the same slots, the new policy
    assert {m.policy for m in ckpt.modules() if isinstance(m, Checkpointed)} == {"selective"}


def test_find_blocks_on_the_zoo() -> None:
    g = gpt(64, 16, layers=3, heads=2, width=32)
    assert find_blocks(g) == list(g.blocks)
    assert len(find_blocks(revnet(depth=5))) == 5
    fast = build_model(ModelConfig(name="fastnet1d"), (1, 40), 10)
    assert len(find_blocks(fast)) >= 2
    rev = build_model(ModelConfig(name="revnet1d", depth=3, reversible=True), (1, 40), 10)
    assert find_blocks(rev) == []  # reversible blocks keep nothing: not checkpointed
    assert apply_checkpointing(rev, "full") == 0  # no error: a reversible model has what it needs


def test_a_model_without_blocks_is_a_one_line_error() -> None:
    flat = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UserError) as err:
        apply_checkpointing(flat, "full")
    assert "\n" not in str(err.value) and "no repeated blocks" in str(err.value)
    with pytest.raises(UserError, match="memory.checkpoint"):
        apply_checkpointing(revnet(), "sometimes")  # type: ignore[arg-type]


def test_checkpointing_saves_fewer_bytes_for_backward() -> None:
    x, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))

    def act(policy: str) -> int:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="revnet1d", depth=16), (1, 40), 10)
        if policy != "off":
            apply_checkpointing(model, policy)  # type: ignore[arg-type]
        return saved_bytes(lambda: CE(model(x), y), exclude=model)[1]

    off, selective, full = act("off"), act("selective"), act("full")
    assert full * 2 <= off and full <= selective <= off
