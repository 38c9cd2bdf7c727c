"""Loading SOVQAE weights from other VQGAN formats: SOVQAE and diffusers folders, taming
Lightning checkpoints with their YAML configs, single weights files and Hub references.

:func:`load_sovqae` accepts all of them; the formats and how a config is found are listed in
docs/models.md. Pickles are only read through :func:`ladtalk.checkpoints.load_state_dict`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ladtalk._util.device import DeviceLike, resolve_device
from ladtalk.checkpoints import (
    CheckpointSpec,
    load_state_dict,
    parse_checkpoint,
    resolve_checkpoint,
)
from ladtalk.errors import CheckpointError
from ladtalk.models.sovqae import (
    CONFIG_NAME,
    GENERATOR_PREFIXES,
    MODEL_TYPE,
    SOVQAE,
    WEIGHTS_NAME,
    SOVQAEConfig,
    read_config_json,
)
from ladtalk.models.sovqae_diffusers import (
    DIFFUSERS_WEIGHTS,
    count_levels,
    diffusers_to_taming,
    is_diffusers_layout,
    sovqae_config_from_diffusers,
)

StateDict = Dict[str, torch.Tensor]
ConfigLike = Union[SOVQAEConfig, Mapping[str, Any], str, Path, None]

_WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
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


def infer_config_from_state_dict(state: Mapping[str, torch.Tensor], resolution: int = 256,
                                 **overrides: Any) -> SOVQAEConfig:
    """Recover the architecture from taming-layout tensor shapes.

    Everything but ``resolution`` is determined by the shapes; attention levels become
    ``attn_resolutions = [resolution // 2**i]``. ``beta`` / ``dropout`` keep their defaults.
    """
    try:
        conv_in = state["encoder.conv_in.weight"]
        ch, in_channels = int(conv_in.shape[0]), int(conv_in.shape[1])
        levels = count_levels(state, r"encoder\.down\.(\d+)\.")
        ch_mult = [int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) // ch
                   for i in range(levels)]
        num_res_blocks = count_levels(state, r"encoder\.down\.0\.block\.(\d+)\.")
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
# loading


def _read_state(path: Path) -> StateDict:
    return load_state_dict(path, strip_prefix=None)


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
        return _resolve_config(read_config_json(p))
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
                               resolution: Optional[int] = None, *,
                               sidecar: Optional[Mapping[str, Any]] = None
                               ) -> Tuple[StateDict, SOVQAEConfig]:
    """Generator state dict (taming layout) and its config for one weights file.

    ``sidecar``: the ``config.json`` beside ``path`` when the caller has already parsed it.
    """
    p = Path(path).expanduser()
    raw = _read_state(p)
    diffusers = is_diffusers_layout(raw)
    cfg = _resolve_config(config)
    if cfg is None:
        side = p.parent / CONFIG_NAME
        if sidecar is not None or side.is_file():
            data = read_config_json(side) if sidecar is None else sidecar
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
    """Load an SOVQAE from any supported source (docs/models.md); returns it in eval mode.

    ``config`` forces the architecture (SOVQAEConfig, dict, taming YAML or JSON path);
    ``resolution`` sets the input size used to place attention when the config is inferred;
    ``overrides`` change non-architecture fields (e.g. ``ema=True``, ``beta``).
    """
    text = str(spec).strip()
    local = Path(text).expanduser()
    if not local.exists() and not text.startswith("hf://") and \
            re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text):
        return _from_hub_repo(text, device, overrides)
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
        cfg = replace(cfg, **overrides)
    model = SOVQAE(cfg)
    model.load_generator_state_dict(state, strict=True, source=text)
    return model.to(resolve_device(device)).eval()


def _from_hub_repo(repo_id: str, device: DeviceLike, overrides: Dict[str, Any]) -> SOVQAE:
    """A Hub repository written by ``save_pretrained`` (any failure is a CheckpointError)."""
    try:
        return SOVQAE.from_pretrained(repo_id, device=device, **overrides)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - the Hub raises many types
        raise CheckpointError(f"cannot load SOVQAE '{repo_id}': not a local directory and not "
                              f"fetchable from the Hugging Face Hub ({exc})") from exc


def _from_directory(d: Path, config: ConfigLike, resolution: Optional[int]):
    cfg_file = d / CONFIG_NAME
    if cfg_file.is_file():
        data = read_config_json(cfg_file)
        weights = _find_weights(d)
        if weights is None:
            raise CheckpointError(f"{d} has a config.json but no weights "
                                  f"({WEIGHTS_NAME} or {DIFFUSERS_WEIGHTS[0]})")
        if data.get("model_type") == MODEL_TYPE or "_class_name" in data:
            return state_and_config_from_file(weights, config, resolution, sidecar=data)
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


__all__ = ["config_from_taming_yaml", "generator_state_dict", "infer_config_from_state_dict",
           "state_and_config_from_file", "load_sovqae"]
