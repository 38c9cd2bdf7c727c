"""SOVQAE: taming equivalence (golden), persistence, checkpoint formats, quantizer tools."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ladtalk.errors import CheckpointError, InputError
from ladtalk.models.quantizer import (
    VectorQuantizer,
    codebook_min_distance,
    dead_code_restart,
    kmeans_init,
    nearest_codes,
    quantization_error,
)
from ladtalk.models.sovqae import SOVQAE, SOVQAEConfig, default_config_name, get_config
from ladtalk.models.sovqae_diffusers import (
    diffusers_config_from_sovqae,
    diffusers_to_taming,
    sovqae_config_from_diffusers,
    taming_to_diffusers,
)
from ladtalk.models.sovqae_io import (
    config_from_taming_yaml,
    infer_config_from_state_dict,
    load_sovqae,
)

SMALL = dict(ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(8,), z_channels=64,
             embed_dim=64, n_embed=128, resolution=64)

SMALL_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 64
    n_embed: 128
    ddconfig:
      double_z: false
      z_channels: 64
      resolution: 64
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 2, 2, 4]
      num_res_blocks: 1
      attn_resolutions: [8]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params: {disc_start: 10000, codebook_weight: 1.0}
"""


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + p)
    return model


@pytest.fixture(scope="module")
def tiny_model() -> SOVQAE:
    torch.manual_seed(0)
    return _randomise(SOVQAE(get_config("tiny"))).eval()


def _tiny_input(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --------------------------------------------------------------------------------------------
# golden equivalence with taming-transformers


@pytest.fixture(scope="module")
def golden_small(golden_dir: Path):
    from safetensors.torch import load_file
    d = golden_dir / "vqgan"
    model = SOVQAE(SOVQAEConfig(**SMALL)).eval()
    model.load_state_dict(load_file(str(d / "small_weights.safetensors")), strict=True)
    arrays = {n: np.load(d / f"small_{n}.npy") for n in
              ("input", "encoder_out", "h", "z_q", "indices", "codebook_loss", "decoded")}
    return model, {k: torch.from_numpy(v) for k, v in arrays.items()}, d


def test_golden_small_vqgan(golden_small):
    model, ref, _ = golden_small
    with torch.no_grad():
        enc_out = model.encoder(ref["input"])
        enc = model.quantize_latent(model.quant_conv(enc_out))
        dec = model.decode(enc.z_q)
    torch.testing.assert_close(enc_out, ref["encoder_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(enc.h, ref["h"], atol=1e-5, rtol=0)
    torch.testing.assert_close(enc.z_q, ref["z_q"], atol=1e-5, rtol=0)
    assert torch.equal(enc.indices, ref["indices"])
    assert enc.codes.shape == (2, 8, 8) and torch.unique(enc.indices).numel() == 43
    torch.testing.assert_close(enc.loss, ref["codebook_loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(dec, ref["decoded"], atol=1e-4, rtol=0)
    with torch.no_grad():  # decoding the codes alone gives the same image
        from_codes = model.decode_code(enc.indices, (2, 8, 8))
    # (the straight-through z + (e - z) differs from e by float rounding only)
    torch.testing.assert_close(from_codes, ref["decoded"], atol=1e-4, rtol=0)


def test_golden_full_config_manifest(golden_dir: Path):
    manifest = json.loads((golden_dir / "vqgan" / "full_state_dict_manifest.json").read_text())
    cfg = get_config("base")
    for key, value in manifest["config"].items():
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    with torch.device("meta"):
        model = SOVQAE(cfg)
    sd = model.state_dict()
    want = {k: tuple(shape) for k, shape, _ in manifest["keys"]}
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert len(sd) == manifest["n_tensors"] == 343
    assert sum(p.numel() for p in model.parameters()) == manifest["n_parameters"] == 72_141_699


# --------------------------------------------------------------------------------------------
# configs and API


def test_named_configs_and_defaults():
    assert default_config_name("cpu") == "cpu"
    cpu = get_config("cpu")
    assert cpu.resolution == 256 and cpu.norm == "none" and not cpu.mid_attn
    assert get_config("cpu-gn128").resolution == 128 and get_config("cpu-gn128").norm == "group"
    with pytest.raises(ValueError, match="norm"):
        SOVQAEConfig(norm="batch")
    assert get_config("base").downsample_factor == 16 and get_config("base").latent_size == 16
    assert get_config("cpu", n_embed=512).n_embed == 512
    with pytest.raises(InputError, match="unknown SOVQAE config"):
        get_config("huge")
    with pytest.raises(ValueError, match="double_z"):
        SOVQAEConfig(double_z=True)
    with pytest.raises(ValueError, match="multiples of 32"):
        SOVQAEConfig(ch=48)
    # both construction styles give the same architecture
    a, b = SOVQAE(**SMALL), SOVQAE(SOVQAEConfig(**SMALL))
    assert a.config == b.config and list(a.state_dict()) == list(b.state_dict())


def test_normfree_model_is_patch_consistent():
    """Without normalisation a model trained on patches computes the same function on whole
    crops: away from the patch border, patch and whole-image outputs agree. GroupNorm does not."""
    torch.manual_seed(0)
    outs = {}
    for norm in ("none", "group"):
        model = SOVQAE(resolution=32, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                       attn_resolutions=(), z_channels=8, embed_dim=8, n_embed=64,
                       norm=norm, mid_attn=(norm == "group")).eval()
        with torch.no_grad():
            for p in model.parameters():  # leave the zero-initialised identity start
                p.add_(0.05 * torch.randn_like(p))
            x = torch.rand(1, 3, 96, 96) * 2 - 1
            full = model(x)[0]
            patch = model(x[..., 16:80, 16:80])[0]
        outs[norm] = float((full[..., 36:60, 36:60] - patch[..., 20:44, 20:44]).abs().max())
    assert outs["none"] < 1e-2, outs  # float rounding of different conv paths
    assert outs["group"] > 0.2, outs


def test_quantizer_loss_conventions_and_straight_through():
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, beta=0.25, legacy=True)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, loss, idx = q(z)
    codes = q.embedding.weight[idx].view(2, 3, 3, 4).permute(0, 3, 1, 2)
    mse = torch.mean((codes - z) ** 2)
    torch.testing.assert_close(loss, 1.25 * mse)  # forward value (1 + beta) * mse
    torch.testing.assert_close(z_q, codes)
    # gradients: legacy -> commitment weight 1 on z, codebook weight beta on the codes
    g_z, g_e = torch.autograd.grad(loss, [z, q.embedding.weight])
    torch.testing.assert_close(g_z, 2 * (z - codes).detach() / z.numel())
    q2 = VectorQuantizer(16, 4, beta=0.25, legacy=False)
    q2.load_state_dict(q.state_dict())
    _, loss2, _ = q2(z)
    g_z2, = torch.autograd.grad(loss2, [z])
    torch.testing.assert_close(g_z2, 0.25 * g_z)
    # straight-through: d z_q / d z is the identity
    g, = torch.autograd.grad(z_q.sum(), [z])
    assert torch.equal(g, torch.ones_like(z))
    assert g_e.abs().sum() > 0


def test_api_paths_agree(tiny_model):
    x = _tiny_input()
    with torch.no_grad():
        xrec, qloss, idx = tiny_model(x)
        enc = tiny_model.encode(x)
        h = tiny_model.encode_latent(x)
        a = tiny_model.decode_code(idx, (2, 16, 16))
        b = tiny_model.decode_code(idx, (2, 16, 16, 32))
        c = tiny_model.decode_code(enc.codes)
    assert torch.equal(h, enc.h) and torch.equal(idx, enc.indices)
    assert torch.equal(qloss, enc.loss)
    assert torch.equal(xrec, tiny_model.decode(enc.z_q))
    assert torch.equal(a, b) and torch.equal(a, c)
    torch.testing.assert_close(a, xrec, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="embed_dim"):
        tiny_model.decode_code(idx, (2, 16, 16, 7))


def test_encoder_gets_gradients_through_quantizer(tiny_model):
    model = SOVQAE(tiny_model.config).train()
    model.load_state_dict(tiny_model.state_dict())
    x = _tiny_input()
    xrec, qloss, idx = model(x)
    assert xrec.shape == x.shape and idx.shape == (2 * 16 * 16,) and qloss.dim() == 0
    ((xrec - x) ** 2).mean().add(qloss).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.quantize.embedding.weight.grad.abs().sum() > 0
    assert model.quantize.usage.sum() == idx.numel()  # training mode counts code usage
    with pytest.raises(ValueError, match="multiple of the downsampling factor"):
        model.encode(torch.zeros(1, 3, 33, 32))


# --------------------------------------------------------------------------------------------
# save / load


def _assert_same_model(a: SOVQAE, b: SOVQAE) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_pretrained_round_trip(tiny_model, tmp_path):
    out = tmp_path / "ident" / "model"
    tiny_model.save_pretrained(out)
    # the weights, their config and the Hub mixin's model card; no temp file left
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    data = json.loads((out / "config.json").read_text())
    assert data["model_type"] == "sovqae" and data["ch_mult"] == [1, 2]
    assert data == {"model_type": "sovqae", **tiny_model.config.to_dict()}
    assert "library_name: ladtalk" in (out / "README.md").read_text()
    loaded = SOVQAE.from_pretrained(out)
    _assert_same_model(tiny_model, loaded)
    assert not loaded.training
    x = _tiny_input()
    with torch.no_grad():
        assert torch.equal(tiny_model(x)[0], loaded(x)[0])
    # overrides of training options; weights unchanged, EMA buffers stay out of the state dict
    ema = SOVQAE.from_pretrained(out, ema=True)
    assert ema.config.ema and set(ema.state_dict()) == set(tiny_model.state_dict())
    # load_sovqae dispatches on the directory too
    _assert_same_model(tiny_model, load_sovqae(out))
    with pytest.raises(TypeError):  # an override that is no config field
        SOVQAE.from_pretrained(out, no_such_field=1)


def test_identity_folders_written_before_the_mixin_hooks_load(golden_small, tmp_path):
    """An identity folder holds only config.json (no "README.md") + model.safetensors, with
    the config of an older release (e.g. a config name that no longer exists)."""
    from safetensors.torch import save_file

    model, ref, _ = golden_small
    old = tmp_path / "old-identity"
    old.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(old / "model.safetensors"))
    cfg = {"model_type": "sovqae", **model.config.to_dict()}
    for key in ("norm", "mid_attn", "legacy", "ema", "ema_decay", "ema_eps"):
        del cfg[key]  # fields added later keep their defaults
    (old / "config.json").write_text(json.dumps(cfg))
    (old / "meta.json").write_text(json.dumps({"config_name": "cpu-f8"}))
    loaded = SOVQAE.from_pretrained(old)
    _assert_same_model(model, loaded)
    with torch.no_grad():
        assert torch.equal(loaded.encode(ref["input"]).indices, ref["indices"])


def test_save_pretrained_is_atomic(tiny_model, tmp_path, monkeypatch):
    """Each file is replaced whole, and config.json is written last: an interrupted save
    never leaves a folder that loads as a half-written model."""
    import os

    def failing_replace(src, dst):
        raise OSError("disk full")

    target = tmp_path / "new"
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        tiny_model.save_pretrained(target)
    monkeypatch.undo()
    assert not target.exists() or list(target.iterdir()) == []  # no file, no temp file
    # an existing folder: a failed rewrite keeps the old weights whole and the other files
    tiny_model.save_pretrained(target)
    (target / "meta.json").write_text("{}")
    before = (target / "model.safetensors").read_bytes()
    other = _randomise(SOVQAE(tiny_model.config), seed=5)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        other.save_pretrained(target)
    monkeypatch.undo()
    assert (target / "model.safetensors").read_bytes() == before
    assert not [p for p in target.iterdir() if p.name.startswith(".")]
    assert (target / "meta.json").exists()
    with pytest.raises(CheckpointError, match="config.json"):  # unfinished: refused
        SOVQAE.from_pretrained(target)
    other.save_pretrained(target)
    _assert_same_model(other, SOVQAE.from_pretrained(target))
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "config.json",
                                                        "meta.json", "model.safetensors"]


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        SOVQAE.from_pretrained(tmp_path)
    bad = SOVQAE(get_config("tiny"))
    bad.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["n_embed"] = 64
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="quantize.embedding.weight"):
        SOVQAE.from_pretrained(tmp_path / "m")


def test_config_from_file_reads_a_saved_config(tmp_path):
    cfg = get_config("tiny", ema=True)
    SOVQAE(cfg).save_pretrained(tmp_path / "m")
    assert SOVQAEConfig.from_file(tmp_path / "m" / "config.json") == cfg
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"broken\.json: unreadable JSON config"):
        SOVQAEConfig.from_file(tmp_path / "broken.json")
    with pytest.raises(CheckpointError, match="missing.json"):
        SOVQAEConfig.from_file(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# taming Lightning checkpoints and YAML


def test_config_from_taming_yaml(tmp_path):
    want = SOVQAEConfig(**SMALL)
    assert config_from_taming_yaml(SMALL_YAML) == want
    import yaml
    assert config_from_taming_yaml(yaml.safe_load(SMALL_YAML)) == want
    assert config_from_taming_yaml(yaml.safe_load(SMALL_YAML)["model"]["params"]) == want
    p = tmp_path / "x.yaml"
    p.write_text(SMALL_YAML)
    assert config_from_taming_yaml(p) == want
    with pytest.raises(CheckpointError, match="not found"):
        config_from_taming_yaml(tmp_path / "missing.yaml")
    with pytest.raises(CheckpointError, match="ddconfig"):
        config_from_taming_yaml({"model": {"params": {"embed_dim": 4}}})


def test_taming_lightning_ckpt(golden_small, tmp_path):
    model, ref, _ = golden_small
    sd = model.state_dict()
    fake_loss = {"loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4),
                 "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1),
                 "loss.logvar": torch.zeros(())}
    ckpt = {"state_dict": {**sd, **fake_loss}, "global_step": 7, "epoch": 1,
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}]}
    log = tmp_path / "2021-logs"
    (log / "checkpoints").mkdir(parents=True)
    (log / "configs").mkdir()
    torch.save(ckpt, log / "checkpoints" / "last.ckpt")
    (log / "configs" / "2021-project.yaml").write_text(SMALL_YAML)
    for spec in (log, log / "checkpoints" / "last.ckpt"):
        loaded = load_sovqae(spec)
        _assert_same_model(model, loaded)
    with torch.no_grad():
        assert torch.equal(loaded.encode(ref["input"]).indices, ref["indices"])
    # no YAML: config inferred from shapes (+ the resolution that places attention)
    lone = tmp_path / "lone.ckpt"
    torch.save({"state_dict": {("first_stage_model." + k): v for k, v in
                               {**sd, **fake_loss}.items()}}, lone)
    with pytest.warns(UserWarning, match="inferred"):
        inferred = load_sovqae(lone, resolution=64)
    _assert_same_model(model, inferred)
    assert infer_config_from_state_dict(sd, resolution=64) == SOVQAEConfig(**SMALL)


class _TouchOnUnpickle:
    """Unpickling this calls Path.touch(marker): proof of code execution if it ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused(tmp_path):
    p, marker = tmp_path / "evil.ckpt", tmp_path / "executed"
    sd = SOVQAE(get_config("tiny")).state_dict()
    torch.save({"state_dict": sd, "callbacks": _TouchOnUnpickle(marker)}, p)
    with pytest.raises(CheckpointError, match="references Python code"):
        load_sovqae(p)
    assert not marker.exists()


def test_unreachable_hub_repo_is_a_checkpoint_error():
    # HF_HUB_OFFLINE=1 (conftest) and an empty cache: a clear CheckpointError, no traceback soup
    with pytest.raises(CheckpointError, match="Hugging Face Hub"):
        load_sovqae("nobody-here/no-such-sovqae")


# --------------------------------------------------------------------------------------------
# diffusers VQModel


def _diffusers():
    try:
        import diffusers  # noqa: F401
        from diffusers import VQModel
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"diffusers not importable ({exc}); install requirements-dev.txt")
    return VQModel


def test_diffusers_vqmodel_numerical_equivalence(golden_small, tmp_path):
    VQModel = _diffusers()
    model, ref, _ = golden_small
    cfg = model.config
    dcfg = diffusers_config_from_sovqae(cfg)
    assert dcfg["down_block_types"][-1] == "AttnDownEncoderBlock2D"
    assert dcfg["up_block_types"][0] == "AttnUpDecoderBlock2D"
    dm = VQModel(**dcfg).eval()
    mapped = taming_to_diffusers(model.state_dict())
    dm.load_state_dict(mapped, strict=True)
    with torch.no_grad():
        h = dm.encode(ref["input"]).latents
        z_q, _, (_, _, idx) = dm.quantize(h)
        dec = dm.decode(h).sample
        ours = model.encode(ref["input"])
    torch.testing.assert_close(h, ours.h, atol=1e-5, rtol=0)
    assert torch.equal(idx.flatten(), ours.indices)
    torch.testing.assert_close(z_q, ours.z_q, atol=1e-6, rtol=0)
    torch.testing.assert_close(dec, ref["decoded"], atol=1e-4, rtol=0)
    # mapping is a bijection and the config maps back
    back = diffusers_to_taming(mapped)
    sd = model.state_dict()
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    assert sovqae_config_from_diffusers(dm.config) == cfg
    # a diffusers checkpoint directory loads through load_sovqae
    dm.save_pretrained(tmp_path / "vq", safe_serialization=True)
    _assert_same_model(model, load_sovqae(tmp_path / "vq"))
    # old-style diffusers attention names are accepted
    legacy = {k.replace("to_q.", "query.").replace("to_out.0.", "proj_attn."): v
              for k, v in mapped.items()}
    assert diffusers_to_taming(legacy).keys() == sd.keys()


# --------------------------------------------------------------------------------------------
# codebook tools


def test_codebook_min_distance():
    emb = torch.nn.Embedding(4, 2)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 1.0]]))
    assert codebook_min_distance(emb).item() == pytest.approx(1.0)
    assert codebook_min_distance(emb, used=torch.tensor([0, 1, 2, 0])).item() == pytest.approx(5.0)
    mask = torch.tensor([True, False, True, False])
    assert codebook_min_distance(emb, used=mask).item() == pytest.approx(10.0)
    assert codebook_min_distance(emb, used=[1, 1]).item() == float("inf")
    d = codebook_min_distance(emb)
    d.backward()
    g = emb.weight.grad
    assert torch.allclose(g[2], torch.tensor([0.0, -1.0])) and torch.allclose(g[3], -g[2])
    assert g[:2].abs().sum() == 0


def test_nearest_codes_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q = VectorQuantizer(32, 8)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(32, 8, generator=g))
    lat = torch.randn(3, 8, 4, 5, generator=g)
    dist, idx = nearest_codes(q, lat, chunk=7)
    flat = lat.permute(0, 2, 3, 1).reshape(-1, 8)
    full = torch.cdist(flat, q.embedding.weight.detach())
    assert torch.equal(idx, full.argmin(1))
    torch.testing.assert_close(dist, full.min(1).values, atol=1e-5, rtol=1e-5)
    _, _, fwd_idx = q(lat)
    assert torch.equal(fwd_idx, idx)


def _clustered(n_clusters=8, per=40, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 5
    return (centres.repeat_interleave(per, 0)
            + 0.1 * torch.randn(n_clusters * per, dim, generator=g)), centres


def test_kmeans_init_reduces_quantization_error():
    data, _ = _clustered()
    q = VectorQuantizer(8, 4)
    before = quantization_error(q, data)
    mse = kmeans_init(q, data, iters=15, generator=torch.Generator().manual_seed(1))
    after = quantization_error(q, data)
    assert after == pytest.approx(mse, rel=1e-4)
    assert after < 0.05 * before
    # each cluster ends up with (about) its own code: near the noise floor 4 * 0.1^2
    assert after < 0.2
    # also works from a (B, C, H, W) latent grid, with fewer latents than codes
    q2 = VectorQuantizer(16, 4)
    grid = data[:12].T.reshape(1, 4, 3, 4)
    kmeans_init(q2, grid, iters=3, generator=torch.Generator().manual_seed(0))
    assert quantization_error(q2, grid) < 1e-3


def test_dead_code_restart_replaces_only_dead_codes():
    data, _ = _clustered()
    q = VectorQuantizer(8, 4).train()
    kmeans_init(q, data[:80], iters=5, generator=torch.Generator().manual_seed(0))
    before = q.embedding.weight.detach().clone()
    q.reset_usage()
    q(data[:80].T.reshape(1, 4, 8, 10))  # training forward counts usage
    usage = q.usage.clone()
    dead_expected = torch.nonzero(usage < 1).flatten()
    dead = dead_code_restart(q, None, data, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dead, dead_expected)
    after = q.embedding.weight.detach()
    live = torch.ones(8, dtype=torch.bool)
    live[dead] = False
    assert torch.equal(after[live], before[live])
    for i in dead.tolist():  # restarted codes sit exactly on latents
        assert (data - after[i]).abs().sum(1).min() == 0
    assert q.usage.sum() == 0  # counter cleared
    # explicit counts: exactly the codes below min_count move
    counts = torch.tensor([5.0, 0, 2, 9, 0, 1, 7, 3])
    snap = q.embedding.weight.detach().clone()
    moved = dead_code_restart(q.embedding, counts, data, min_count=2,
                              generator=torch.Generator().manual_seed(3))
    assert moved.tolist() == [1, 4, 5]
    keep = torch.tensor([0, 2, 3, 6, 7])
    assert torch.equal(q.embedding.weight.detach()[keep], snap[keep])


def test_ema_quantizer():
    data, centres = _clustered(n_clusters=4, per=50, seed=2)
    model_cfg = replace(get_config("tiny"), ema=True)
    assert set(SOVQAE(model_cfg).state_dict()) == set(SOVQAE(get_config("tiny")).state_dict())
    q = VectorQuantizer(4, 4, beta=0.25, ema=True, ema_decay=0.8).train()
    assert not q.embedding.weight.requires_grad
    assert list(q.state_dict()) == ["embedding.weight"]
    with torch.no_grad():
        q.embedding.weight.copy_(centres + 0.5)
    grid = data.T.reshape(1, 4, 10, 20)
    for _ in range(30):
        z = grid.clone().requires_grad_(True)
        z_q, loss, idx = q(z)
    err = (q.embedding.weight - centres).norm(dim=1)
    assert err.max() < 0.1  # codes moved onto the cluster means
    torch.testing.assert_close(loss, 0.25 * torch.mean((z_q.detach() - z) ** 2))
    # loading weights re-seeds the EMA statistics from the loaded codebook
    fresh = {"embedding.weight": centres + 2.0}
    q.load_state_dict(fresh)
    q.eval()
    q(grid)  # eval: no update
    assert torch.equal(q.embedding.weight, fresh["embedding.weight"])
    q.train()
    q(grid)
    step = q.embedding.weight - fresh["embedding.weight"]
    assert step.abs().max() > 0 and step.abs().max() < 2.0  # moved part-way, from the new codes
