"""Enrollment building blocks: holdout split, frame selection, the crop sampler, the
degradation augmentation, the loss terms, the PatchGAN and the perceptual loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ladtalk.enrollment import data as tdata
from ladtalk.enrollment.discriminator import NLayerDiscriminator
from ladtalk.enrollment.losses import (
    adaptive_weight,
    codebook_regularizer,
    hinge_d_loss,
    soft_min_distance,
)
from ladtalk.errors import InputError
from ladtalk.face import video_crops
from ladtalk.metrics.lpips import load_perceptual


# -- data --------------------------------------------------------------------------------------
def test_split_holdout_takes_the_end_of_the_video():
    train, hold = video_crops.split_holdout(100, 0.1)
    assert list(hold) == list(range(90, 100)) and list(train) == list(range(90))
    train, hold = video_crops.split_holdout(20, 0.01)  # at least one frame held out
    assert list(hold) == [19]
    assert len(video_crops.split_holdout(30, 0.0)[1]) == 0
    with pytest.raises(InputError, match="too few frames"):
        video_crops.split_holdout(8, 0.5)
    with pytest.raises(InputError):
        video_crops.split_holdout(100, 1.0)


def test_even_subset_subsamples_evenly():
    keep = video_crops.even_subset(10_000, 500)
    assert len(keep) == 500 and keep[0] == 0 and keep[-1] == 9999
    assert np.all(np.diff(keep) > 0)
    assert len(video_crops.even_subset(40, 500)) == 40


def test_sampler_is_deterministic_and_resumable():
    crops = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    a = tdata.CropSampler(crops, 4, patch=16, seed=3)
    b = tdata.CropSampler(crops, 4, patch=16, seed=3)
    xa = a.sample()
    assert xa.shape == (4, 3, 16, 16) and 0 <= float(xa.min()) and float(xa.max()) <= 1
    assert torch.equal(xa, b.sample())
    assert a.sample(full=True).shape == (4, 3, 32, 32)
    state = a.state()
    nxt = a.sample()
    a.set_state(state)
    assert torch.equal(a.sample(), nxt)


def test_random_degradation_changes_images_within_range():
    x = torch.rand(12, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    y = tdata.random_degradation(x, g)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert all(not torch.equal(y[i], x[i]) for i in range(len(x)))


def test_face_weight_map_has_mean_one_and_peaks_in_the_face():
    w = tdata.face_weight_map(64, 1.0)
    assert abs(float(w.mean()) - 1) < 1e-5
    assert float(w[0, 0, 38, 32]) > float(w[0, 0, 0, 0])
    assert tdata.face_weight_map(64, 0.0) is None


# -- losses ------------------------------------------------------------------------------------
def test_soft_min_is_a_lower_bound_that_tightens():
    codes = torch.randn(30, 8)
    d = torch.cdist(codes, codes) + torch.eye(30) * 1e9
    hard = float(d.min())
    loose, tight = float(soft_min_distance(codes, 0.5)), float(soft_min_distance(codes, 0.005))
    assert loose <= tight <= hard + 1e-5
    assert abs(tight - hard) < 0.05


def test_codebook_regularizer_moves_min_distance_towards_theta():
    torch.manual_seed(0)
    w = (torch.randn(16, 4) * 0.05).requires_grad_(True)  # codes far closer than theta = 1
    opt = torch.optim.SGD([w], lr=0.05)
    used = torch.arange(16)
    before = float(torch.pdist(w.detach()).min())
    for _ in range(200):
        opt.zero_grad()
        codebook_regularizer(w, used, theta=1.0, tau=0.02).backward()
        opt.step()
    after = float(torch.pdist(w.detach()).min())
    assert after > before + 0.3
    assert float(codebook_regularizer(w, used[:1]).detach()) == 0.0  # one code: nothing to separate


def test_hinge_and_adaptive_weight_match_taming_definitions():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 * (0.25 + 0.5)
    assert math.isclose(float(hinge_d_loss(real, fake)), 0.375)
    layer = torch.nn.Parameter(torch.randn(5))
    rec = (layer * 3.0).sum()
    g = (layer * -0.5).sum()
    w = adaptive_weight(rec, g, layer, disc_weight=0.5)
    expected = 0.5 * (3.0 * math.sqrt(5)) / (0.5 * math.sqrt(5) + 1e-4)
    assert math.isclose(float(w), expected, rel_tol=1e-5)


def test_discriminator_is_a_patchgan_with_taming_names():
    d = NLayerDiscriminator(ndf=16, n_layers=3)
    keys = set(d.state_dict())
    assert "main.0.weight" in keys and "main.2.weight" in keys and "main.3.running_mean" in keys
    out = d(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 6, 6)  # one logit per 70x70-style patch


def test_perceptual_without_weights_warns_once_and_returns_none(monkeypatch, capsys):
    from ladtalk.metrics import lpips as losses
    monkeypatch.delenv("LADTALK_VGG16", raising=False)
    monkeypatch.delenv("LADTALK_LPIPS", raising=False)
    monkeypatch.setattr(losses, "_WARNED", False)
    model, msg = load_perceptual("cpu")
    model2, _ = load_perceptual("cpu")
    assert model is None and model2 is None and "LADTALK_VGG16" in msg
    assert capsys.readouterr().err.count("perceptual (LPIPS) loss disabled") == 1


def test_perceptual_loads_vgg_weights_from_env(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    from ladtalk.metrics.lpips import LPIPS
    ref = LPIPS()
    sd = {k: torch.randn_like(v) for k, v in ref.state_dict().items() if k.startswith("features.")}
    save_file(sd, str(tmp_path / "vgg16.safetensors"))
    monkeypatch.setenv("LADTALK_VGG16", str(tmp_path / "vgg16.safetensors"))
    monkeypatch.delenv("LADTALK_LPIPS", raising=False)
    model, msg = load_perceptual("cpu")
    assert model is not None and "uniform heads" in msg
    assert torch.equal(model.features[0].weight, sd["features.0.weight"])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(model(x, x).abs().max()) < 1e-6
    assert float(model(x, x.flip(-1)).min()) > 0
