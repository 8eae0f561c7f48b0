"""The progress bar is negligible per step, draws only on a terminal, and shows the latest validation accuracy."""

from __future__ import annotations

import io
import time

from rich.console import Console

from quicktrain.progress import TrainProgress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _time_updates(bar: TrainProgress, n: int = 10_000) -> float:
    t0 = time.perf_counter()
    for step in range(1, n + 1):
        bar.update(step, val_acc=0.5)
    return time.perf_counter() - t0


def test_not_a_terminal_draws_nothing_and_costs_nothing() -> None:
    stream = io.StringIO()
    bar = TrainProgress(10_000, enabled=True, stream=stream)
    assert not bar.enabled
    seconds = _time_updates(bar)
    bar.update(10_000, val_acc=0.91, loss=0.3)
    bar.close()
    assert seconds < 0.05, f"10k updates took {seconds * 1e3:.1f} ms"
    assert stream.getvalue() == ""


def test_disabled_draws_nothing_even_on_a_terminal() -> None:
    stream = _Tty()
    with TrainProgress(100, enabled=False, stream=stream) as bar:
        for step in range(1, 101):
            bar.update(step, val_acc=0.9)
    assert stream.getvalue() == ""


def test_forced_terminal_is_cheap_and_shows_accuracy() -> None:
    out = io.StringIO()
    bar = TrainProgress(10_000, description="mnist1d", stream=Console(force_terminal=True, file=out, width=120))
    assert bar.enabled
    seconds = _time_updates(bar)
    bar.update(10_000, val_acc=0.9123, loss=0.2468)
    bar.close()
    bar.close()  # idempotent
    assert seconds < 0.3, f"10k updates took {seconds * 1e3:.1f} ms"
    text = out.getvalue()
    assert "mnist1d" in text and "91.23%" in text and "0.2468" in text and "10000/10000" in text


def test_refreshes_at_most_about_ten_times_a_second() -> None:
    out = io.StringIO()
    bar = TrainProgress(1_000_000, stream=Console(force_terminal=True, file=out, width=120))
    draws = 0
    original = bar._draw

    def counting_draw() -> None:
        nonlocal draws
        draws += 1
        original()

    bar._draw = counting_draw  # type: ignore[method-assign]
    t0 = time.monotonic()
    step = 0
    while time.monotonic() - t0 < 0.35:
        step += 1
        bar.update(step)
    bar.close()
    assert 2 <= draws <= 6  # ~0.35 s at 10 Hz, plus the first draw and the one at close


def test_plain_tty_stream_and_more_steps_than_estimated() -> None:
    stream = _Tty()
    with TrainProgress(5, stream=stream) as bar:
        assert bar.enabled
        for step in range(1, 9):  # a batch-size ramp can take more steps than the estimate
            bar.update(step, val_acc=0.5)
    assert "8/8" in stream.getvalue()
