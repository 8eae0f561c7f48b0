"""Schedules as pure functions of progress in [0, 1], where progress = samples seen / samples in the budget.

One clock drives everything, so a batch-size ramp or a changed epoch count never shifts the LR shape.

- `lr_factor`: warmup then one-cycle decay (Smith & Topin 2018, "Super-convergence"; linear warmup as in Goyal et al.
  2017), cosine (Loshchilov & Hutter 2017), linear decay, or constant. Multiplies the peak LR.
- `batch_size_at`: a batch-size ramp (Smith et al. 2018, "Don't decay the learning rate, increase the batch size").
- `lr_batch_scale`: how the LR follows the batch size. `sqrt` keeps the gradient-noise scale for Adam-type optimizers
  (Hoffer et al. 2017; Malladi et al. 2022, "On the SDEs and scaling rules for adaptive gradient algorithms");
  `linear` is Goyal et al.'s rule for SGD; `lr_rule` picks one by optimizer for `auto`.
"""

from __future__ import annotations

import math
from typing import Any


def lr_factor(progress: float, kind: str, warmup: float = 0.0, start_frac: float = 0.0, end_frac: float = 0.0,
              cooldown: float = 1.0) -> float:
    """LR as a fraction of the peak at `progress`.

    onecycle: linear rise from start_frac to 1 over [0, warmup], then linear fall to end_frac at 1.
    cosine:   the same warmup, then a half-cosine fall to end_frac.
    linear:   no warmup, linear fall from 1 to end_frac.
    constant: 1 throughout.
    `cooldown` < 1 (not constant): the fall spans only the last `cooldown` of training, the LR holding at the peak
    from the warmup's end until then: warmup-stable-decay for a known length (modded-nanogpt's speedrun holds its
    LR, then decays linearly over the last ~40-60%; Hägele et al. 2024).
    """
    p = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return 1.0
    if kind == "linear":
        warmup = 0.0
    elif p < warmup:
        return start_frac + (1.0 - start_frac) * p / warmup
    warmup = max(warmup, 1.0 - cooldown)
    if p < warmup:
        return 1.0
    q = (p - warmup) / (1.0 - warmup)
    if kind == "cosine":
        return end_frac + (1.0 - end_frac) * 0.5 * (1.0 + math.cos(math.pi * q))
    if kind in ("onecycle", "linear"):
        return 1.0 + (end_frac - 1.0) * q
    raise ValueError(f"unknown schedule kind {kind!r}")


def batch_size_at(progress: float, final: int, ramp_from: int = 0, ramp_until: float = 0.5, multiple: int = 1) -> int:
    """Batch size at `progress`: linear from ramp_from to final over [0, ramp_until], then final.

    Sizes snap down to a multiple of final // 8 so that only a handful of shapes occur (each new shape costs a
    kernel selection on CUDA and a recompile under torch.compile), and to a multiple of `multiple` (the ranks of a
    data-parallel run, which share every batch equally). ramp_from = 0 turns the ramp off.
    """
    if ramp_from <= 0 or ramp_from >= final or progress >= ramp_until:
        return final
    raw = ramp_from + (final - ramp_from) * max(progress, 0.0) / ramp_until
    grain = max(1, final // 8)
    grain = -(-grain // multiple) * multiple
    low = -(-ramp_from // multiple) * multiple
    return max(low, min(final, int(raw) // grain * grain))


def lr_rule(cfg: Any) -> str:
    """The LR-batch rule a config uses: its own, or for `auto` linear for SGD-type optimizers (Goyal et al. 2017)
    and the square root for the Adam family and Muon (Malladi et al. 2022)."""
    rule = cfg.schedule.lr_batch_rule
    if rule != "auto":
        return rule
    return "linear" if cfg.optim.name in ("sgd", "lars") else "sqrt"


def lr_batch_scale(batch_size: int, reference: int, rule: str) -> float:
    """Factor for the LR at `batch_size` when the peak LR was set for `reference` examples per step."""
    if rule == "none" or batch_size == reference:
        return 1.0
    ratio = batch_size / reference
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "linear":
        return ratio
    raise ValueError(f"unknown lr_batch_rule {rule!r}")


class Schedule:
    """progress -> (batch size, LR) as `at(progress)`, the one call the loop makes each step; `observe` lets a
    schedule react to each validation check (a no-op here). `peak` is the peak LR (the LR finder may set it).
    With `noise` (schedule.batch_ramp=noise) the batch is the measured noise scale's (quicktrain.noise)."""

    def __init__(self, cfg: Any, noise: Any = None, multiple: int = 1) -> None:
        sc, self.peak, final = cfg.schedule, cfg.optim.lr, cfg.train.batch_size
        rule = lr_rule(cfg)
        if sc.kind == "constant" and sc.batch_ramp_from <= 0:  # a plain run pays nothing for the machinery
            self.at = lambda progress: (final, self.peak)
            return
        follow = noise if sc.batch_ramp == "noise" else None

        def at(progress: float) -> tuple[int, float]:
            if follow is not None:
                bs = follow.batch_for(-(-sc.batch_ramp_from // multiple) * multiple, final, multiple)
            else:
                bs = batch_size_at(progress, final, sc.batch_ramp_from, sc.batch_ramp_until, multiple)
            factor = lr_factor(progress, sc.kind, sc.warmup, sc.start_frac, sc.end_frac, sc.cooldown)
            return bs, self.peak * factor * lr_batch_scale(bs, final, rule)

        self.at = at

    exhausted = False  # True once a schedule has nothing more to give (wsd: its decay ended and there is no target)

    def rewarm_to(self, peak: float, samples: int, warm: bool = True) -> None:
        """A new peak LR from now on (warmup-stable-decay warms up to it; a schedule of progress just takes it)."""
        self.peak = peak

    def observe(self, value: float, samples: int, higher_is_better: bool, target_open: bool = True) -> None:
        return None


def make_schedule(cfg: Any, total_samples: int = 0, n_train: int = 1, check_every: int = 1,
                  resolution: float = 0.0, noise: Any = None, multiple: int = 1) -> Schedule:
    """The schedule of a Config. The budget in samples, the training split's size and the samples between checks
    and the metric's resolution are needed by the warmup-stable-decay kind only (quicktrain.wsd); `noise` by a
    noise-driven batch ramp; `multiple` (the ranks) snaps batch sizes."""
    if cfg.schedule.kind == "wsd":
        from quicktrain.wsd import WarmupStableDecay

        return WarmupStableDecay(cfg, total_samples, n_train, check_every, resolution)
    return Schedule(cfg, noise, multiple)
