"""Warmup-stable-decay (WSD) for runs whose length is not known in advance: linear warmup, a constant LR, and a
linear decay to 0 that starts when the validation metric stops improving (Hu et al. 2024, MiniCPM; Hägele et al.
2024, "Scaling laws and compute-optimal training beyond fixed training durations": a short final decay matches a
cosine schedule tuned to the length). One-cycle and cosine need the run's length up front; a run that trains "until
the target" has none, which is why the adaptive default (quicktrain.adapt) uses this.

- warmup: `schedule.warmup_epochs`, from `start_frac` of the peak to the peak (`rewarm_to`: from the LR in use to a
  new peak, when the deferred LR range test sets one).
- plateau: the decay starts at a check whose metric has not improved on the best so far by `plateau_delta` (and
  by at least the metric's resolution: 2 validation examples) for `plateau_patience` checks, but not within a
  cycle's first `plateau_after_epochs` (early checks are noisy: on digits' 144 validation examples a half-epoch
  rule fired again and again in the exploration, docs/BENCHMARKS.md); it lasts max(`decay_min_epochs`,
  `decay_frac` x samples so far), rounded up to whole
  check intervals so that it ends at a check.
- after a decay that ends short of the target, the LR re-warms to `rewarm` x the last peak (1: the same peak;
  halving it stalled a transformer in the exploration) and the cycle repeats;
  with no target, the run is over (`exhausted`).
- the budget's end: if no plateau came, the decay is timed to end with the budget.
All state is in `state_dict`, so a resumed run continues the same schedule.
"""

from __future__ import annotations

import math
from typing import Any

from quicktrain.schedules import Schedule


class WarmupStableDecay(Schedule):
    def __init__(self, cfg: Any, total_samples: int, n_train: int, check_every: int, resolution: float = 0.0) -> None:
        sc, self.peak, self.batch_size = cfg.schedule, cfg.optim.lr, cfg.train.batch_size
        self.total, self.check_every = max(1, total_samples), max(1, check_every)
        self.warmup, self.start_frac = sc.warmup_epochs * n_train, sc.start_frac
        # an improvement smaller than the metric's resolution (2 validation examples) is noise, not progress
        self.patience, self.delta, self.rewarm = sc.plateau_patience, max(sc.plateau_delta, resolution), sc.rewarm
        self.settle = sc.plateau_after_epochs * n_train
        self.decay_frac, self.decay_min = sc.decay_frac, sc.decay_min_epochs * n_train
        tail = self._round(max(self.decay_min, sc.decay_frac * self.total / (1 + sc.decay_frac)))
        self.budget_decay = max(0, self.total - tail), max(1, tail)  # used when no plateau came first
        self.scale, self.cycle_start, self.decay_start, self.decay_len = 1.0, 0, -1, 0
        self.warm_from = self.start_frac  # where the current cycle's warmup starts, as a fraction of the peak
        self.best: float | None = None
        self.stale, self.exhausted = 0, False
        self.at = self._at

    def _round(self, samples: float) -> int:
        return int(math.ceil(samples / self.check_every) * self.check_every)

    def factor(self, samples: float) -> float:
        """The LR at `samples` as a fraction of the peak."""
        since = samples - self.cycle_start
        f = self.warm_from + (1 - self.warm_from) * since / self.warmup if since < self.warmup else 1.0
        start, length = (self.decay_start, self.decay_len) if self.decay_start >= 0 else self.budget_decay
        if samples >= start:
            f = min(f, max(0.0, 1.0 - (samples - start) / length))
        return self.scale * f

    def _at(self, progress: float) -> tuple[int, float]:
        return self.batch_size, self.peak * self.factor(progress * self.total)

    def observe(self, value: float, samples: int, higher_is_better: bool, target_open: bool = True) -> None:
        """One validation check at `samples`: start a decay on a plateau, re-warm (or finish) after one."""
        v = value if higher_is_better else -value
        if self.decay_start >= 0:
            if samples >= self.decay_start + self.decay_len:  # the decay is over
                if not target_open:
                    self.exhausted = True
                    return
                self.scale *= self.rewarm
                self.cycle_start, self.decay_start, self.best, self.stale = samples, -1, v, 0
                self.warm_from = self.start_frac
            return
        if self.best is None or v >= self.best + self.delta:
            self.best, self.stale = v if self.best is None else max(v, self.best), 0
            return
        self.stale += 1
        if self.stale >= self.patience and samples - self.cycle_start >= self.settle:
            self.decay_start = samples
            self.decay_len = self._round(max(self.decay_min, self.decay_frac * samples))

    def rewarm_to(self, peak: float, samples: int, warm: bool = True) -> None:
        """A new peak LR from `samples` on (the deferred LR range test's), reached by a warmup from the LR in use
        (a stable phase restarts; a decay in progress is dropped); `warm=False`: at once (a run that starts at
        plain Adam's LR, as plain Adam does)."""
        now = self.peak * self.factor(samples)
        self.peak, self.scale = peak, 1.0
        self.cycle_start, self.decay_start, self.stale = samples, -1, 0
        self.warm_from = min(1.0, now / peak) if peak > 0 and warm else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "cycle_start": self.cycle_start, "decay_start": self.decay_start,
                "decay_len": self.decay_len, "best": self.best, "stale": self.stale, "exhausted": self.exhausted,
                "warm_from": self.warm_from}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.cycle_start = float(state["scale"]), int(state["cycle_start"])
        self.decay_start, self.decay_len = int(state["decay_start"]), int(state["decay_len"])
        self.best, self.stale, self.exhausted = state["best"], int(state["stale"]), bool(state["exhausted"])
        self.warm_from = float(state.get("warm_from", self.start_frac))  # checkpoints before the deferred test
