"""Certificate numbers (Theorem 3.3): d_C, gamma, L_enc estimates and bounds, codes preserved."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ladtalk._util.choices import CERTIFICATE_COSTS, CertificateCost
from ladtalk.analysis.certificate import (
    Certificate,
    CertificateAccumulator,
    codebook_distances,
    compute_certificate,
    two_nearest,
)
from ladtalk.analysis.layerwise import conv_operator_norm_bound, layerwise_bounds, max_symbol_norm
from ladtalk.analysis.lipschitz import LipschitzEstimate, estimate_lipschitz
from ladtalk.models.sovqae import SOVQAE, get_config


def _model(seed: int = 0, **overrides) -> SOVQAE:
    torch.manual_seed(seed)
    # tiny with f = 8: a 4 x 4 latent grid at 32 px; attention at 16 px and in the mid block
    return SOVQAE(get_config("tiny", ch_mult=(1, 2, 2, 2), **overrides)).eval()


CHEAP = CertificateCost(cert_faces=1, power_iters=2, n_random=2, max_positions=2,
                        layerwise=False)


def _faces(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=g)  # smooth-ish images, like faces rather than noise
    return nn.functional.interpolate(base, size=(32, 32), mode="bilinear", align_corners=False)


def test_d_C_on_hand_set_codebook():
    w = torch.zeros(6, 3, dtype=torch.float64)
    # collinear codes, gaps known
    w[:, 0] = torch.tensor([0.0, 0.7, 2.0, 3.5, 10.0, 20.0], dtype=torch.float64)
    out = codebook_distances(w, used=torch.tensor([0, 2, 2, 4]))
    assert out["d_C"] == pytest.approx(0.7, abs=1e-9)
    assert out["d_C_used"] == pytest.approx(2.0, abs=1e-9)        # among {0, 2, 10}
    assert out["d_C_used_to_all"] == pytest.approx(0.7, abs=1e-9)  # code 0 -> code 0.7
    out = codebook_distances(w, used=torch.tensor([4, 5]))
    assert out["d_C_used_to_all"] == pytest.approx(6.5, abs=1e-9)  # 10 -> 3.5
    assert out["d_C_used"] == pytest.approx(10.0, abs=1e-9)


def test_two_nearest_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(20, 4, generator=g)
    h = torch.randn(2, 4, 3, 3, generator=g)
    d1, d2, idx = two_nearest(w, h)
    flat = h.permute(0, 2, 3, 1).reshape(-1, 4)
    d = torch.cdist(flat, w)
    srt, order = d.sort(dim=1)
    assert torch.allclose(d1.flatten(), srt[:, 0], atol=1e-5)
    assert torch.allclose(d2.flatten(), srt[:, 1], atol=1e-5)
    assert torch.equal(idx.flatten(), order[:, 0])


def test_gamma_zero_when_latents_are_codes_and_codes_preserved():
    model = _model()
    x = _faces(2)
    with torch.no_grad():
        h = model.encode_latent(x * 2 - 1)
    flat = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])  # 32 latent vectors
    w = model.quantize.embedding.weight
    with torch.no_grad():
        w.fill_(50.0)
        w[torch.arange(w.shape[0]) % 2 == 1] = -50.0
        w[1::3] += torch.arange(w[1::3].shape[0], dtype=w.dtype)[:, None]  # all distinct
        w[: flat.shape[0]] = flat
    cert = compute_certificate(model, x, ["blur:0.0", "noise:0.5"], cost=CHEAP)
    assert cert.gamma == pytest.approx(0.0, abs=1e-4)
    d_latents = torch.pdist(flat.double()).min().item()
    assert cert.d_C_used == pytest.approx(d_latents, rel=1e-4)
    assert cert.d_C <= cert.d_C_used_to_all <= cert.d_C_used + 1e-9
    assert cert.radius == pytest.approx((cert.d_C - 2 * cert.gamma) / (2 * cert.L_enc), rel=1e-9)
    assert cert.radius > 0 and cert.certified
    assert cert.codes_preserved["blur:0.0"] == 1.0
    assert cert.certified_fraction["blur:0.0"] == 1.0  # ||N|| = 0 < every positive margin
    assert cert.degradation_norms["blur:0.0"]["max"] == 0.0
    assert cert.codes_preserved["noise:0.5"] < 1.0
    d = cert.to_json()
    json.dumps(d, allow_nan=False)
    assert d["latent_grid"] == [4, 4] and d["frames"] == 2 and "L2" in d["units"]
    assert isinstance(cert.lipschitz, LipschitzEstimate) and d["lipschitz"]["iters"] == 2
    back = Certificate.from_json(json.loads(json.dumps(d)))
    assert back == cert and back.to_json() == d


def test_non_finite_layerwise_bound_gives_no_layerwise_radius():
    model = _model()
    with torch.no_grad():
        h = model.encode_latent(_faces(2) * 2 - 1)
    for bad in (float("nan"), float("inf")):
        acc = CertificateAccumulator(model)
        acc.add_clean(h, 3 * 32 * 32)
        lip = LipschitzEstimate(per_position_power=2.0, per_position_random=1.0,
                                global_power=2.0, global_random=1.0,
                                layerwise_local=float("nan"), layerwise_naive=bad)
        cert = acc.finalize(lip)
        assert cert.radius_layerwise_local is None
        assert cert.L_layerwise_local is None and cert.L_layerwise_naive is None
        assert math.isfinite(cert.radius)
        json.dumps(cert.to_json(), allow_nan=False)
    acc = CertificateAccumulator(model)
    acc.add_clean(h, 3 * 32 * 32)
    lip = LipschitzEstimate(per_position_power=2.0, per_position_random=1.0, global_power=2.0,
                            global_random=1.0, layerwise_local=4.0, layerwise_naive=8.0)
    cert = acc.finalize(lip)
    assert cert.radius_layerwise_local == pytest.approx((cert.d_C - 2 * cert.gamma) / 8.0)
    assert cert.L_layerwise_local == 4.0 and cert.L_layerwise_naive == 8.0


def test_random_model_reports_no_certificate_honestly():
    model = _model(seed=3)
    x = _faces(3, seed=3)
    cert = compute_certificate(model, x, ["noise:0.2"], cost=CHEAP)
    # a random 128-code codebook around 0 with latents of norm ~1: 2 gamma >> d_C
    assert cert.radius < 0 and not cert.certified
    assert any("no certificate" in n for n in cert.notes)
    assert 0.0 <= cert.codes_preserved["noise:0.2"] < 1.0
    assert cert.gamma >= cert.gamma_p99 >= cert.gamma_p90 >= cert.gamma_p50 > 0
    # per-position radii are >= the global radius by construction
    assert cert.position_radius_p50 >= cert.radius


def test_power_iteration_dominates_random_ratios_and_is_below_layerwise_bound():
    model = _model(seed=1)
    x = _faces(2, seed=1)
    est = estimate_lipschitz(model, x, iters=4, n_random=3, eps=1e-3, max_positions=2, chunk=4)
    # started from the worst random direction and monotone: >= the (nearly linear) random ratio
    assert est.global_power >= est.global_random * (1 - 1e-2)
    assert est.per_position_power >= est.per_position_random * (1 - 1e-2)
    # Rayleigh quotients never exceed ||J||, which the local layer-wise bound dominates
    assert est.layerwise_local is not None
    for p, bound in zip(est.per_face_power, est.per_face_layerwise_local):
        assert p <= bound * (1 + 1e-6)
    assert est.per_position_power <= est.layerwise_local * (1 + 1e-6)
    assert est.value == max(est.per_position_power, est.per_position_random)
    # the Jacobian estimate agrees with a finite difference along a random direction
    g = torch.Generator().manual_seed(0)
    v = torch.randn(x[:1].shape, generator=g)
    v = v / v.norm()
    with torch.no_grad():
        f = lambda t: model.encode_latent(t * 2 - 1)  # noqa: E731
        fd = ((f(x[:1] + 1e-3 * v) - f(x[:1] - 1e-3 * v)) / 2e-3).norm()
    assert fd <= est.per_face_power[0] * (1 + 1e-2)


def test_conv_operator_norm_bound():
    torch.manual_seed(0)
    one = nn.Conv2d(5, 7, 1)
    assert conv_operator_norm_bound(one, (9, 9)) == pytest.approx(
        float(torch.linalg.matrix_norm(one.weight.detach()[:, :, 0, 0].double(), ord=2)), rel=1e-9)
    conv = nn.Conv2d(4, 6, 3, 1, 1, bias=False)
    bound = conv_operator_norm_bound(conv, (12, 12))
    # power iteration on the actual zero-padded conv: a lower bound of its norm
    v = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        for _ in range(100):
            v = v / v.norm()
            u = conv(v)
            v = torch.nn.grad.conv2d_input(v.shape, conv.weight, u, padding=1)
        pi = float(conv(v / v.norm()).norm())
    assert pi <= bound * (1 + 1e-6)
    assert bound <= pi * 1.5  # the torus on the padded grid is only slightly larger
    # sampled-spectrum path (grid smaller than the 14 x 14 padded map): a bound on the
    # supremum over all frequencies, hence >= the exact torus value, and only ~1/cos^2 above
    sampled = conv_operator_norm_bound(conv, (12, 12), grid=8)
    assert bound * (1 - 1e-9) <= sampled
    fine = max_symbol_norm(conv.weight.detach().double(), 256, 256)  # grid 8 within
    assert fine * (1 - 1e-9) <= sampled <= fine / math.cos(math.pi / 8) ** 2 * (1 + 1e-9)
    flat = conv.weight.detach().reshape(6, -1).double()
    im2col = 3.0 * float(torch.linalg.matrix_norm(flat, ord=2))
    assert bound <= im2col * (1 + 1e-9)
    stride2 = nn.Conv2d(4, 6, 3, 2, 0, bias=False)
    stride2.weight.data.copy_(conv.weight.data)
    assert conv_operator_norm_bound(stride2, (13, 13)) <= im2col


def test_layerwise_bound_reproduces_encoder_and_flags_unknown_structure():
    model = _model(seed=2)
    x = _faces(1, seed=2)
    lw = layerwise_bounds(model, x)
    assert lw.local is not None and math.isfinite(lw.local) and lw.local > 0
    assert lw.per_face_local == [lw.local]
    assert lw.naive is not None and "not a bound" in lw.note

    class Odd(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1))
            self.quant_conv = inner.quant_conv
            self.device = torch.device("cpu")

        def encode_latent(self, t):
            return self.encoder(t)

    out = layerwise_bounds(Odd(model), x)
    assert out.local is None and out.naive is None and "not recognised" in out.note


def test_symbol_norm_of_a_single_tap_kernel_is_its_matrix_norm():
    # a kernel with one non-zero tap has the same symbol norm at every frequency
    w = torch.zeros(3, 2, 3, 3, dtype=torch.float64)
    w[:, :, 1, 2] = torch.randn(3, 2, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64)
    want = float(torch.linalg.matrix_norm(w[:, :, 1, 2], ord=2))
    assert max_symbol_norm(w, 7, 5) == pytest.approx(want, rel=1e-12)
    assert max_symbol_norm(w, 7, 5, max_batch_bytes=1) == pytest.approx(want, rel=1e-12)


def test_certificate_from_old_layout_with_nulls():
    model = _model(seed=3)
    cert = compute_certificate(model, _faces(2, seed=3), ["noise:0.2"], cost=CHEAP)
    old = cert.to_json()
    old.update(radius=None, radius_used=None, L_layerwise_local=None)  # old files: null
    old.pop("lipschitz")
    back = Certificate.from_json(old)
    assert math.isnan(back.radius) and back.L_layerwise_local is None
    assert back.codes_preserved == cert.codes_preserved and back.latent_grid == (4, 4)
    assert back.lipschitz is None and back.gamma == cert.gamma
    inf = Certificate.from_json({**cert.to_json(), "radius": "inf"})
    assert inf.radius == math.inf and inf.to_json()["radius"] == "inf"


def test_cost_presets():
    assert CERTIFICATE_COSTS["full"] == CertificateCost()
    app, enroll = CERTIFICATE_COSTS["app"], CERTIFICATE_COSTS["enroll"]
    assert (app.cert_faces, app.power_iters, app.n_random, app.max_positions, app.layerwise,
            app.global_map) == (1, 2, 2, 2, False, False)
    assert (enroll.cert_faces, enroll.power_iters, enroll.n_random) == (2, 4, 2)
    assert enroll.global_map and CERTIFICATE_COSTS["full"].global_map
    assert CertificateCost.resolve("app", cert_faces=3) == CertificateCost(
        cert_faces=3, power_iters=2, n_random=2, max_positions=2, layerwise=False,
        global_map=False)
    assert CertificateCost.resolve(app) is app
    with pytest.raises(TypeError):
        CertificateCost.resolve("full", faces=2)
    with pytest.raises(ValueError, match="unknown certificate cost"):
        CertificateCost.resolve("cheap")


def test_fast_preset_skips_only_the_whole_map_chain_and_reports_progress():
    model = _model(seed=2)
    x = _faces(1, seed=2)
    kw = dict(iters=2, n_random=2, max_positions=2, chunk=8, layerwise=False)
    ticks = []
    full = estimate_lipschitz(model, x, **kw)
    fast = estimate_lipschitz(model, x, global_map=False,
                              progress=lambda d, t: ticks.append((d, t)), **kw)
    # the per-position estimate (L_enc) is the same chain with or without the whole-map one
    assert fast.per_position_power == full.per_position_power and fast.value == full.value
    assert math.isnan(fast.global_power) and math.isnan(fast.global_value)
    assert full.global_power > 0 and fast.per_face_power == []
    # one tick after the random perturbations, one per Jacobian product (2 positions in one
    # chunk, 2 iterations + 1), monotone and ending at the total
    assert ticks == [(i, 4) for i in range(1, 5)]
    with_global = []
    estimate_lipschitz(model, x, progress=lambda d, t: with_global.append((d, t)), **kw)
    assert with_global[-1] == (7, 7) and len(with_global) == 7
    # NaN for "not estimated" survives the JSON round trip of the certificate
    cert = compute_certificate(model, x, ["noise:0.2"], cost=CertificateCost.resolve("app"))
    assert math.isnan(cert.L_enc_global_power) and cert.L_enc == cert.lipschitz.value
    back = Certificate.from_json(json.loads(json.dumps(cert.to_json())))
    assert math.isnan(back.L_enc_global_power) and back.L_enc == cert.L_enc
