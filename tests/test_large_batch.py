"""LARS and LAMB (quicktrain.large_batch): each against a reference written here in plain tensor math, the 1-d rule
through make_optimizer, the zero-norm guards, exact resume, and a run through the library with each."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from support import steps
from torch import Tensor, nn

from quicktrain.cli import main
from quicktrain.config import Config, OptimConfig, apply_overrides
from quicktrain.errors import ConfigError
from quicktrain.large_batch import LAMB, LARS
from quicktrain.loop import train
from quicktrain.methods.registry import TECHNIQUES
from quicktrain.optim import make_optimizer
from quicktrain.state import flatten, unflatten

CPU = torch.device("cpu")
F64 = torch.float64


def two_layer(dtype: torch.dtype = F64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def data(dtype: torch.dtype = F64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g, dtype=dtype), torch.randn(16, 3, generator=g, dtype=dtype)


def loss_of(params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """The two-layer net's loss written out (weights and biases in model.parameters() order)."""
    w1, b1, w2, b2 = params
    return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()


def model_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def split(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    params = list(model.parameters())
    return [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]


# ---------------------------------------------------------------------------------------------------------------------
# References: one tensor at a time, as the papers write them


def lars_reference(w: Tensor, g: Tensor, buf: Tensor | None, *, lr: float, momentum: float, wd: float, eta: float,
                   eps: float, adapt: bool, nesterov: bool) -> tuple[Tensor, Tensor]:
    d = g + wd * w
    if adapt:
        wn, gn = float(w.norm()), float(g.norm())
        local = eta * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else 1.0
        d = local * d
    buf = d if buf is None else momentum * buf + d
    v = d + momentum * buf if nesterov else buf
    return w - lr * v, buf


def lamb_reference(w: Tensor, g: Tensor, m: Tensor, v: Tensor, t: int, *, lr: float, betas: tuple[float, float],
                   eps: float, wd: float, adapt: bool, max_trust: float | None) -> tuple[Tensor, Tensor, Tensor]:
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    r = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps) + wd * w
    trust = 1.0
    if adapt:
        wn, rn = float(w.norm()), float(r.norm())
        if wn > 0 and rn > 0:
            trust = wn / rn if max_trust is None else min(wn / rn, max_trust)
    return w - lr * trust * r, m, v


def reference_run(update: Any, state: Any, params: list[Tensor], options: list[dict[str, Any]], n: int) -> list[Tensor]:
    """n steps of `update` on float64 copies of params; options[i] are the keyword options of params[i]."""
    x, y = data()
    ws = [p.detach().clone() for p in params]
    states = [state(w) for w in ws]
    for t in range(1, n + 1):
        leaves = [w.clone().requires_grad_(True) for w in ws]
        grads = torch.autograd.grad(loss_of(leaves, x, y), leaves)
        for i, (w, g) in enumerate(zip(ws, grads)):
            ws[i], states[i] = update(w, g, states[i], t, options[i])
    return ws


def run_lars(w: Tensor, g: Tensor, buf: Any, t: int, o: dict[str, Any]) -> tuple[Tensor, Any]:
    return lars_reference(w, g, buf, **o)


def run_lamb(w: Tensor, g: Tensor, mv: Any, t: int, o: dict[str, Any]) -> tuple[Tensor, Any]:
    w, m, v = lamb_reference(w, g, *mv, t, **o)
    return w, (m, v)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_the_reference_for_three_steps(nesterov: bool) -> None:
    model = two_layer()
    weights, biases = split(model)
    start = [p.detach().clone() for p in model.parameters()]
    common = {"lr": 0.5, "momentum": 0.9, "nesterov": nesterov, "eta": 0.02, "eps": 1e-9}
    opt = LARS([{"params": weights, "weight_decay": 0.01, "adapt": True},
                {"params": biases, "weight_decay": 0.05, "adapt": False}],  # plain momentum SGD with L2
               lr=0.5, momentum=0.9, nesterov=nesterov, trust_coefficient=0.02, eps=1e-9)
    x, y = data()
    for _ in range(3):
        model_step(model, opt, x, y)
    options = [{**common, "wd": 0.01, "adapt": True} if p.ndim >= 2 else {**common, "wd": 0.05, "adapt": False}
               for p in start]
    expected = reference_run(run_lars, lambda w: None, start, options, 3)
    for p, e, s in zip(model.parameters(), expected, start):
        assert not torch.allclose(p, s)  # it moved
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("max_trust", [10.0, 0.1, None])  # 0.1 clamps every layer's ratio here
def test_lamb_matches_the_reference_for_three_steps(max_trust: float | None) -> None:
    model = two_layer()
    weights, biases = split(model)
    start = [p.detach().clone() for p in model.parameters()]
    common = {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-6, "max_trust": max_trust}
    opt = LAMB([{"params": weights, "weight_decay": 0.01, "adapt": True},
                {"params": biases, "weight_decay": 0.05, "adapt": False}],  # AdamW
               lr=0.01, betas=(0.9, 0.99), eps=1e-6, max_trust=max_trust)
    x, y = data()
    for _ in range(3):
        model_step(model, opt, x, y)
    options = [{**common, "wd": 0.01, "adapt": True} if p.ndim >= 2 else {**common, "wd": 0.05, "adapt": False}
               for p in start]
    expected = reference_run(run_lamb, lambda w: (torch.zeros_like(w), torch.zeros_like(w)), start, options, 3)
    for p, e, s in zip(model.parameters(), expected, start):
        assert not torch.allclose(p, s)
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)
    assert all(opt.state[p]["step"] == 3 for p in model.parameters())


def test_unadapted_groups_are_torch_sgd_and_adamw() -> None:
    """adapt=False: LARS is torch's momentum SGD with coupled decay, LAMB is torch's AdamW (a second reference)."""
    x, y = data()
    for ours, theirs in (
        (lambda ps: LARS(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, adapt=False),
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        (lambda ps: LAMB(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, adapt=False),
         lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
    ):
        a, b = two_layer(), two_layer()
        opt_a, opt_b = ours(a.parameters()), theirs(b.parameters())
        for _ in range(3):
            model_step(a, opt_a, x, y)
            model_step(b, opt_b, x, y)
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# The 1-d rule and the guards


class Normed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 5)
        self.norm = nn.LayerNorm(5)
        self.bn = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.bn(self.norm(self.fc(x))))


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_1d_params_get_trust_one_and_no_decay_through_make_optimizer(name: str) -> None:
    model = Normed().double()
    opt = make_optimizer(model, OptimConfig(name=name, lr=0.1, weight_decay=0.5, momentum=0.9), CPU)
    assert isinstance(opt, LARS if name == "lars" else LAMB)
    decayed, plain = opt.param_groups
    assert decayed["adapt"] and decayed["weight_decay"] == 0.5 and all(p.ndim >= 2 for p in decayed["params"])
    assert not plain["adapt"] and plain["weight_decay"] == 0.0 and len(plain["params"]) == 6  # biases, LN and BN gains
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    opt.step()
    for n, p in model.named_parameters():
        g = grads[n]
        if p.ndim < 2:  # first step: momentum buffer = g (lars); r = g / (|g| + eps) (lamb), both times 1
            step = g if name == "lars" else g / (g.abs() + opt.defaults["eps"])
            torch.testing.assert_close(p.detach(), before[n] - 0.1 * step, rtol=1e-12, atol=1e-12)
        else:  # adapted: lars scales the decayed gradient by eta ||w|| / (||g|| + wd ||w||), lamb's step is lr ||w||
            w, wn = before[n], before[n].norm()
            if name == "lars":
                expected = w - 0.1 * 0.001 * wn / (g.norm() + 0.5 * wn + 1e-9) * (g + 0.5 * w)
                torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-12)
            else:
                assert math.isclose(float((w - p.detach()).norm()), 0.1 * float(wn), rel_tol=1e-9)
    # no_decay_1d off: one group, every parameter adapted and decayed
    (group,) = make_optimizer(model, OptimConfig(name=name, weight_decay=0.5, no_decay_1d=False), CPU).param_groups
    assert group["adapt"] and group["weight_decay"] == 0.5 and len(group["params"]) == 8
    # a model of gains only: its one group is the undecayed, unadapted one
    (group,) = make_optimizer(nn.LayerNorm(3), OptimConfig(name=name, weight_decay=0.5), CPU).param_groups
    assert not group["adapt"] and group["weight_decay"] == 0.0


@pytest.mark.parametrize("opt_cls", [LARS, LAMB])
def test_zero_weights_or_zero_gradient_give_a_finite_update_with_trust_one(opt_cls: type) -> None:
    g = torch.tensor([[0.3, -0.4], [1.2, 0.0]], dtype=F64)
    # zero weights: trust 1, so the first step is the plain momentum-SGD / Adam step
    w = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    opt = opt_cls([w], lr=0.1, weight_decay=0.01)
    w.grad = g.clone()
    opt.step()
    plain = g if opt_cls is LARS else g / (g.abs() + opt.defaults["eps"])
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.detach(), -0.1 * plain, rtol=1e-12, atol=1e-12)
    # zero gradient: trust 1; LARS moves by its decay alone (d = wd * w), LAMB (no decay) not at all
    w0 = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=F64)
    w = w0.clone().requires_grad_(True)
    wd = 0.01 if opt_cls is LARS else 0.0
    opt = opt_cls([w], lr=0.1, weight_decay=wd)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * wd * w0, rtol=1e-12, atol=1e-12)
    # both zero
    w = torch.zeros(3, 3, requires_grad=True)
    opt = opt_cls([w], lr=0.1)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(w.detach(), torch.zeros(3, 3))


@pytest.mark.parametrize("opt_cls", [LARS, LAMB])
def test_params_without_a_gradient_are_skipped(opt_cls: type) -> None:
    a, b = torch.ones(2, 2, requires_grad=True), torch.ones(2, 2, requires_grad=True)
    opt = opt_cls([a, b], lr=0.1)
    a.grad = torch.ones(2, 2)
    opt.step()
    assert not torch.equal(a.detach(), torch.ones(2, 2)) and torch.equal(b.detach(), torch.ones(2, 2))
    assert b not in opt.state


# ---------------------------------------------------------------------------------------------------------------------
# Exact resume


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_state_dict_round_trip_resumes_exactly(name: str) -> None:
    cfg = OptimConfig(name=name, lr=0.5 if name == "lars" else 0.01, weight_decay=0.01)
    x, y = data(torch.float32)
    whole = Normed()
    first = copy.deepcopy(whole)
    whole_opt = make_optimizer(whole, cfg, CPU)
    for _ in range(4):
        model_step(whole, whole_opt, x, y)

    opt = make_optimizer(first, cfg, CPU)
    for _ in range(2):
        model_step(first, opt, x, y)
    tensors: dict[str, Tensor] = {}
    saved = flatten({"model": first.state_dict(), "optim": opt.state_dict()}, tensors)  # as checkpoints store it
    restored = unflatten(saved, {k: v.clone() for k, v in tensors.items()})
    torch.manual_seed(123)
    second = Normed()  # other weights, replaced by the saved ones
    second.load_state_dict(restored["model"])
    opt2 = make_optimizer(second, cfg, CPU)
    opt2.load_state_dict(restored["optim"])
    for _ in range(2):
        model_step(second, opt2, x, y)
    for (n, p), q in zip(second.named_parameters(), whole.parameters()):
        assert torch.equal(p, q), n


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_cuda_matches_cpu_and_resumes_from_a_cpu_state(name: str) -> None:
    cfg = OptimConfig(name=name, lr=0.5 if name == "lars" else 0.01, weight_decay=0.01)
    cuda = torch.device("cuda")
    x, y = data()
    cpu_model = Normed().double()
    gpu_model = copy.deepcopy(cpu_model).to(cuda)
    cpu_opt, gpu_opt = make_optimizer(cpu_model, cfg, CPU), make_optimizer(gpu_model, cfg, cuda)
    for _ in range(2):
        model_step(cpu_model, cpu_opt, x, y)
        model_step(gpu_model, gpu_opt, x.to(cuda), y.to(cuda))
    resumed = copy.deepcopy(cpu_model).to(cuda)  # a CPU checkpoint resumed on the GPU
    resumed_opt = make_optimizer(resumed, cfg, cuda)
    resumed_opt.load_state_dict(copy.deepcopy(cpu_opt.state_dict()))
    for _ in range(2):
        model_step(cpu_model, cpu_opt, x, y)
        model_step(gpu_model, gpu_opt, x.to(cuda), y.to(cuda))
        model_step(resumed, resumed_opt, x.to(cuda), y.to(cuda))
    for p, q, r in zip(cpu_model.parameters(), gpu_model.parameters(), resumed.parameters()):
        torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(r.detach().cpu(), p.detach(), rtol=1e-9, atol=1e-12)
    moved = [v for s in resumed_opt.state.values() for v in s.values() if torch.is_tensor(v)]
    assert moved and all(v.device.type == "cuda" for v in moved)


# ---------------------------------------------------------------------------------------------------------------------
# Through the library


@pytest.mark.parametrize("name, lr", [("lars", 2.0), ("lamb", 1e-2)])
def test_train_runs_with_each(name: str, lr: float, tiny_cfg: Config) -> None:
    cfg = apply_overrides(tiny_cfg, {"optim.name": name, "optim.lr": lr, "optim.weight_decay": 5e-4})
    result = train(steps(cfg, 3), progress=False)
    assert result.steps == 3
    assert all(math.isfinite(m["train_loss"]) for m in result.metrics if "train_loss" in m)


def test_bad_trust_coefficient_is_a_config_error_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"optim\.trust_coefficient: must be > 0"):
        apply_overrides(Config(), ["--optim.trust_coefficient=0"])
    assert main(["run", "mnist1d", "--optim.name=lars", "--optim.trust_coefficient=0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "optim.trust_coefficient" in err and err.count("\n") == 1


def test_weight_decay_ablation_row_keeps_lars_and_lamb() -> None:
    (row,) = [t for t in TECHNIQUES if t.key == "optim.weight_decay"]
    for name in ("lars", "lamb"):
        on = apply_overrides(Config(), {"optim.name": name, "optim.weight_decay": 1e-3})
        assert row.variant(on) == (f"− weight decay ({name})", {"optim.weight_decay": 0.0})
        off = apply_overrides(on, row.off_for(on))
        assert off.optim.name == name and not row.is_on(off)
        assert row.variant(off) == (f"+ weight decay ({name}, 0.0005)", {"optim.weight_decay": 5e-4})
