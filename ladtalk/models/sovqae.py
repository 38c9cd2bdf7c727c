"""SOVQAE: the per-identity VQGAN autoencoder (taming-transformers ``VQModel`` generator).

Conventions
-----------
* Images are NCHW RGB float tensors in ``[-1, 1]``; decoded images are returned unclamped.
* ``SOVQAEConfig`` uses taming's own field names (``model.params.ddconfig`` + ``embed_dim``,
  ``n_embed``, and the quantizer's ``beta``), so a taming YAML maps 1:1
  (see :func:`ladtalk.models.sovqae_io.config_from_taming_yaml`).
* Submodules and the state dict are those of a taming ``VQModel`` without its loss /
  discriminator: ``encoder.*``, ``quant_conv.*``, ``quantize.embedding.weight``,
  ``post_quant_conv.*``, ``decoder.*``. Checkpoints move between the two without renaming.
* The latent grid is ``resolution / f`` with ``f = 2 ** (len(ch_mult) - 1)``; code indices
  are flat in (b, h, w) order, as in taming.

Named configs (:func:`get_config`)
----------------------------------
``base``  the paper's model: 256 px, ch 128, ch_mult (1,1,2,2,4) (f=16), 2 res blocks,
          attention at 16, z 256, codebook 1024 x 256 (72.1 M parameters; taming's ImageNet
          f16/n1024 layout, so public weights initialise it). Default on CUDA.
``cpu``   sized to enroll an identity in minutes on 2 CPU cores: normalisation-free, f=4,
          0.72 M parameters, patch-trained, 256 px (128 px for small faces); default on CPU.
          See :data:`CPU_CONFIG_NOTES` for the design and the other CPU layouts.
``tiny``  a few-hundred-k-parameter model for unit tests.

Saving / loading
----------------
``save_pretrained(dir)`` writes ``config.json`` (the config fields plus ``"model_type":
"sovqae"``) and ``model.safetensors``; a new directory is assembled under a temp name beside
it and renamed into place, an existing one gets each file replaced atomically (the identity
store swaps whole directories on top of this). ``from_pretrained(dir_or_repo_id)`` reads them
back (strict). Taming Lightning ``.ckpt`` files and diffusers ``VQModel`` checkpoints load
through :meth:`SOVQAE.from_checkpoint` (see :mod:`ladtalk.models.sovqae_io`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ladtalk._util.device import DeviceLike, resolve_device
from ladtalk.errors import CheckpointError
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


CONFIGS: Dict[str, SOVQAEConfig] = {
    "base": SOVQAEConfig(),
    # See CPU_CONFIG_NOTES.
    "cpu": SOVQAEConfig(resolution=256, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
                        attn_resolutions=(), z_channels=16, embed_dim=16, n_embed=1024,
                        ema=True, norm="none", mid_attn=False),
    "cpu-gn128": SOVQAEConfig(resolution=128, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
                              attn_resolutions=(), z_channels=16, embed_dim=16, n_embed=1024,
                              ema=True),
    "cpu-f8": SOVQAEConfig(resolution=128, ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1,
                           attn_resolutions=(), z_channels=64, embed_dim=64, n_embed=1024),
    "cpu-f4": SOVQAEConfig(resolution=128, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                           attn_resolutions=(), z_channels=64, embed_dim=64, n_embed=1024),
    "tiny": SOVQAEConfig(resolution=32, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(16,), z_channels=32, embed_dim=32, n_embed=128),
}

#: configs whose resolution enrollment chooses from the measured face size
AUTO_RESOLUTION_CONFIGS = ("cpu",)

CPU_CONFIG_NOTES = """\
cpu     the enrollment recipe (docs/enrollment.md): ch 32, ch_mult (1, 1, 2) -> f = 4, 1 res
        block per level, z = embed_dim = 16, 1024 codes, EMA codebook, and *normalisation-free*
        (norm "none", no mid attention; 0.72 M parameters). Nothing depends on whole-image
        statistics, so it trains on 128 px patches of 256 px crops (4x cheaper per image) and
        runs on whole crops. Its resolution follows the face: 256 px for faces of 200 px or
        more, 128 px below (AUTO_RESOLUTION_CONFIGS; ladtalk.face.video_crops.choose_resolution).
cpu-gn128  the previous cpu recipe: the same layout with GroupNorm and mid attention at a fixed
        128 px, trained on whole crops (identities enrolled before the change load as this).
cpu-f8  the team's first CPU probe layout with one res block per level: ch_mult (1, 2, 2, 4)
        -> f = 8 (16 x 16 latent grid), z = embed_dim = 64, 1024 codes; 3.21 M parameters.
cpu-f4  the same with ch_mult (1, 2, 2) -> f = 4 (32 x 32 grid); 1.10 M parameters.
GroupNorm models cannot train on patches: the statistics of a patch differ from a whole
crop's, and a patch-trained GroupNorm model reconstructs whole held-out crops at ~15 dB
(docs/enrollment.md). With two threads on a loaded machine OpenMP spin-waiting multiplied the
step time; OMP_WAIT_POLICY=PASSIVE (set by ``python -m ladtalk`` and the tests) removes it.
"""


def get_config(name: str, **overrides: Any) -> SOVQAEConfig:
    """A copy of a named config (``base``, ``cpu``, ``tiny``), optionally with field overrides."""
    try:
        cfg = CONFIGS[name]
    except KeyError:
        from ladtalk.errors import InputError
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


class SOVQAE(nn.Module, PyTorchModelHubMixin, library_name="ladtalk",
             tags=["vqgan", "talking-head", "ladtalk"]):
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
        self._hub_mixin_config = config  # what PyTorchModelHubMixin.push_to_hub serialises
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

    def save_pretrained(self, save_directory: Union[str, Path], *,
                        config: Optional[Any] = None, push_to_hub: bool = False,
                        repo_id: Optional[str] = None, model_card_kwargs: Optional[dict] = None,
                        **push_to_hub_kwargs: Any) -> Optional[str]:
        """Write ``config.json`` + ``model.safetensors`` into ``save_directory`` atomically.

        A directory that does not exist yet is assembled under a hidden temp name beside it and
        renamed into place (all or nothing); in an existing directory each file is written to a
        temp file and ``os.replace``-d (weights first, then config), other files are kept.
        ``config`` is accepted for ``PyTorchModelHubMixin.push_to_hub`` compatibility; the
        model's own config is always what is written.
        """
        target = Path(save_directory)
        files = _serialise(self)
        written = False
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            try:
                for name, data in files:
                    _write_bytes(tmp / name, data)
                os.rename(tmp, target)
                written = True
            except OSError:  # e.g. someone created the directory meanwhile: per-file below
                pass
            finally:
                if not written:
                    shutil.rmtree(tmp, ignore_errors=True)
        if not written:
            for name, data in files:
                _atomic_write(target / name, data)
        if push_to_hub:
            return self.push_to_hub(repo_id or target.name, model_card_kwargs=model_card_kwargs,
                                    **push_to_hub_kwargs)
        return None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, Path], *,
                        device: DeviceLike = "cpu", strict: bool = True,
                        revision: Optional[str] = None, cache_dir: Optional[str] = None,
                        force_download: bool = False, token: Optional[Union[str, bool]] = None,
                        local_files_only: bool = False, **overrides: Any) -> "SOVQAE":
        """Load a ``save_pretrained`` directory or Hub repo; ``overrides`` change non-weight
        config fields (e.g. ``ema=True`` to continue training with EMA). Returns an eval model."""
        src = str(pretrained_model_name_or_path)
        if os.path.isdir(src):
            cfg_path, w_path = os.path.join(src, CONFIG_NAME), os.path.join(src, WEIGHTS_NAME)
            for p in (cfg_path, w_path):
                if not os.path.isfile(p):
                    raise CheckpointError(f"{src} is not an SOVQAE directory: {os.path.basename(p)}"
                                          " is missing (expected config.json + model.safetensors"
                                          " written by save_pretrained / enroll)")
        else:
            from huggingface_hub import hf_hub_download
            kw = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                      token=token, local_files_only=local_files_only)
            try:
                cfg_path = hf_hub_download(src, CONFIG_NAME, **kw)
                w_path = hf_hub_download(src, WEIGHTS_NAME, **kw)
            except Exception as exc:  # noqa: BLE001 - hub raises many types
                raise CheckpointError(f"cannot load SOVQAE '{src}': not a local directory and not "
                                      f"fetchable from the Hugging Face Hub ({exc})") from exc
        try:
            with open(cfg_path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{cfg_path}: unreadable config ({exc})") from exc
        if "_class_name" in data:
            raise CheckpointError(f"{cfg_path} is a diffusers config ({data['_class_name']}); "
                                  "use SOVQAE.from_checkpoint for diffusers VQModel weights")
        cfg = replace(SOVQAEConfig.from_dict(data, source=cfg_path), **overrides)
        from safetensors.torch import load_file
        try:
            state = load_file(w_path, device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{w_path}: unreadable safetensors file ({exc})") from exc
        model = cls(cfg)
        model.load_generator_state_dict(state, strict=strict, source=w_path)
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

    @classmethod
    def from_checkpoint(cls, spec: Union[str, Path], *, device: DeviceLike = "cpu",
                        config: Optional[SOVQAEConfig] = None, **kwargs: Any) -> "SOVQAE":
        """Load from any supported format; see :func:`ladtalk.models.sovqae_io.load_sovqae`."""
        from ladtalk.models.sovqae_io import load_sovqae
        return load_sovqae(spec, device=device, config=config, **kwargs)


# -- file helpers ----------------------------------------------------------------------------
def _serialise(model: SOVQAE):
    from safetensors.torch import save
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = save(state, metadata={"format": "pt"})
    cfg = (json.dumps(model.config_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")
    return [(WEIGHTS_NAME, weights), (CONFIG_NAME, cfg)]


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = ["SOVQAE", "SOVQAEConfig", "VQEncoding", "CONFIGS", "get_config",
           "default_config_name", "CONFIG_NAME", "WEIGHTS_NAME", "GENERATOR_PREFIXES"]
