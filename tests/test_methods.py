import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quicktrain.methods import EMA, ema_update_, resize, size_at, smooth_cross_entropy, tta_logits, tta_views
from quicktrain.methods.ema import warmed_decay
from quicktrain.methods.label_smoothing import loss_fn
from quicktrain.methods.progressive_resize import ProgressiveResize
from quicktrain.methods.tta import shift_1d, translate_2d


@pytest.mark.parametrize("s", [0.0, 0.05, 0.1, 0.3])
def test_label_smoothing_matches_torch(s: float) -> None:
    logits, target = torch.randn(64, 10, dtype=torch.float64), torch.randint(0, 10, (64,))
    ref = F.cross_entropy(logits, target, label_smoothing=s)
    torch.testing.assert_close(smooth_cross_entropy(logits, target, s).double(), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss_fn(s)(logits.float(), target), ref.float(), rtol=1e-5, atol=1e-5)


def test_ema_update_closed_form_and_warmup() -> None:
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    ema_update_(avg, cur, 0.9)
    torch.testing.assert_close(avg[0], torch.full((3,), 0.1))
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 10**6) == 0.999


def test_ema_tracks_the_model_and_copies_bn_statistics() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.5, every=1)
    start = copy.deepcopy(ema.model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model(torch.randn(8, 2))  # updates BN running stats
    ema.after_step(model, 1)
    d = warmed_decay(0.5, 0)
    torch.testing.assert_close(ema.model[0].weight, start["0.weight"] * d + model[0].weight * (1 - d))
    torch.testing.assert_close(ema.model[1].running_mean, model[1].running_mean)
    ema.after_step(model, 3)  # every=1: updates again
    assert ema.updates == 2
    state = ema.state_dict()
    other = EMA(model, 0.5)
    other.load_state_dict(state)
    assert other.updates == 2 and torch.equal(other.model[0].weight, ema.model[0].weight)


def test_ema_every_k_skips_steps() -> None:
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.9, every=4)
    for step in range(1, 9):
        ema.after_step(model, step)
    assert ema.updates == 2


def test_size_schedule_snaps_and_ends_at_full() -> None:
    sizes = [size_at(i / 20, 40, 0.5, 0.5, 4) for i in range(21)]
    assert sizes[0] == 20 and sizes[-1] == 40 and sizes[10] == 40
    assert all(s % 4 == 0 for s in sizes) and sizes == sorted(sizes)
    assert size_at(0.0, 40, 1.0, 0.5, 4) == 40  # off


def test_resize_shapes_and_area_mean() -> None:
    x = torch.arange(8.0).view(1, 1, 8)
    torch.testing.assert_close(resize(x, 4), torch.tensor([[[0.5, 2.5, 4.5, 6.5]]]))  # area = mean of pairs
    assert resize(torch.randn(2, 3, 16, 12), 8).shape == (2, 3, 8, 6)
    assert resize(x, 8) is x
    method = ProgressiveResize(40, 0.5, 0.5, 4)
    xb, _ = method.on_batch(torch.randn(5, 1, 40), torch.zeros(5), 0.0)
    assert xb.shape == (5, 1, 20)
    xb, _ = method.on_batch(torch.randn(5, 1, 40), torch.zeros(5), 0.7)
    assert xb.shape == (5, 1, 40)


def test_tta_views_and_mean_logits() -> None:
    x = torch.arange(5.0).view(1, 1, 5)
    assert shift_1d(x, 1).tolist() == [[[0.0, 0.0, 1.0, 2.0, 3.0]]]
    assert shift_1d(x, -2).tolist() == [[[2.0, 3.0, 4.0, 4.0, 4.0]]]
    img = torch.arange(9.0).view(1, 1, 3, 3)
    assert translate_2d(img, 1, 0)[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [3, 4, 5]]
    model = nn.Sequential(nn.Flatten(), nn.Linear(5, 3))
    xb = torch.randn(4, 1, 5)
    expected = torch.stack([model(v) for v in tta_views(xb, "shift")]).mean(0)
    torch.testing.assert_close(tta_logits(model, xb, "shift"), expected)
    torch.testing.assert_close(tta_logits(model, xb, "none"), model(xb))
    assert len(tta_views(torch.randn(2, 3, 8, 8), "crop_flip")) == 2
