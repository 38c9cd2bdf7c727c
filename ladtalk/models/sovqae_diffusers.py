"""Diffusers ``VQModel`` <-> taming ``VQModel``: state-dict key mapping and configs.

The mapping (block names, the decoder's reversed level order, 1x1 attention convs as
linears) is described in docs/models.md.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Tuple

import torch

from ladtalk.errors import CheckpointError
from ladtalk.models.sovqae import SOVQAEConfig

StateDict = Dict[str, torch.Tensor]
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def is_diffusers_layout(state: Mapping[str, Any]) -> bool:
    return any(".down_blocks." in k or ".up_blocks." in k or ".mid_block." in k for k in state)


def count_levels(state: Mapping[str, Any], pattern: str) -> int:
    idx = {int(m.group(1)) for k in state for m in [re.match(pattern, k)] if m}
    if not idx:
        raise CheckpointError(f"cannot find any level matching {pattern!r} in the state dict")
    return max(idx) + 1


_ATTN_T2D = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_D2T = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
             "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def _attn_t2d(rest: str, value: torch.Tensor) -> Tuple[str, torch.Tensor]:
    name, _, leaf = rest.rpartition(".")
    new = _ATTN_T2D[name]
    if name != "norm" and leaf == "weight":
        value = value.reshape(value.shape[0], value.shape[1])
    return f"{new}.{leaf}", value


def _attn_d2t(rest: str, value: torch.Tensor) -> Tuple[str, torch.Tensor]:
    name, _, leaf = rest.rpartition(".")
    new = _ATTN_D2T[name]
    if new != "norm" and leaf == "weight" and value.dim() == 2:
        value = value.reshape(value.shape[0], value.shape[1], 1, 1)
    return f"{new}.{leaf}", value


def _resnet(rest: str, to_diffusers: bool) -> str:
    a, b = ("nin_shortcut", "conv_shortcut") if to_diffusers else ("conv_shortcut", "nin_shortcut")
    return b + rest[len(a):] if rest.startswith(a + ".") else rest


def taming_to_diffusers(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename a taming VQModel generator state dict to diffusers ``VQModel`` keys."""
    levels = count_levels(state, r"decoder\.up\.(\d+)\.")
    out: StateDict = {}
    for key, v in state.items():
        new, val = key, v
        m = re.match(r"(encoder|decoder)\.(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(.+)$", key)
        m2 = re.match(r"(encoder|decoder)\.(down|up)\.(\d+)\.(downsample|upsample)\.(.+)$", key)
        m3 = re.match(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(.+)$", key)
        if m:
            part, kind, i, sub, j, rest = m.groups()
            i = int(i) if part == "encoder" else levels - 1 - int(i)
            blocks = "down_blocks" if part == "encoder" else "up_blocks"
            if sub == "block":
                new = f"{part}.{blocks}.{i}.resnets.{j}.{_resnet(rest, True)}"
            else:
                rest, val = _attn_t2d(rest, v)
                new = f"{part}.{blocks}.{i}.attentions.{j}.{rest}"
        elif m2:
            part, kind, i, sub, rest = m2.groups()
            if part == "encoder":
                new = f"encoder.down_blocks.{i}.downsamplers.0.{rest}"
            else:
                new = f"decoder.up_blocks.{levels - 1 - int(i)}.upsamplers.0.{rest}"
        elif m3:
            part, sub, rest = m3.groups()
            if sub == "attn_1":
                rest, val = _attn_t2d(rest, v)
                new = f"{part}.mid_block.attentions.0.{rest}"
            else:
                idx = 0 if sub == "block_1" else 1
                new = f"{part}.mid_block.resnets.{idx}.{_resnet(rest, True)}"
        elif re.match(r"(encoder|decoder)\.norm_out\.", key):
            new = key.replace(".norm_out.", ".conv_norm_out.", 1)
        out[new] = val
    return out


def diffusers_to_taming(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename a diffusers ``VQModel`` state dict to taming VQModel generator keys."""
    levels = count_levels(state, r"decoder\.up_blocks\.(\d+)\.")
    out: StateDict = {}
    for key, v in state.items():
        new, val = key, v
        m = re.match(r"(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)"
                     r"\.(\d+)\.(.+)$", key)
        m2 = re.match(r"(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\."
                      r"(downsamplers|upsamplers)\.0\.(.+)$", key)
        m3 = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key)
        if m:
            part, _, i, sub, j, rest = m.groups()
            i = int(i) if part == "encoder" else levels - 1 - int(i)
            level = f"{part}.{'down' if part == 'encoder' else 'up'}.{i}"
            if sub == "resnets":
                new = f"{level}.block.{j}.{_resnet(rest, False)}"
            else:
                rest, val = _attn_d2t(rest, v)
                new = f"{level}.attn.{j}.{rest}"
        elif m2:
            part, _, i, _, rest = m2.groups()
            if part == "encoder":
                new = f"encoder.down.{i}.downsample.{rest}"
            else:
                new = f"decoder.up.{levels - 1 - int(i)}.upsample.{rest}"
        elif m3:
            part, sub, j, rest = m3.groups()
            if sub == "attentions":
                rest, val = _attn_d2t(rest, v)
                new = f"{part}.mid.attn_1.{rest}"
            else:
                new = f"{part}.mid.block_{int(j) + 1}.{_resnet(rest, False)}"
        elif re.match(r"(encoder|decoder)\.conv_norm_out\.", key):
            new = key.replace(".conv_norm_out.", ".norm_out.", 1)
        out[new] = val
    return out


def diffusers_config_from_sovqae(cfg: SOVQAEConfig) -> Dict[str, Any]:
    """Keyword arguments for ``diffusers.VQModel`` giving the same network as ``cfg``."""
    attn = [cfg.resolution // 2 ** i in cfg.attn_resolutions for i in range(len(cfg.ch_mult))]
    return dict(
        in_channels=cfg.in_channels, out_channels=cfg.out_ch,
        down_block_types=tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D"
                               for a in attn),
        up_block_types=tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D"
                             for a in reversed(attn)),
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult),
        layers_per_block=cfg.num_res_blocks, act_fn="silu", latent_channels=cfg.z_channels,
        sample_size=cfg.resolution, num_vq_embeddings=cfg.n_embed, norm_num_groups=32,
        vq_embed_dim=cfg.embed_dim, norm_type="group", mid_block_add_attention=True)


def sovqae_config_from_diffusers(dcfg: Mapping[str, Any], source: str = "diffusers config",
                                 **overrides: Any) -> SOVQAEConfig:
    """SOVQAEConfig equivalent to a diffusers ``VQModel`` config (refuses what taming lacks)."""
    def get(key, default):
        return dcfg.get(key, default)
    boc = list(get("block_out_channels", (64,)))
    down = list(get("down_block_types", ("DownEncoderBlock2D",)))
    up = list(get("up_block_types", ("UpDecoderBlock2D",)))
    problems = []
    if len(down) != len(boc) or len(up) != len(boc):
        problems.append("down/up block types and block_out_channels differ in length")
    ch = boc[0]
    if any(c % ch for c in boc):
        problems.append(f"block_out_channels {boc} are not multiples of the first")
    if get("act_fn", "silu") != "silu" or get("norm_type", "group") != "group":
        problems.append("only act_fn 'silu' and norm_type 'group' match taming")
    if int(get("norm_num_groups", 32)) != 32:
        problems.append("norm_num_groups must be 32")
    if not get("mid_block_add_attention", True):
        problems.append("taming's mid block always has attention")
    enc = []
    for t in down:
        if t not in ("DownEncoderBlock2D", "AttnDownEncoderBlock2D"):
            problems.append(f"unsupported down block {t}")
        enc.append(t.startswith("Attn"))
    dec = []
    for t in reversed(up):
        if t not in ("UpDecoderBlock2D", "AttnUpDecoderBlock2D"):
            problems.append(f"unsupported up block {t}")
        dec.append(t.startswith("Attn"))
    if enc != dec:
        problems.append("encoder and decoder attention levels differ")
    if problems:
        raise CheckpointError(f"{source}: cannot map to a taming VQGAN: " + "; ".join(problems))
    res = int(overrides.pop("resolution", get("sample_size", 256)))
    levels = len(boc)
    if res % 2 ** (levels - 1):
        res = 256 if any(enc) else 2 ** (levels - 1) * max(1, res // 2 ** (levels - 1))
    fields_: Dict[str, Any] = dict(
        in_channels=int(get("in_channels", 3)), out_ch=int(get("out_channels", 3)), ch=ch,
        ch_mult=tuple(c // ch for c in boc), num_res_blocks=int(get("layers_per_block", 1)),
        attn_resolutions=tuple(res // 2 ** i for i, a in enumerate(enc) if a),
        z_channels=int(get("latent_channels", 3)),
        embed_dim=int(get("vq_embed_dim", None) or get("latent_channels", 3)),
        n_embed=int(get("num_vq_embeddings", 256)), resolution=res, double_z=False)
    fields_.update(overrides)
    try:
        return SOVQAEConfig(**fields_)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
