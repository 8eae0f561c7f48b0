import pytest
import torch
from torch import nn

from quicktrain.config import OptimConfig
from quicktrain.optim import DecoupledSGD, make_optimizer, param_groups


class Hand(nn.Module):
    """Known parameter set: conv weight (2-d+), conv bias, BN weight and bias, linear weight and bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)  # weight 4x1x3 (decay), bias 4 (no decay)
        self.bn = nn.BatchNorm1d(4)  # weight 4, bias 4 (no decay)
        self.fc = nn.Linear(4, 2)  # weight 2x4 (decay), bias 2 (no decay)
        self.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)  # excluded


def test_param_groups_match_a_hand_count() -> None:
    model = Hand()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(p.numel() for p in decay["params"]) == [8, 12]
    assert sorted(p.numel() for p in no_decay["params"]) == [2, 4, 4, 4]
    (everything,) = param_groups(model, 0.1, no_decay_1d=False)
    assert len(everything["params"]) == 6


def _zero_grad_step(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_decay_is_decoupled_only_on_decayed_params(name: str) -> None:
    """With a zero gradient, a decoupled optimizer shrinks decayed weights by exactly (1 - lr * wd) and leaves
    undecayed ones alone; coupled L2 (Adam) would instead feed the decay through its moment estimates."""
    torch.manual_seed(0)
    model = Hand()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, OptimConfig(name=name, lr=0.1, weight_decay=0.5), torch.device("cpu"))
    _zero_grad_step(opt, [p for p in model.parameters() if p.requires_grad])
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        factor = 1 - 0.1 * 0.5 if p.ndim >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor)


def test_decoupled_sgd_equals_sgd_plus_explicit_shrink() -> None:
    torch.manual_seed(0)
    w1 = torch.randn(5, 3, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    ours = DecoupledSGD([{"params": [w1], "weight_decay": 0.1}], lr=0.2, momentum=0.9)
    plain = torch.optim.SGD([w2], lr=0.2, momentum=0.9, nesterov=True)
    for step in range(3):
        g = torch.randn(5, 3, generator=torch.Generator().manual_seed(step))
        w1.grad, w2.grad = g.clone(), g.clone()
        ours.step()
        with torch.no_grad():
            w2.mul_(1 - 0.2 * 0.1)
        plain.step()
    torch.testing.assert_close(w1, w2)


def test_adam_is_coupled_and_adamw_fused_on_cpu() -> None:
    model = Hand()
    adamw = make_optimizer(model, OptimConfig(name="adamw"), torch.device("cpu"))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["fused"]
    adam = make_optimizer(model, OptimConfig(name="adam", weight_decay=0.1), torch.device("cpu"))
    assert type(adam) is torch.optim.Adam
