"""Degradations: blur / noise / Wav2Lip-like down-up, spec parsing, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ladtalk.analysis.degrade import (
    DEGRADATIONS,
    Degradation,
    default_degradations,
    down_up,
    gaussian_blur,
    gaussian_noise,
    parse_all,
    parse_degradation,
)
from ladtalk.errors import InputError
from ladtalk.media.resample import area_matrix, gaussian_kernel1d


def _img(n=2, c=3, h=40, w=48, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_blur_sigma_zero_is_identity():
    x = _img()
    assert torch.equal(gaussian_blur(x, 0.0), x)
    arr = (np.arange(5 * 6 * 3) % 256).astype(np.uint8).reshape(5, 6, 3)
    assert np.array_equal(gaussian_blur(arr, 0), arr)


def test_blur_preserves_constant_image_and_mean_and_smooths():
    const = torch.full((1, 3, 17, 23), 0.37)
    out = gaussian_blur(const, 2.5)
    assert torch.allclose(out, const, atol=1e-6)
    x = _img()
    y = gaussian_blur(x, 1.5)
    # reflect padding keeps a roughly equal mean; blur strongly cuts pixel-to-pixel variation
    assert abs(float(y.mean() - x.mean())) < 5e-3
    assert float(y.diff(dim=-1).abs().mean()) < 0.5 * float(x.diff(dim=-1).abs().mean())


def test_blur_kernel_radius_and_matches_reference_interior():
    k = gaussian_kernel1d(2.0)
    assert k.numel() == 2 * math.ceil(6.0) + 1 and abs(float(k.sum()) - 1) < 1e-6
    x = _img(1, 1, 30, 30)
    y = gaussian_blur(x, 2.0)
    ref = F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))  # valid region
    assert torch.allclose(y[..., 6:-6, 6:-6], ref, atol=1e-6)


def test_blur_works_with_radius_larger_than_image():
    x = _img(1, 3, 4, 5)
    y = gaussian_blur(x, 3.0)  # radius 9 > image size: reflect indexing must still work
    assert y.shape == x.shape and torch.isfinite(y).all()
    # heavy blur of a tiny image tends to its mean
    assert float((y - x.mean(dim=(2, 3), keepdim=True)).abs().max()) < float(
        (x - x.mean(dim=(2, 3), keepdim=True)).abs().max())


def test_numpy_uint8_hwc_roundtrip_matches_torch():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    out = gaussian_blur(arr, 1.0)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    ref = (gaussian_blur(t, 1.0).permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(out.astype(float) - ref).max() <= 1
    batch = np.stack([arr, arr])
    assert np.array_equal(gaussian_blur(batch, 1.0)[1], out)


def test_noise_std_matches_sigma_and_is_deterministic():
    x = torch.full((2, 3, 64, 64), 0.5)
    y = gaussian_noise(x, 0.05, seed=3)
    assert abs(float((y - x).std()) - 0.05) < 0.003
    assert torch.equal(y, gaussian_noise(x, 0.05, seed=3))
    assert not torch.equal(y, gaussian_noise(x, 0.05, seed=4))
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_noise_is_clipped_and_per_image_seeds_are_batch_independent():
    x = torch.full((3, 1, 16, 16), 0.95)
    y = gaussian_noise(x, 0.3, seed=[10, 11, 12])
    assert float(y.max()) <= 1.0 and float(y.min()) >= 0.0
    one = gaussian_noise(x[1:2], 0.3, seed=[11])
    assert torch.equal(one[0], y[1])
    with pytest.raises(ValueError):
        gaussian_noise(x, 0.1, seed=[1, 2])


def test_area_matrix_rows_are_exact_averages():
    m = area_matrix(128, 96)
    assert torch.allclose(m.sum(1), torch.ones(96), atol=1e-6)
    assert torch.allclose(m.sum(0), torch.full((128,), 96 / 128), atol=1e-6)
    assert torch.equal(area_matrix(4, 2), torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]))


def test_down_up_is_identity_on_smooth_image_and_lossy_on_detail():
    h = w = 128
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    wave = torch.sin(2 * math.pi * xx) * torch.cos(2 * math.pi * yy)
    smooth = (0.5 + 0.3 * wave).expand(1, 3, h, w)
    out = down_up(smooth, 96)
    assert out.shape == smooth.shape
    assert float((out - smooth).abs().max()) < 0.01
    checker = ((torch.arange(h)[:, None] + torch.arange(w)[None]) % 2).float().expand(1, 1, h, w)
    assert float((down_up(checker, 96) - checker).abs().mean()) > 0.2
    with pytest.raises(InputError, match="down:128"):
        down_up(smooth, 128)


def test_parse_specs_and_canonical_names():
    assert parse_degradation("blur:2").spec == "blur:2.0"
    assert parse_degradation(" noise:0.1 ").spec == "noise:0.1"
    assert parse_degradation("down:96") == Degradation("down", 96)
    assert parse_degradation("blur").param == DEGRADATIONS["blur"].default
    assert [d.spec for d in default_degradations()] == ["blur:2.0", "noise:0.1", "down:96"]
    x = _img(1, 3, 128, 128)
    assert torch.equal(parse_degradation("blur:1.0")(x), gaussian_blur(x, 1.0))
    assert torch.equal(parse_degradation("noise:0.1")(x, seed=5), gaussian_noise(x, 0.1, seed=5))
    assert torch.equal(parse_degradation("down:64")(x), down_up(x, 64))


@pytest.mark.parametrize("spec, fragment", [
    ("sharpen:1", "unknown degradation 'sharpen'"),
    ("blur:abc", "must be a number"),
    ("blur:-1", ">= 0"),
    ("noise:nan", ">= 0"),
    ("down:95.5", "whole number"),
    ("down:0", ">= 1"),
    ("blur:", "no value"),
    ("", "empty"),
])
def test_parse_errors_are_clear(spec, fragment):
    with pytest.raises(InputError) as info:
        parse_degradation(spec)
    msg = str(info.value)
    assert fragment in msg and "valid forms" in msg


def test_parse_all_defaults_duplicates_and_downscale_check():
    assert [d.spec for d in parse_all(None, 128)] == ["blur:2.0", "noise:0.1", "down:96"]
    assert [d.spec for d in parse_all(["noise", Degradation("down", 16)], 32)] == [
        "noise:0.1", "down:16"]
    with pytest.raises(InputError, match="duplicate"):
        parse_all(["blur:2", "blur:2.0"], 128)
    with pytest.raises(InputError, match="not a downscale at identity x's 32 px"):
        parse_all(["down:32"], 32, "identity x's")
    with pytest.raises(InputError, match="not a downscale"):
        parse_all(None, 96)  # the default down:96 at 96 px
