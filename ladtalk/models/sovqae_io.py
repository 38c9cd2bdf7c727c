"""Loading SOVQAE weights from other VQGAN formats: taming Lightning checkpoints, taming YAML
configs, diffusers ``VQModel`` checkpoints; and the key mapping between taming and diffusers.

Formats understood by :func:`load_sovqae` (``SOVQAE.from_checkpoint``)
--------------------------------------------------------------------
* an SOVQAE directory (``config.json`` with ``"model_type": "sovqae"`` + ``model.safetensors``);
* a diffusers ``VQModel`` directory (``config.json`` with ``"_class_name": "VQModel"`` +
  ``diffusion_pytorch_model.safetensors`` / ``.bin``), or a pipeline directory holding one under
  ``vqvae/``;
* a taming-transformers log directory (``checkpoints/*.ckpt`` + ``configs/*.yaml``);
* a single weights file (``.ckpt``, ``.pt``, ``.pth``, ``.bin``, ``.safetensors``) in taming or
  diffusers key layout. Its config comes from, in order: the ``config`` argument; a
  ``config.json`` beside it; a YAML beside it (``<stem>.yaml``, ``*.yaml``, ``../configs/*.yaml``);
  otherwise it is inferred from the tensor shapes (everything is recoverable except the input
  resolution, which only decides attention placement; ``resolution`` defaults to 256);
* a Hub reference to a single file (``hf://OWNER/REPO/FILE`` or ``OWNER/REPO:FILE``, resolved by
  :mod:`ladtalk.checkpoints.hub`), or a Hub repo id written by ``save_pretrained``.

Pickle files are only ever read through :func:`ladtalk.checkpoints.hub.load_state_dict`
(``torch.load(weights_only=True)``). Lightning checkpoints keep generator keys only
(``encoder.``, ``decoder.``, ``quantize.``, ``quant_conv.``, ``post_quant_conv.``); the
``loss.*`` discriminator / LPIPS keys and anything else are dropped. A key prefix in front of
``encoder.conv_in.weight`` (``first_stage_model.`` in latent-diffusion checkpoints,
``module.``) is stripped.

taming <-> diffusers key mapping
--------------------------------
``encoder.down.{i}.block.{j}`` <-> ``encoder.down_blocks.{i}.resnets.{j}`` (``nin_shortcut`` <->
``conv_shortcut``); ``encoder.down.{i}.attn.{j}`` <-> ``...attentions.{j}`` (``norm`` <->
``group_norm``, 1x1 convs ``q/k/v/proj_out`` (C, C, 1, 1) <-> linears ``to_q/to_k/to_v/to_out.0``
(C, C)); ``encoder.down.{i}.downsample`` <-> ``encoder.down_blocks.{i}.downsamplers.0``;
``mid.block_1 / attn_1 / block_2`` <-> ``mid_block.resnets.0 / attentions.0 / resnets.1``;
``norm_out`` <-> ``conv_norm_out``. The decoder's levels are stored in opposite orders: taming
``decoder.up.{i}`` (i = 0 finest) is diffusers ``decoder.up_blocks.{L-1-i}``, and
``upsample`` <-> ``upsamplers.0``. ``quant_conv``, ``post_quant_conv`` and
``quantize.embedding.weight`` are shared. Old diffusers attention names (``query``, ``key``,
``value``, ``proj_attn``) are accepted too.

Equivalent diffusers config (:func:`diffusers_config_from_sovqae`): block_out_channels =
ch * ch_mult, layers_per_block = num_res_blocks, latent_channels = z_channels, vq_embed_dim =
embed_dim, num_vq_embeddings = n_embed, norm_num_groups 32, sample_size = resolution, and a
level uses ``AttnDownEncoderBlock2D`` / ``AttnUpDecoderBlock2D`` exactly where taming puts
attention (resolution / 2**i in attn_resolutions); the mid block always has attention.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ladtalk._util.device import DeviceLike, resolve_device
from ladtalk.errors import CheckpointError
from ladtalk.models.sovqae import (
    CONFIG_NAME,
    GENERATOR_PREFIXES,
    MODEL_TYPE,
    SOVQAE,
    WEIGHTS_NAME,
    SOVQAEConfig,
)

StateDict = Dict[str, torch.Tensor]
ConfigLike = Union[SOVQAEConfig, Mapping[str, Any], str, Path, None]

_WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# Extra quantizer tensors of taming's EMAVectorQuantizer: statistics, not weights.
_IGNORABLE_QUANTIZE = {"quantize.embedding.cluster_size", "quantize.embedding.embed_avg",
                       "quantize.embedding.initted"}


# --------------------------------------------------------------------------------------------
# taming YAML


def config_from_taming_yaml(path_or_dict: Union[str, Path, Mapping[str, Any]],
                            **overrides: Any) -> SOVQAEConfig:
    """SOVQAEConfig from a taming YAML (path, YAML text or parsed dict).

    Reads ``model.params.ddconfig`` plus ``model.params.embed_dim`` / ``n_embed`` (a dict that is
    already ``model.params`` or ``model`` works too). ``beta`` is 0.25 in taming's VQModel
    unless the YAML sets ``params.beta``. Gumbel / other quantizers are refused.
    """
    source = "taming config"
    if isinstance(path_or_dict, Mapping):
        data: Any = path_or_dict
    else:
        import yaml
        text = str(path_or_dict)
        if isinstance(path_or_dict, Path) or "\n" not in text:  # a path, not YAML text
            p = Path(text).expanduser()
            if not p.is_file():
                raise CheckpointError(f"taming config file not found: {p}")
            source = str(p)
            text = p.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CheckpointError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{source}: expected a mapping with model.params.ddconfig")
    node: Mapping[str, Any] = data
    if "model" in node and isinstance(node["model"], Mapping):
        node = node["model"]
    target = str(node.get("target", ""))
    if "params" in node and isinstance(node["params"], Mapping):
        node = node["params"]
    if "Gumbel" in target:
        raise CheckpointError(f"{source}: model target {target} uses a Gumbel quantizer; only "
                              "nearest-neighbour (VectorQuantizer2 / EMA) taming models load")
    dd = node.get("ddconfig")
    if not isinstance(dd, Mapping):
        raise CheckpointError(f"{source}: no model.params.ddconfig section found")
    fields_ = {k: dd[k] for k in ("double_z", "z_channels", "resolution", "in_channels", "out_ch",
                                   "ch", "ch_mult", "num_res_blocks", "attn_resolutions",
                                   "dropout") if k in dd}
    for k in ("embed_dim", "n_embed", "beta"):
        if k in node:
            fields_[k] = node[k]
    missing = [k for k in ("embed_dim", "n_embed") if k not in fields_]
    if missing:
        raise CheckpointError(f"{source}: model.params lacks {missing}")
    fields_.update(overrides)
    try:
        return SOVQAEConfig(**fields_)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# state-dict helpers


def generator_state_dict(state: Mapping[str, torch.Tensor],
                         source: str = "checkpoint") -> StateDict:
    """Keep only VQModel generator keys (dropping ``loss.*`` etc.), after stripping any prefix
    in front of ``encoder.conv_in.weight``. Raises CheckpointError if there is no generator."""
    anchor = "encoder.conv_in.weight"
    prefixes = [k[: -len(anchor)] for k in state if k.endswith(anchor)]
    if not prefixes:
        raise CheckpointError(f"{source} holds no VQGAN generator: no '*{anchor}' key among "
                              f"{len(state)} tensors (e.g. {list(state)[:3]})")
    prefix = min(prefixes, key=len)
    out: StateDict = {}
    for k, v in state.items():
        if not k.startswith(prefix):
            continue
        k = k[len(prefix):]
        if k.startswith(GENERATOR_PREFIXES) and k not in _IGNORABLE_QUANTIZE:
            out[k] = v
    return out


def is_diffusers_layout(state: Mapping[str, Any]) -> bool:
    return any(".down_blocks." in k or ".up_blocks." in k or ".mid_block." in k for k in state)


def _num_levels(state: Mapping[str, Any], pattern: str) -> int:
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
    levels = _num_levels(state, r"decoder\.up\.(\d+)\.")
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
    levels = _num_levels(state, r"decoder\.up_blocks\.(\d+)\.")
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


def infer_config_from_state_dict(state: Mapping[str, torch.Tensor], resolution: int = 256,
                                 **overrides: Any) -> SOVQAEConfig:
    """Recover the architecture from taming-layout tensor shapes.

    Everything but ``resolution`` is determined by the shapes; attention levels become
    ``attn_resolutions = [resolution // 2**i]``. ``beta`` / ``dropout`` keep their defaults.
    """
    try:
        conv_in = state["encoder.conv_in.weight"]
        ch, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])
        levels = _num_levels(state, r"encoder\.down\.(\d+)\.")
        ch_mult = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch
                   for i in range(levels)]
        num_res_blocks = _num_levels(state, r"encoder\.down\.0\.block\.(\d+)\.")
        enc_attn = [i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in state]
        dec_attn = [i for i in range(levels) if f"decoder.up.{i}.attn.0.q.weight" in state]
        z_channels = int(state["encoder.conv_out.weight"].shape[0])
        n_embed, embed_dim = (int(s) for s in state["quantize.embedding.weight"].shape)
        out_ch = int(state["decoder.conv_out.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"cannot infer the VQGAN config: tensor {exc} is missing") from None
    if enc_attn != dec_attn:
        raise CheckpointError(f"encoder attention levels {enc_attn} differ from decoder levels "
                              f"{dec_attn}; this layout is not a taming VQModel")
    fields_: Dict[str, Any] = dict(
        ch=ch, in_channels=in_channels, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks,
        attn_resolutions=tuple(resolution // 2 ** i for i in enc_attn), z_channels=z_channels,
        n_embed=n_embed, embed_dim=embed_dim, out_ch=out_ch, resolution=resolution,
        double_z=False)
    fields_.update(overrides)
    try:
        return SOVQAEConfig(**fields_)
    except ValueError as exc:
        raise CheckpointError(f"inferred VQGAN config is invalid: {exc}") from exc


# --------------------------------------------------------------------------------------------
# diffusers configs


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


# --------------------------------------------------------------------------------------------
# loading


def _read_state(path: Path) -> StateDict:
    from ladtalk.checkpoints.hub import load_state_dict
    return load_state_dict(path, strip_prefix=None)


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON config ({exc})") from exc


def _resolve_config(config: ConfigLike) -> Optional[SOVQAEConfig]:
    if config is None or isinstance(config, SOVQAEConfig):
        return config
    if isinstance(config, Mapping):
        if "ddconfig" in config or "model" in config or "params" in config:
            return config_from_taming_yaml(config)
        if "_class_name" in config or "block_out_channels" in config:
            return sovqae_config_from_diffusers(config)
        return SOVQAEConfig.from_dict(config)
    p = Path(config).expanduser()
    if p.suffix.lower() == ".json":
        return _resolve_config(_read_json(p))
    return config_from_taming_yaml(p)


def _yaml_beside(path: Path) -> Optional[Path]:
    cands = [path.with_suffix(".yaml"), path.with_suffix(".yml")]
    cands += sorted(path.parent.glob("*.yaml"))
    for d in (path.parent.parent / "configs", path.parent / "configs"):
        if d.is_dir():
            cands += sorted(d.glob("*project.yaml")) + sorted(d.glob("*.yaml"))
    for c in cands:
        if c.is_file():
            return c
    return None


def state_and_config_from_file(path: Union[str, Path], config: ConfigLike = None,
                               resolution: Optional[int] = None) -> Tuple[StateDict, SOVQAEConfig]:
    """Generator state dict (taming layout) and its config for one weights file."""
    p = Path(path).expanduser()
    raw = _read_state(p)
    diffusers = is_diffusers_layout(raw)
    cfg = _resolve_config(config)
    if cfg is None:
        side = p.parent / CONFIG_NAME
        if side.is_file():
            data = _read_json(side)
            if "_class_name" in data or diffusers:
                kw = {"resolution": resolution} if resolution else {}
                cfg = sovqae_config_from_diffusers(data, source=str(side), **kw)
            else:
                cfg = SOVQAEConfig.from_dict(data, source=str(side))
        elif not diffusers:
            y = _yaml_beside(p)
            if y is not None:
                cfg = config_from_taming_yaml(y)
    state = diffusers_to_taming(raw) if diffusers else raw
    state = generator_state_dict(state, source=str(p))
    if cfg is None:
        cfg = infer_config_from_state_dict(state, resolution=resolution or 256)
        warnings.warn(f"{p}: no config found beside it; architecture inferred from tensor shapes "
                      f"(resolution {cfg.resolution}, attention at {list(cfg.attn_resolutions)})",
                      stacklevel=3)
    return state, cfg


def _find_weights(d: Path) -> Optional[Path]:
    for name in DIFFUSERS_WEIGHTS + (WEIGHTS_NAME,):
        if (d / name).is_file():
            return d / name
    return None


def load_sovqae(spec: Union[str, Path], *, device: DeviceLike = "cpu", config: ConfigLike = None,
                resolution: Optional[int] = None, **overrides: Any) -> SOVQAE:
    """Load an SOVQAE from any supported source (see the module docstring); returns eval mode.

    ``config`` forces the architecture (SOVQAEConfig, dict, taming YAML or JSON path);
    ``resolution`` sets the input size used to place attention when the config is inferred;
    ``overrides`` change non-architecture fields (e.g. ``ema=True``, ``beta``).
    """
    from ladtalk.checkpoints.hub import CheckpointSpec, parse_checkpoint, resolve_checkpoint
    text = str(spec).strip()
    local = Path(text).expanduser()
    if not local.exists() and not text.startswith("hf://"):
        if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text):
            return SOVQAE.from_pretrained(text, device=device, **overrides)
    if local.is_dir() and not text.startswith("hf://"):
        state, cfg = _from_directory(local, config, resolution)
    else:
        target = parse_checkpoint(text) if not local.exists() else local
        if isinstance(target, CheckpointSpec):
            target = resolve_checkpoint(target)
        if target.suffix.lower() not in _WEIGHT_SUFFIXES:
            raise CheckpointError(f"{target}: unsupported VQGAN checkpoint type '{target.suffix}' "
                                  f"(expected one of {', '.join(_WEIGHT_SUFFIXES)} or a directory)")
        state, cfg = state_and_config_from_file(target, config, resolution)
    if overrides:
        from dataclasses import replace
        cfg = replace(cfg, **overrides)
    model = SOVQAE(cfg)
    model.load_generator_state_dict(state, strict=True, source=text)
    return model.to(resolve_device(device)).eval()


def _from_directory(d: Path, config: ConfigLike, resolution: Optional[int]):
    cfg_file = d / CONFIG_NAME
    if cfg_file.is_file():
        data = _read_json(cfg_file)
        weights = _find_weights(d)
        if weights is None:
            raise CheckpointError(f"{d} has a config.json but no weights "
                                  f"({WEIGHTS_NAME} or {DIFFUSERS_WEIGHTS[0]})")
        if data.get("model_type") == MODEL_TYPE or "_class_name" in data:
            return state_and_config_from_file(weights, config, resolution)
    if (d / "vqvae" / CONFIG_NAME).is_file():
        return _from_directory(d / "vqvae", config, resolution)
    cands = sorted((d / "checkpoints").glob("*.ckpt")) if (d / "checkpoints").is_dir() else []
    cands = cands or sorted(p for p in d.iterdir() if p.suffix.lower() in _WEIGHT_SUFFIXES)
    if not cands:
        raise CheckpointError(f"{d}: no VQGAN checkpoint found (looked for config.json + weights, "
                              "vqvae/, checkpoints/*.ckpt, or a single weights file)")
    last = [p for p in cands if p.name == "last.ckpt"]
    if len(cands) > 1 and not last:
        raise CheckpointError(f"{d} holds several checkpoints ({', '.join(p.name for p in cands)});"
                              " pass the file you mean")
    return state_and_config_from_file(last[0] if last else cands[0], config, resolution)


__all__ = ["config_from_taming_yaml", "generator_state_dict", "is_diffusers_layout",
           "taming_to_diffusers", "diffusers_to_taming", "infer_config_from_state_dict",
           "diffusers_config_from_sovqae", "sovqae_config_from_diffusers",
           "state_and_config_from_file", "load_sovqae"]
