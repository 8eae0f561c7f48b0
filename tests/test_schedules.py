import math

import pytest
import torch

from quicktrain.schedules import batch_size_at, lr_batch_scale, lr_factor


@pytest.mark.parametrize("total", [50, 137])
@pytest.mark.parametrize("pct", [0.2, 0.4])
def test_onecycle_matches_torch_onecyclelr(total: int, pct: float) -> None:
    """torch's OneCycleLR (linear anneal, two phases) is our onecycle with progress = i / (T - 1) and the warmup
    ending at step pct * T - 1, from peak / div_factor to peak / div_factor / final_div_factor."""
    peak, div, final_div = 0.1, 25.0, 1e4
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=total, pct_start=pct,
                                                anneal_strategy="linear", three_phase=False, div_factor=div,
                                                final_div_factor=final_div, cycle_momentum=False)
    warmup = (pct * total - 1) / (total - 1)
    for i in range(total):
        ours = peak * lr_factor(i / (total - 1), "onecycle", warmup, 1 / div, 1 / (div * final_div))
        assert opt.param_groups[0]["lr"] == pytest.approx(ours, rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()


def test_cosine_linear_constant_closed_forms() -> None:
    for p in [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]:
        q = (p - 0.2) / 0.8
        expected = 0.5 * (1 + math.cos(math.pi * q)) if p >= 0.2 else 0.1 + 0.9 * p / 0.2
        assert lr_factor(p, "cosine", 0.2, 0.1, 0.0) == pytest.approx(expected)
        assert lr_factor(p, "linear", 0.3, 0.1, 0.0) == pytest.approx(1 - p)  # linear ignores warmup
        assert lr_factor(p, "constant", 0.3, 0.1, 0.0) == 1.0
    assert lr_factor(-1.0, "onecycle", 0.2, 0.04, 0.0) == pytest.approx(0.04)  # clamped
    assert lr_factor(2.0, "onecycle", 0.2, 0.04, 0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        lr_factor(0.5, "triangular")


def test_cooldown_holds_the_peak_then_decays_over_the_last_fraction() -> None:
    for kind in ("onecycle", "cosine"):
        assert lr_factor(0.05, kind, 0.1, 0.2, 0.0, cooldown=0.5) == pytest.approx(0.6)  # warming up
        assert lr_factor(0.3, kind, 0.1, 0.2, 0.0, cooldown=0.5) == 1.0  # held at the peak
        assert lr_factor(1.0, kind, 0.1, 0.2, 0.0, cooldown=0.5) == pytest.approx(0.0)
    assert lr_factor(0.75, "onecycle", 0.1, 0.2, 0.0, cooldown=0.5) == pytest.approx(0.5)
    assert lr_factor(0.75, "cosine", 0.1, 0.2, 0.0, cooldown=0.5) == pytest.approx(0.5)
    assert lr_factor(0.5, "onecycle", 0.2, 0.1, 0.0, cooldown=0.9) == pytest.approx(lr_factor(0.5, "onecycle", 0.2))
    assert lr_factor(0.6, "linear", 0.0, 0.0, 0.0, cooldown=0.8) == pytest.approx(0.5)


def test_batch_ramp_is_monotone_snapped_and_ends_at_final() -> None:
    sizes = [batch_size_at(i / 100, 128, ramp_from=32, ramp_until=0.5) for i in range(101)]
    assert sizes[0] == 32 and sizes[-1] == 128 and sizes[50] == 128
    assert sizes == sorted(sizes)
    assert all(s % 16 == 0 for s in sizes)
    assert len(set(sizes)) <= 8
    assert batch_size_at(0.1, 128, ramp_from=0) == 128  # off


def test_lr_follows_batch_by_the_stated_rule() -> None:
    assert lr_batch_scale(32, 128, "sqrt") == pytest.approx(0.5)
    assert lr_batch_scale(32, 128, "linear") == pytest.approx(0.25)
    assert lr_batch_scale(32, 128, "none") == 1.0
    assert lr_batch_scale(128, 128, "sqrt") == 1.0
