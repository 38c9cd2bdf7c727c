"""Fusion of the identity's restoration with its Wav2Lip input, its calibration, and the
identity resolution chosen from the face size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ladtalk.evaluation.quality import calibrate_fusion, soften96
from ladtalk.face.video_crops import choose_resolution
from ladtalk.generation.fusion import FusionConfig, band_split, fuse, parse_strength
from ladtalk.media.resample import lipsync_path


def _face(side: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth random image with some fine texture, (1, 3, side, side) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic",
                                        align_corners=False)
    x = x + 0.05 * torch.randn(1, 3, side, side, generator=g)
    return x.clamp(0, 1)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean().clamp_min(1e-12)))


def test_input_that_is_already_the_truth_stays_the_truth():
    truth = _face(64)
    # a restorer that blurs and shifts the colour: the decode alone is much worse
    bad = (torch.nn.functional.avg_pool2d(truth, 5, 1, 2, count_include_pad=False) + 0.04
           ).clamp(0, 1)
    assert _psnr(bad, truth) < 25
    # strength 0 (what calibration picks for such a restorer) returns the truth exactly
    assert torch.equal(fuse(bad, truth, FusionConfig(0.0, 0.0, band_size=24)), truth)
    # low strength 0 keeps the truth's own 96-px-like band: much closer than the decode
    kept = fuse(bad, truth, FusionConfig(0.0, 1.0, band_size=24, shape_tolerance=0.0))
    assert _psnr(kept, truth) > _psnr(bad, truth) + 2.5
    # a restoration close to its (true) input stays close, whatever the strengths
    near = (truth + 0.01 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
            ).clamp(0, 1)
    for low, high in ((1.0, 1.0), (0.5, 1.5), (0.0, 1.0)):
        out = fuse(near, truth, FusionConfig(low, high, band_size=24))
        assert float((out - truth).abs().max()) < 0.08 and _psnr(out, truth) > 36
    same = fuse(truth, truth, FusionConfig(1.0, 1.5, band_size=24))
    assert torch.allclose(same, truth, atol=1e-6)


def test_low_strength_zero_keeps_the_input_band_exactly():
    inp, restored = _face(64, 1), _face(64, 2)
    cfg = FusionConfig(low_strength=0.0, high_strength=1.0, band_size=24, shape_tolerance=0.0)
    out = fuse(restored, inp, cfg)
    low_out, _ = band_split(out - inp, 24)
    low_d, high_d = band_split(restored - inp, 24)
    assert float(low_out.abs().max()) < 0.2 * float(low_d.abs().max())
    assert torch.allclose(band_split(restored - inp, 24)[0] + high_d, restored - inp, atol=1e-6)


def test_shape_guard_bounds_the_lip_shape_departure():
    inp = _face(64, 3)
    restored = (inp + 0.3).clamp(0, 1)  # a restoration that moves the whole low band
    cfg = FusionConfig(low_strength=1.0, high_strength=1.0, band_size=24, shape_tolerance=0.05)
    out = fuse(restored, inp, cfg)
    free = fuse(restored, inp, FusionConfig(band_size=24, shape_tolerance=0.0))
    assert float((free - inp).mean()) > 0.2
    assert float((out - inp).mean()) < 0.08


def test_parse_strength_forms():
    assert parse_strength("0.8") == (0.8, 0.8)
    assert parse_strength("0.25, 1") == (0.25, 1.0)
    assert parse_strength(None) is None and parse_strength(" ") is None
    for bad in ("x", "3", "1,2,3", "-0.1"):
        with pytest.raises(ValueError):
            parse_strength(bad)


class _OracleRestorer:
    """Restores perfectly: returns the true crop of the frame being calibrated (calibration
    decodes each frame once per softening, in order)."""

    resolution = 128

    def __init__(self, frames, n_sigma: int, garbage: bool = False):
        from ladtalk.face.crop import crop_face, face_region
        self.truth = [torch.from_numpy(crop_face(f, face_region(b, (f.shape[1], f.shape[0])),
                                                 128)).permute(2, 0, 1)[None].float() / 255
                      for f, b, _ in frames]
        self.n_sigma, self.calls, self.garbage = n_sigma, 0, garbage

    def restore01(self, x, fusion=None):
        i = self.calls // self.n_sigma
        self.calls += 1
        if self.garbage:
            return torch.rand(x.shape, generator=torch.Generator().manual_seed(i))
        return self.truth[i].clone()


def _frames(n: int = 3, size: int = 288):
    import cv2
    from skimage import data as skdata
    img = cv2.resize(skdata.astronaut(), (size + 8, size + 8), interpolation=cv2.INTER_AREA)
    box = np.array([80.0, 40.0, 200.0, 170.0])
    return [(np.ascontiguousarray(img[i:i + size, i:i + size]), box, i > 0) for i in range(n)]


def test_calibration_uses_a_good_restorer_and_rejects_a_bad_one():
    frames = _frames()
    good = calibrate_fusion(_OracleRestorer(frames, 2), frames, soften=(0.0, 1.0))
    assert good.fusion.low_strength >= 0.75 and good.fusion.high_strength >= 0.75
    assert good.chosen_gains["1"] > 1.0 and good.chosen_gains["0"] > -0.5
    bad = calibrate_fusion(_OracleRestorer(frames, 2, garbage=True), frames, soften=(0.0, 1.0))
    # garbage restoration: Wav2Lip's face is kept, never worse than the baseline
    assert (bad.fusion.low_strength, bad.fusion.high_strength) == (0.0, 0.0)
    assert bad.chosen_gains == {"0": 0.0, "1": 0.0}
    assert all(g["0"] < 0 for k, g in bad.gains.items() if k != "0,0")


def _crops(n: int = 4, side: int = 128) -> np.ndarray:
    return np.stack([(_face(side, i)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                     for i in range(n)])


def test_lipsync_path_matches_the_generation_path():
    import cv2
    crop = _crops(1, 192)[0]
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    y = lipsync_path(x, 1.0, 96)
    w96 = soften96(cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA), 1.0)
    up = cv2.resize(w96, (192, 192), interpolation=cv2.INTER_CUBIC)
    ours = (y[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(ours - up.astype(np.float32)).mean() < 1.5  # same path, up to rounding
    assert y.shape == x.shape and _psnr(y, x) < _psnr(lipsync_path(x, 0.0, 96), x)


@pytest.mark.parametrize("face_px,expected", [(302, 256), (200, 256), (199.5, 128), (90, 128),
                                              (1000, 256)])
def test_resolution_follows_the_face_size(face_px, expected):
    assert choose_resolution(face_px) == expected


def test_resolution_rejects_nonsense():
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError):
            choose_resolution(bad)


def test_restorer_restore01_is_the_batched_loop_with_optional_fusion():
    """``Restorer.restore01``: (N, 3, H, W) [0, 1] in, CPU float32 out (input size, or
    ``size=``), batch by batch equal to ``restore_tensor``; ``fusion=None`` is the decode."""
    from pipeline_helpers import tiny_sovqae

    from ladtalk.generation.restore import Restorer
    x = torch.cat([_face(32, seed=s) for s in range(5)])
    strong = FusionConfig(low_strength=0.0, high_strength=0.0, shape_tolerance=0.0)
    r = Restorer(tiny_sovqae(resolution=32), device="cpu", batch_size=2, precision="fp32",
                 fusion=strong)
    plain = r.restore01(x, fusion=None)
    assert plain.shape == x.shape and plain.dtype == torch.float32 and plain.device.type == "cpu"
    torch.testing.assert_close(plain, r.restore_tensor(x).images, atol=1e-5, rtol=0)
    assert (plain - x).abs().mean() > 1e-3                  # a real decode
    torch.testing.assert_close(r.restore01(x), x, atol=1e-6, rtol=0)   # its own fusion: (0, 0)
    big = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    assert r.restore01(big, fusion=None, size=32).shape == (5, 3, 32, 32)
    assert r.restore01(big, fusion=None).shape == (5, 3, 64, 64)
