"""On-device augmentation against slow per-sample references drawing the same random offsets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from quicktrain.data.augment import augment_batch, random_crop, random_flip, random_shift


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shift_reference(x: torch.Tensor, m: int, g: torch.Generator) -> torch.Tensor:
    shifts = torch.randint(0, 2 * m + 1, (len(x),), generator=g) - m
    out = torch.empty_like(x)
    for i, s in enumerate(shifts.tolist()):
        padded = F.pad(x[i : i + 1].double(), (m, m), mode="replicate")[0].to(x.dtype)  # edge values replicated
        out[i] = padded[:, m - s : m - s + x.shape[2]]
    return out


def _crop_reference(x: torch.Tensor, p: int, g: torch.Generator) -> torch.Tensor:
    dy = torch.randint(0, 2 * p + 1, (len(x),), generator=g)
    dx = torch.randint(0, 2 * p + 1, (len(x),), generator=g)
    padded = F.pad(x, (p, p, p, p))  # zeros, like RandomCrop(padding=p)
    h, w = x.shape[2:]
    return torch.stack([padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(zip(dy.tolist(), dx.tolist()))])


@pytest.mark.parametrize("m", [1, 3, 8])
def test_shift_matches_reference(m: int) -> None:
    x = torch.randn(64, 2, 20)
    out = random_shift(x, m, _gen(5))
    assert torch.equal(out, _shift_reference(x, m, _gen(5)))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)


def test_shift_is_a_translation() -> None:
    x = torch.arange(10.0).repeat(200, 1, 1)
    out = random_shift(x, 2, _gen())
    s = (5 - out[:, 0, 5]).long()  # the middle moves right by s without reaching an edge
    assert set(s.tolist()) == {-2, -1, 0, 1, 2}
    # edges replicated: a right shift by s repeats the first value s more times, a left shift the last value
    assert torch.equal((out[:, 0] == 0).sum(1), (1 + s).clamp(min=0))
    assert torch.equal((out[:, 0] == 9).sum(1), (1 - s).clamp(min=0))


@pytest.mark.parametrize("p", [1, 2, 4])
def test_crop_matches_reference(p: int) -> None:
    x = torch.randn(64, 3, 8, 6)
    out = random_crop(x, p, _gen(3))
    assert torch.equal(out, _crop_reference(x, p, _gen(3)))
    assert out.shape == x.shape and out.dtype == x.dtype


def test_flip_about_half() -> None:
    x = torch.randn(2000, 1, 5, 7)
    out = random_flip(x, _gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert 0.45 < float(flipped.float().mean()) < 0.55


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_and_shapes_preserved(dtype: torch.dtype) -> None:
    img, sig = torch.randn(8, 3, 6, 6, dtype=dtype), torch.randn(8, 2, 12, dtype=dtype)
    for kind, x in (("crop", img), ("crop_flip", img), ("shift", sig), ("none", sig)):
        out = augment_batch(x, kind, 2, _gen())
        assert out.shape == x.shape and out.dtype == x.dtype


def test_amount_zero_is_identity() -> None:
    img, sig = torch.randn(8, 3, 6, 6), torch.randn(8, 2, 12)
    assert torch.equal(random_shift(sig, 0, _gen()), sig)
    assert torch.equal(random_crop(img, 0, _gen()), img)
    assert torch.equal(augment_batch(img, "crop", 0, _gen()), img)
    assert torch.equal(augment_batch(sig, "none", 4, _gen()), sig)


def test_dispatch_and_reproducibility() -> None:
    x = torch.randn(16, 3, 6, 6)
    both = augment_batch(x, "crop_flip", 2, _gen(9))
    g = _gen(9)
    assert torch.equal(both, random_flip(random_crop(x, 2, g), g))
    assert torch.equal(augment_batch(x, "crop_flip", 2, _gen(9)), both)
    assert not torch.equal(augment_batch(x, "crop_flip", 2, _gen(10)), both)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(x, "rotate", 2, _gen())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference_shapes() -> None:
    x = torch.randn(32, 3, 8, 8, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    out = augment_batch(x, "crop_flip", 2, g)
    assert out.device == x.device and out.shape == x.shape
    sig = torch.randn(32, 1, 40, device="cuda")
    g1, g2 = (torch.Generator(device="cuda").manual_seed(1) for _ in range(2))
    shifts = torch.randint(0, 9, (32,), generator=g2, device="cuda") - 4
    idx = (torch.arange(40, device="cuda") - shifts[:, None]).clamp(0, 39)
    assert torch.equal(random_shift(sig, 4, g1), sig.gather(2, idx[:, None, :]))
