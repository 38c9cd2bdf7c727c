"""SOVQAE: the per-identity VQGAN autoencoder (taming-transformers ``VQModel`` generator).

Images are NCHW RGB tensors in ``[-1, 1]``. Config fields and state-dict keys are taming's,
so taming checkpoints load without renaming (other formats: :mod:`ladtalk.models.sovqae_io`).
The named configs and the on-disk layout are described in docs/models.md.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ladtalk._util.atomic import write_bytes, write_json
from ladtalk._util.device import DeviceLike, resolve_device
from ladtalk._util.paths import PathLike
from ladtalk.checkpoints import read_safetensors
from ladtalk.errors import CheckpointError, InputError
from ladtalk.models.quantizer import VectorQuantizer
from ladtalk.models.vqgan import Decoder, Encoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "sovqae"
GENERATOR_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


@dataclass
class SOVQAEConfig:
    """Architecture (taming names) + quantizer training options (ours, not in the state dict)."""

    # taming ddconfig
    double_z: bool = False
    z_channels: int = 256
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: Tuple[int, ...] = (16,)
    dropout: float = 0.0
    # ours: patch-consistent variant (see ladtalk.models.vqgan); "group" is taming's
    norm: str = "group"
    mid_attn: bool = True
    # taming VQModel params / VectorQuantizer2
    embed_dim: int = 256
    n_embed: int = 1024
    beta: float = 0.25
    # ours
    legacy: bool = True          # taming's loss weighting (commitment 1, codebook beta)
    ema: bool = False            # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99
    ema_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        for name in ("z_channels", "resolution", "in_channels", "out_ch", "ch", "num_res_blocks",
                     "embed_dim", "n_embed"):
            setattr(self, name, int(getattr(self, name)))
        for name in ("dropout", "beta", "ema_decay", "ema_eps"):
            setattr(self, name, float(getattr(self, name)))
        self.norm = str(self.norm)
        for name in ("double_z", "legacy", "ema", "mid_attn"):
            setattr(self, name, bool(getattr(self, name)))
        problems = []
        if self.double_z:
            problems.append("double_z must be False for a VQ model (taming's VQModel feeds "
                            "z_channels, not 2*z_channels, into quant_conv)")
        if not self.ch_mult:
            problems.append("ch_mult must list at least one level")
        if self.norm not in ("group", "none"):
            problems.append(f"norm must be 'group' or 'none', got {self.norm!r}")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % 32]
        if self.norm == "group" and (bad or self.ch % 32):
            problems.append(f"channel counts {sorted(set(bad + [self.ch]))} must be multiples of "
                            "32 (GroupNorm uses 32 groups)")
        if self.ch_mult and self.resolution % self.downsample_factor:
            problems.append(f"resolution {self.resolution} is not divisible by the downsampling "
                            f"factor {self.downsample_factor}")
        if min(self.z_channels, self.embed_dim, self.n_embed, self.num_res_blocks, self.ch) < 1:
            problems.append("channel / code / block counts must be positive")
        if problems:
            raise ValueError("invalid SOVQAEConfig: " + "; ".join(problems))

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsample_factor

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "SOVQAEConfig":
        """Build from a dict; keys starting with ``_`` and ``model_type`` are metadata."""
        known = {f.name for f in fields(cls)}
        meta = {"model_type", "ladtalk_version", "format_version"}
        unknown = sorted(k for k in data if k not in known and k not in meta
                         and not k.startswith("_"))
        if unknown:
            warnings.warn(f"{source}: ignoring unknown SOVQAE config keys {unknown}", stacklevel=2)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: {exc}") from exc

    @classmethod
    def from_file(cls, path: PathLike) -> "SOVQAEConfig":
        """Read a ``config.json`` (of an identity or a saved SOVQAE folder)."""
        return cls.from_dict(read_config_json(path), source=str(path))


def read_config_json(path: PathLike) -> Dict[str, Any]:
    """The parsed JSON config at ``path``; an unreadable one is a :class:`CheckpointError`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON config ({exc})") from exc


CONFIGS: Dict[str, SOVQAEConfig] = {
    "base": SOVQAEConfig(),
    # the CPU enrollment recipe: normalisation-free, f = 4, patch-trained (docs/models.md)
    "cpu": SOVQAEConfig(resolution=256, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
                        attn_resolutions=(), z_channels=16, embed_dim=16, n_embed=1024,
                        ema=True, norm="none", mid_attn=False),
    # the previous cpu recipe (GroupNorm, 128 px); identities enrolled with it load as this
    "cpu-gn128": SOVQAEConfig(resolution=128, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
                              attn_resolutions=(), z_channels=16, embed_dim=16, n_embed=1024,
                              ema=True),
    "cpu-f4": SOVQAEConfig(resolution=128, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                           attn_resolutions=(), z_channels=64, embed_dim=64, n_embed=1024),
    "tiny": SOVQAEConfig(resolution=32, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(16,), z_channels=32, embed_dim=32, n_embed=128),
}

#: configs whose resolution enrollment chooses from the measured face size
AUTO_RESOLUTION_CONFIGS = ("cpu",)


def get_config(name: str, **overrides: Any) -> SOVQAEConfig:
    """A copy of a named config (``base``, ``cpu``, ``tiny``), optionally with field overrides."""
    try:
        cfg = CONFIGS[name]
    except KeyError:
        raise InputError(f"unknown SOVQAE config '{name}'; choose one of "
                         f"{', '.join(sorted(CONFIGS))}") from None
    return replace(cfg, **overrides)


def default_config_name(device: DeviceLike = None) -> str:
    """``base`` on CUDA, ``cpu`` elsewhere (``device`` as for :func:`resolve_device`)."""
    return "base" if resolve_device(device).type == "cuda" else "cpu"


@dataclass
class VQEncoding:
    """Result of quantizing a latent grid.

    ``z_q`` (B, embed_dim, h, w) quantized latent (straight-through gradient to ``h``);
    ``loss`` scalar codebook + commitment loss; ``indices`` flat (B*h*w,) codes in (b, h, w)
    order; ``h`` the pre-quantization latent (``quant_conv(encoder(x))``).
    """

    z_q: torch.Tensor
    loss: torch.Tensor
    indices: torch.Tensor
    h: torch.Tensor

    @property
    def codes(self) -> torch.Tensor:
        """Indices as a (B, h, w) grid."""
        b, _, hh, ww = self.z_q.shape
        return self.indices.view(b, hh, ww)


#: the README.md ``save_pretrained`` writes beside the files (huggingface_hub model card)
MODEL_CARD = """---
{{ card_data }}
---

A LaDTalk SOVQAE: the VQGAN autoencoder that restores one person's face detail
(`config.json` + `model.safetensors`). Load it with
`ladtalk.models.sovqae.SOVQAE.from_pretrained(...)`, or use the folder as an identity:
`python -m ladtalk generate --identity DIR ...`.
"""


class SOVQAE(nn.Module, PyTorchModelHubMixin, library_name="ladtalk",
             tags=["vqgan", "talking-head", "ladtalk"], model_card_template=MODEL_CARD):
    """Taming-compatible VQGAN generator. Build with ``SOVQAE(cfg)`` or ``SOVQAE(**fields)``."""

    def __init__(self, config: Optional[Union[SOVQAEConfig, Mapping[str, Any]]] = None,
                 **fields_: Any) -> None:
        super().__init__()
        if config is None:
            config = SOVQAEConfig(**fields_)
        elif isinstance(config, Mapping):
            config = SOVQAEConfig(**{**dict(config), **fields_})
        elif fields_:
            config = replace(config, **fields_)
        self.config: SOVQAEConfig = config
        c = config
        self.encoder = Encoder(ch=c.ch, ch_mult=c.ch_mult, num_res_blocks=c.num_res_blocks,
                               attn_resolutions=c.attn_resolutions, in_channels=c.in_channels,
                               resolution=c.resolution, z_channels=c.z_channels,
                               double_z=c.double_z, dropout=c.dropout, norm=c.norm,
                               mid_attn=c.mid_attn)
        self.decoder = Decoder(ch=c.ch, out_ch=c.out_ch, ch_mult=c.ch_mult,
                               num_res_blocks=c.num_res_blocks,
                               attn_resolutions=c.attn_resolutions, resolution=c.resolution,
                               z_channels=c.z_channels, dropout=c.dropout, norm=c.norm,
                               mid_attn=c.mid_attn)
        self.quantize = VectorQuantizer(c.n_embed, c.embed_dim, beta=c.beta, legacy=c.legacy,
                                        ema=c.ema, ema_decay=c.ema_decay, ema_eps=c.ema_eps)
        self.quant_conv = nn.Conv2d(c.z_channels, c.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)

    # -- properties ---------------------------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    # -- API ------------------------------------------------------------------------------------
    def _check_image(self, x: torch.Tensor) -> None:
        f = self.downsample_factor
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"SOVQAE expects (B, {self.config.in_channels}, H, W) images in "
                             f"[-1, 1], got shape {tuple(x.shape)}")
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"image size {x.shape[2]}x{x.shape[3]} is not a multiple of the "
                             f"downsampling factor {f}")

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latent ``h = quant_conv(encoder(x))``, (B, embed_dim, H/f, W/f)."""
        self._check_image(x)
        return self.quant_conv(self.encoder(x))

    def quantize_latent(self, h: torch.Tensor) -> VQEncoding:
        z_q, loss, indices = self.quantize(h)
        return VQEncoding(z_q=z_q, loss=loss, indices=indices, h=h)

    def encode(self, x: torch.Tensor) -> VQEncoding:
        return self.quantize_latent(self.encode_latent(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Image (B, out_ch, h*f, w*f), unclamped, from a (quantized) latent."""
        return self.decoder(self.post_quant_conv(z_q))

    def decode_code(self, indices: torch.Tensor,
                    shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Decode code indices: flat with ``shape`` = (B, h, w) [or taming's (B, h, w, C)],
        or an already (B, h, w) shaped tensor with ``shape=None``."""
        if shape is None:
            if indices.dim() != 3:
                raise ValueError("pass shape=(B, h, w) for flat indices")
            shape = tuple(indices.shape)
        shape = tuple(int(s) for s in shape)
        if len(shape) == 4:
            if shape[3] != self.config.embed_dim:
                raise ValueError(f"shape {shape} does not end in embed_dim "
                                 f"{self.config.embed_dim}")
            shape = shape[:3]
        if len(shape) != 3:
            raise ValueError(f"shape must be (B, h, w) or (B, h, w, C), got {shape}")
        return self.decode(self.quantize.lookup(indices.to(self.device), shape))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction, codebook loss, flat indices)``."""
        enc = self.encode(x)
        return self.decode(enc.z_q), enc.loss, enc.indices

    def generator_parameters(self):
        """Parameters the autoencoder optimiser trains (the codebook is skipped under EMA)."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- persistence ----------------------------------------------------------------------------
    def config_dict(self) -> Dict[str, Any]:
        return {"model_type": MODEL_TYPE, **self.config.to_dict()}

    def _save_pretrained(self, save_directory: Path) -> None:
        """Hub-mixin hook: ``model.safetensors``, then ``config.json``, each replaced atomically.

        ``config.json`` comes last, so a folder holding one was saved completely.
        """
        from safetensors.torch import save

        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        write_bytes(Path(save_directory) / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        write_json(Path(save_directory) / CONFIG_NAME, self.config_dict(), sort_keys=True)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: Optional[str],
                         cache_dir: Optional[Union[str, Path]], force_download: bool,
                         local_files_only: bool, token: Optional[Union[str, bool]],
                         config: Optional[Mapping[str, Any]] = None, device: DeviceLike = "cpu",
                         strict: bool = True, **model_kwargs: Any) -> "SOVQAE":
        """Hub-mixin hook behind ``from_pretrained(dir_or_repo_id, device=..., **overrides)``.

        ``config`` is the parsed ``config.json`` the mixin found (None: it found none); other
        keyword arguments that differ from it override non-weight fields (e.g. ``ema=True``).
        Returns an eval model.
        """
        if config is None:
            raise _missing_file(model_id, CONFIG_NAME)
        if "_class_name" in config:
            raise CheckpointError(f"{model_id} holds a diffusers config "
                                  f"({config['_class_name']}); load diffusers VQModel weights "
                                  "with ladtalk.models.sovqae_io.load_sovqae")
        # the mixin also passes every config.json key as a kwarg: keep only real overrides
        overrides = {k: v for k, v in model_kwargs.items()
                     if k not in config or config[k] != v}
        cfg = replace(SOVQAEConfig.from_dict(config, source=f"{model_id}/{CONFIG_NAME}"),
                      **overrides)
        hub_kw = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                      token=token, local_files_only=local_files_only)
        w_path = _model_file(model_id, WEIGHTS_NAME, hub_kw)
        model = cls(cfg)
        model.load_generator_state_dict(read_safetensors(w_path), strict=strict, source=w_path)
        return model.to(resolve_device(device)).eval()

    def load_generator_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True,
                                  source: str = "state dict") -> None:
        """Load taming-layout weights, with shape errors reported as :class:`CheckpointError`."""
        own = self.state_dict()
        wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if wrong or (strict and (missing or unexpected)):
            parts = []
            if wrong:
                parts.append(f"{len(wrong)} shape mismatches, e.g. {wrong[:3]}")
            if missing:
                parts.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
            raise CheckpointError(f"{source} does not fit this SOVQAE config "
                                  f"({'; '.join(parts)}); check the config that goes with it")
        self.load_state_dict(dict(state), strict=strict)


def _missing_file(model_id: str, filename: str) -> CheckpointError:
    """The error for a local folder or Hub repo ``model_id`` that lacks ``filename``."""
    expected = (f"expected {CONFIG_NAME} + {WEIGHTS_NAME} written by save_pretrained / enroll")
    if os.path.isdir(model_id):
        return CheckpointError(f"{model_id} is not an SOVQAE directory: {filename} is missing "
                               f"({expected})")
    return CheckpointError(f"cannot load SOVQAE '{model_id}': {filename} is missing from that "
                           f"Hugging Face Hub repo or could not be fetched ({expected})")


def _model_file(model_id: str, filename: str, hub_kw: Dict[str, Any]) -> str:
    """``filename`` inside a local SOVQAE folder, or downloaded from the Hub repo ``model_id``."""
    if os.path.isdir(model_id):
        path = os.path.join(model_id, filename)
        if not os.path.isfile(path):
            raise _missing_file(model_id, filename)
        return path
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(model_id, filename, **hub_kw)
    except Exception as exc:  # noqa: BLE001 - the Hub raises many types
        raise CheckpointError(f"cannot load SOVQAE '{model_id}': not a local directory and not "
                              f"fetchable from the Hugging Face Hub ({exc})") from exc


__all__ = ["SOVQAE", "SOVQAEConfig", "VQEncoding", "CONFIGS", "get_config",
           "default_config_name", "read_config_json", "CONFIG_NAME", "WEIGHTS_NAME",
           "GENERATOR_PREFIXES"]
