"""Image / temporal / Fréchet metrics and the Sliding Evaluation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import linalg
from scipy.ndimage import gaussian_filter

from ladtalk.errors import InputError, LadTalkError
from ladtalk.metrics import (
    MouthRegion,
    SSIMConfig,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    mouth_psnr,
    psnr,
    psnr_torch,
    sliding_evaluation,
    sliding_frechet,
    sliding_sequence,
    ssim,
    temporal_error,
    valid_offsets,
)

skmetrics = pytest.importorskip("skimage.metrics")


def _images(kind: str, dtype, seed: int, shape=(48, 40, 3)):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    if kind == "smooth":
        a = gaussian_filter(a, sigma=(4, 4, 0))
        a = (a - a.min()) / (a.max() - a.min())
    b = np.clip(a + rng.normal(0, 0.08, shape), 0, 1)
    if dtype == np.uint8:
        return (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
    return a.astype(dtype), b.astype(dtype)


# ----------------------------------------------------------------------------- PSNR / SSIM

@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.float32])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_psnr_matches_skimage(dtype, kind):
    a, b = _images(kind, dtype, seed=1)
    rng = 255 if dtype == np.uint8 else 1.0
    ref = skmetrics.peak_signal_noise_ratio(b, a, data_range=rng)
    assert psnr(a, b) == pytest.approx(ref, abs=1e-6)
    assert psnr(a, b, data_range=rng) == pytest.approx(ref, abs=1e-6)


def test_psnr_known_value_and_identity():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a + np.uint8(5)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / 25))
    assert psnr(a, a) == float("inf")


def test_psnr_refuses_ambiguous_input():
    a, b = _images("random", np.float64, seed=2)
    with pytest.raises(InputError, match="data_range"):
        psnr(a * 255, b * 255)                               # floats outside [0, 1]
    assert np.isfinite(psnr(a * 255, b * 255, data_range=255))
    with pytest.raises(InputError, match="dtype"):
        psnr(a, (b * 255).astype(np.uint8))
    with pytest.raises(InputError, match="shape"):
        psnr(a, b[:-1])


def test_psnr_mask_and_floor():
    a, b = _images("random", np.uint8, seed=3)
    mask = np.zeros(a.shape[:2], bool)
    mask[10:30, 5:25] = True
    expected = psnr(a[10:30, 5:25], b[10:30, 5:25])
    assert psnr(a, b, mask=mask) == pytest.approx(expected, abs=1e-12)
    # only the masked pixels count: changing the others does not move the score
    c = b.copy()
    c[~mask] = 0
    assert psnr(a, c, mask=mask) == pytest.approx(expected, abs=1e-12)
    # the floor caps identical images (and an empty mask) at a finite value
    assert psnr(a, a, mse_floor=1e-10) == pytest.approx(10 * np.log10(255 ** 2 / 1e-10))
    assert psnr(a, b, mask=np.zeros_like(mask)) == float("inf")
    with pytest.raises(InputError, match="mask"):
        psnr(a, b, mask=mask[:-1])


def test_psnr_torch_per_image_matches_numpy():
    import torch
    rng = np.random.default_rng(4)
    y = rng.random((3, 3, 16, 12))
    x = np.clip(y + rng.normal(0, 0.05, y.shape), 0, 1)
    x[2] = y[2]                                   # identical image: floored, not inf
    got = psnr_torch(torch.from_numpy(y).float(), torch.from_numpy(x).float())
    assert got.shape == (3,) and got.dtype == torch.float64
    y32, x32 = y.astype(np.float32).astype(np.float64), x.astype(np.float32).astype(np.float64)
    for i in range(2):
        assert float(got[i]) == pytest.approx(psnr(y32[i], x32[i], data_range=1.0), abs=1e-9)
    assert float(got[2]) == pytest.approx(100.0)
    on255 = psnr_torch(torch.from_numpy(y * 255), torch.from_numpy(x * 255), data_range=255.0)
    assert torch.allclose(on255[:2], got[:2], atol=1e-4)
    with pytest.raises(InputError, match="shape"):
        psnr_torch(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
@pytest.mark.parametrize("kind", ["random", "smooth"])
@pytest.mark.parametrize("gray", [False, True])
def test_ssim_gaussian_default_matches_skimage(dtype, kind, gray):
    a, b = _images(kind, dtype, seed=3)
    if gray:
        a, b = a[..., 0], b[..., 0]
    rng = 255 if dtype == np.uint8 else 1.0
    ref = skmetrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=rng,
        channel_axis=None if gray else -1)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_ssim_uniform_variant_matches_skimage_defaults(kind):
    a, b = _images(kind, np.uint8, seed=4)
    ref = skmetrics.structural_similarity(a, b, data_range=255, channel_axis=-1)
    assert ssim(a, b, config=SSIMConfig(gaussian=False)) == pytest.approx(ref, abs=1e-6)
    # the two variants are genuinely different numbers
    assert abs(ssim(a, b) - ref) > 1e-4


def test_ssim_identity_and_small_image():
    a, _ = _images("smooth", np.uint8, seed=5)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(InputError, match="window"):
        ssim(a[:9, :9], a[:9, :9])


# ----------------------------------------------------------------------------- mouth PSNR

def test_mouth_region_fractions():
    region = MouthRegion()
    box = (100.0, 50.0, 300.0, 250.0)                        # 200 x 200 face box
    assert region.pixel_box(box, (480, 640, 3)) == (150, 170, 250, 240)
    # clipped to the image
    assert region.pixel_box((-100, -100, 100, 100), (60, 80)) == (0, 20, 50, 60)
    with pytest.raises(InputError, match="outside"):
        region.pixel_box((700, 500, 800, 600), (480, 640))


def test_mouth_psnr_only_sees_the_mouth():
    rng = np.random.default_rng(6)
    ref = rng.integers(20, 230, (120, 160, 3), dtype=np.uint8)
    box = (40, 10, 120, 110)
    left, top, right, bottom = MouthRegion().pixel_box(box, ref.shape)
    outside = ref.copy()
    outside[:top] = 0
    outside[:, :left] = 0
    assert mouth_psnr(outside, ref, box) == float("inf")
    assert np.isfinite(psnr(outside, ref))
    inside = ref.copy()
    inside[top:bottom, left:right] += 4
    assert mouth_psnr(inside, ref, box) == pytest.approx(10 * np.log10(255 ** 2 / 16))


# ----------------------------------------------------------------------------- temporal error

def test_temporal_error_flicker_and_static_offsets():
    rng = np.random.default_rng(7)
    ref = rng.integers(20, 230, (10, 16, 16, 3)).astype(np.uint8)
    assert temporal_error(ref, ref) == 0.0
    shifted = ref + np.uint8(9)                              # static error cancels
    assert temporal_error(shifted, ref) == pytest.approx(0.0)
    sign = np.where(np.arange(10) % 2 == 0, 3, -3).astype(np.int16)
    flicker = (ref.astype(np.int16) + sign[:, None, None, None]).astype(np.uint8)
    # every consecutive difference departs by +-6 grey levels
    assert temporal_error(flicker, ref) == pytest.approx(6 / 255)
    assert temporal_error(flicker / 255.0, ref / 255.0) == pytest.approx(6 / 255)
    with pytest.raises(InputError, match="align"):
        temporal_error(ref[:-1], ref)


# ----------------------------------------------------------------------------- Fréchet

def _direct_frechet(mu1, s1, mu2, s2):
    """Independent route: tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) (PSD, symmetric)."""
    w, v = linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = linalg.eigvalsh(root1 @ s2 @ root1)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam, 0, None)).sum()


def _random_gaussian(rng, d):
    a = rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_matches_direct_computation():
    rng = np.random.default_rng(8)
    for d in (1, 4, 32):
        mu1, s1 = _random_gaussian(rng, d)
        mu2, s2 = _random_gaussian(rng, d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
            _direct_frechet(mu1, s1, mu2, s2), rel=1e-7, abs=1e-8)


def test_frechet_diagonal_closed_form_and_identity():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0, abs=1e-9)


def test_frechet_from_synthetic_gaussian_features():
    rng = np.random.default_rng(9)
    mu1, s1 = _random_gaussian(rng, 8)
    mu2, s2 = _random_gaussian(rng, 8)
    f1 = rng.multivariate_normal(mu1, s1, size=4000)
    f2 = rng.multivariate_normal(mu2, s2, size=4000)
    m1, c1 = feature_statistics(f1)
    np.testing.assert_allclose(c1, np.cov(f1, rowvar=False))
    got = frechet_distance_from_features(f1, f2)
    assert got == pytest.approx(_direct_frechet(f1.mean(0), np.cov(f1, rowvar=False),
                                                f2.mean(0), np.cov(f2, rowvar=False)), rel=1e-7)
    # the sample statistic estimates the population distance
    assert got == pytest.approx(_direct_frechet(mu1, s1, mu2, s2), rel=0.1)
    assert frechet_distance_from_features(f1, f1.copy()) == pytest.approx(0, abs=1e-6)


def test_frechet_rank_deficient_covariances_stay_finite():
    rng = np.random.default_rng(10)
    f1, f2 = rng.normal(size=(5, 16)), rng.normal(size=(5, 16)) + 1.0
    val = frechet_distance_from_features(f1, f2)
    assert np.isfinite(val) and val > 0
    assert frechet_distance_from_features(f1, f1.copy()) == pytest.approx(0, abs=1e-4)


def test_fid_without_extra_names_the_install(monkeypatch):
    from ladtalk.metrics import frechet
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", None)
    with pytest.raises(LadTalkError) as info:
        frechet.fid(np.zeros((2, 32, 32, 3), np.uint8), np.zeros((2, 32, 32, 3), np.uint8))
    msg = str(info.value)
    assert "pip install" in msg and "ladtalk[fid]" in msg and frechet.FID_WEIGHTS in msg


# ----------------------------------------------------------------------------- sliding

@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(11)
    return rng.integers(0, 256, (40, 24, 24, 3), dtype=np.uint8)


def _noisy(x, rng, sigma=3.0):
    return np.clip(x + rng.normal(0, sigma, x.shape), 0, 255).round().astype(np.uint8)


def test_valid_offsets():
    np.testing.assert_array_equal(valid_offsets(20, 40), np.arange(0, 21))
    np.testing.assert_array_equal(valid_offsets(40, 20), np.arange(-20, 1))
    np.testing.assert_array_equal(valid_offsets(20, 40, min_overlap=15), np.arange(-5, 26))
    np.testing.assert_array_equal(valid_offsets(20, 40, max_offset=3), np.arange(0, 4))
    with pytest.raises(InputError):
        valid_offsets(20, 40, min_overlap=21)


def test_sliding_psnr_finds_known_offset(clip):
    rng = np.random.default_rng(12)
    gen = _noisy(clip[7:27], rng)
    res = sliding_evaluation(gen, clip, psnr)
    assert res.offset == 7 and res.overlap == 20
    assert res.score == pytest.approx(np.mean([psnr(gen[i], clip[i + 7]) for i in range(20)]))
    assert len(res.offsets) == 21 and res.score == res.scores.max()
    # SSIM and a distance (lower is better) agree on the alignment
    assert sliding_evaluation(gen, clip, ssim).offset == 7
    mse = lambda g, r: float(np.mean((g.astype(float) - r) ** 2))   # noqa: E731
    assert sliding_evaluation(gen, clip, mse, higher_is_better=False).offset == 7


def test_sliding_generated_longer_and_partial_overlap(clip):
    rng = np.random.default_rng(13)
    ref = clip[5:25]
    gen = _noisy(clip[0:30], rng)             # G longer: G[i] matches R[i - 5]
    res = sliding_evaluation(gen, ref, psnr)
    assert res.offset == -5 and res.overlap == 20
    # partial overlaps admitted: G = R[30:40] shifted so that only 10 frames overlap
    res = sliding_evaluation(_noisy(clip[30:40], rng), clip[:35], psnr, min_overlap=5)
    assert res.offset == 30 and res.overlap == 5


def test_sliding_with_indices_for_per_frame_boxes(clip):
    rng = np.random.default_rng(14)
    boxes = [(2 + i % 3, 1, 20 + i % 3, 22) for i in range(len(clip))]
    gen = _noisy(clip[3:23], rng)
    calls = []

    def metric(g, r, gi, ri):
        calls.append((gi, ri))
        return mouth_psnr(g, r, boxes[ri])

    res = sliding_evaluation(gen, clip, metric, pass_indices=True)
    assert res.offset == 3
    assert all(ri - gi in range(0, 21) for gi, ri in calls)


def test_sliding_sequence_temporal_error(clip):
    gen = clip[5:25].copy()
    res = sliding_sequence(gen, clip, temporal_error, higher_is_better=False)
    assert res.offset == 5 and res.score == 0.0


def test_sliding_frechet_finds_window():
    rng = np.random.default_rng(15)
    ref = rng.normal(size=(60, 3))
    gen = ref[10:40] + rng.normal(0, 1e-3, (30, 3))
    res = sliding_frechet(gen, ref)
    assert res.offset == 10
    assert res.score == pytest.approx(frechet_distance_from_features(gen, ref[10:40]))
    assert res.score < 1e-3 < np.sort(res.scores)[1]
