"""Image degradations that probe the SOVQAE's "latent denoising": blur, noise, down-up.

Canonical form: float NCHW (or CHW) tensors on the [0, 1] scale; numpy HWC / NHWC images
(uint8 or float) are converted and given back in their own layout and dtype. Blur sigma is in
pixels at the image's resolution, noise sigma on the [0, 1] scale (seeded on the CPU, one seed
per image if wanted), down-up is area-down to ``size`` px then bicubic back. Specs such as
``"blur:2.0"`` parse to :class:`Degradation`. Details: docs/robustness.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ladtalk.errors import InputError
from ladtalk.media.resample import blur_nchw, down_up_nchw

ImageLike = Union[torch.Tensor, np.ndarray]
SeedLike = Union[int, Sequence[int], None]


# -- adapter between numpy HWC/NHWC and canonical NCHW [0, 1] -------------------------------
def _to_canonical(img: ImageLike) -> Tuple[torch.Tensor, Callable[[torch.Tensor], ImageLike]]:
    """Return ``(x, back)``: x is float NCHW in [0, 1]; ``back(y)`` restores the input's form."""
    if isinstance(img, torch.Tensor):
        if img.dim() == 3:
            return _float(img.unsqueeze(0)), lambda y: y.squeeze(0).to(_out_dtype(img))
        if img.dim() == 4:
            return _float(img), lambda y: y.to(_out_dtype(img))
        raise ValueError("expected a (C, H, W) or (N, C, H, W) tensor, got shape "
                         f"{tuple(img.shape)}")
    if isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim not in (3, 4):
            raise ValueError(f"expected an HWC or NHWC array, got shape {img.shape}")
        single = arr.ndim == 3
        nhwc = arr[None] if single else arr
        is_uint8 = arr.dtype == np.uint8
        x = torch.from_numpy(np.ascontiguousarray(nhwc)).permute(0, 3, 1, 2).float()
        if is_uint8:
            x = x / 255.0
        elif not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"numpy images must be uint8 or float, got {arr.dtype}")

        def back(y: torch.Tensor) -> np.ndarray:
            out = y.detach().permute(0, 2, 3, 1).cpu().numpy()
            if is_uint8:
                out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
            else:
                out = out.astype(arr.dtype, copy=False)
            if single:
                out = out[0]
            return out.reshape(img.shape)

        return x, back
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray image, got {type(img).__name__}")


def _float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        raise ValueError("uint8 tensors are ambiguous here; pass float tensors in [0, 1] "
                         "(or numpy HWC uint8 arrays)")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype


# -- Gaussian blur ----------------------------------------------------------------------------
def gaussian_blur(img: ImageLike, sigma: float) -> ImageLike:
    """Separable Gaussian blur, ``sigma`` in pixels at the image's resolution (see module doc)."""
    sigma = _check_nonneg("blur", sigma)
    x, back = _to_canonical(img)
    return back(blur_nchw(x, sigma))


# -- Gaussian noise ---------------------------------------------------------------------------
def _noise_canonical(x: torch.Tensor, sigma: float, seed: SeedLike = 0,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    if sigma == 0:
        return x.clamp(0.0, 1.0)
    shape = tuple(x.shape[1:])
    if generator is not None:
        noise = torch.randn(tuple(x.shape), generator=generator, dtype=torch.float32)
    elif seed is not None and not isinstance(seed, (int, np.integer)):
        seeds = list(seed)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for {x.shape[0]} images")
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)),
                                         dtype=torch.float32) for s in seeds])
    else:
        g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        noise = torch.randn(tuple(x.shape), generator=g, dtype=torch.float32)
    return (x + float(sigma) * noise.to(device=x.device, dtype=x.dtype)).clamp(0.0, 1.0)


def gaussian_noise(img: ImageLike, sigma: float, seed: SeedLike = 0,
                   generator: Optional[torch.Generator] = None) -> ImageLike:
    """Add N(0, sigma^2) noise on the [0, 1] scale and clip; deterministic given ``seed``.

    ``seed``: an int (one stream for the whole batch) or one int per image. A ``generator``
    (a CPU ``torch.Generator``) takes precedence over ``seed`` and advances as it is used.
    """
    sigma = _check_nonneg("noise", sigma)
    x, back = _to_canonical(img)
    return back(_noise_canonical(x, sigma, seed, generator))


# -- Wav2Lip-like down-up ---------------------------------------------------------------------
def down_up(img: ImageLike, size: int = 96) -> ImageLike:
    """Area-downscale to ``size`` px (longer side) and bicubic-upscale back, clipped to [0, 1]."""
    size = _check_size(size)
    x, back = _to_canonical(img)
    return back(down_up_nchw(x, size))


# -- specs and registry -----------------------------------------------------------------------
def _check_nonneg(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: sigma must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name}: sigma must be a finite number >= 0, got {value!r}")
    return v


def _check_size(value) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"down: size must be a whole number of pixels, got {value!r}") from None
    if not math.isfinite(v) or v != int(v) or v < 1:
        raise InputError(f"down: size must be a whole number of pixels >= 1, got {value!r}")
    return int(v)


@dataclass(frozen=True)
class DegradationType:
    """Registry entry: canonical-form function, parameter parser and how to print it."""
    name: str
    apply: Callable[..., torch.Tensor]  # (x_canonical, param, seed, generator) -> tensor
    parse: Callable[[object], Union[int, float]]
    unit: str
    default: Union[int, float]
    help: str


DEGRADATIONS: Dict[str, DegradationType] = {
    "blur": DegradationType(
        "blur", lambda x, p, seed, gen: blur_nchw(x, p),
        lambda v: _check_nonneg("blur", v), "px", 2.0,
        "Gaussian blur, sigma in pixels at the face-crop resolution"),
    "noise": DegradationType(
        "noise", lambda x, p, seed, gen: _noise_canonical(x, p, seed, gen),
        lambda v: _check_nonneg("noise", v), "[0,1]", 0.1,
        "additive Gaussian noise, sigma on the [0, 1] pixel scale, clipped"),
    "down": DegradationType(
        "down", lambda x, p, seed, gen: down_up_nchw(x, p), _check_size, "px", 96,
        "Wav2Lip-like: area-downscale to this many px and bicubic back up"),
}


@dataclass(frozen=True)
class Degradation:
    """A parsed degradation; call it on an image (any form :func:`gaussian_blur` accepts)."""
    name: str
    param: Union[int, float]

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``blur:2.0``, ``noise:0.1``, ``down:96``."""
        return format_spec(self.name, self.param)

    def __call__(self, img: ImageLike, seed: SeedLike = 0,
                 generator: Optional[torch.Generator] = None) -> ImageLike:
        x, back = _to_canonical(img)
        return back(DEGRADATIONS[self.name].apply(x, self.param, seed, generator))

    def __str__(self) -> str:
        return self.spec


def format_spec(name: str, param) -> str:
    if name == "down":
        return f"{name}:{int(param)}"
    return f"{name}:{float(param)!r}"


def parse_degradation(spec: Union[str, Degradation]) -> Degradation:
    """Parse ``"NAME:VALUE"`` (e.g. ``blur:2.0``, ``noise:0.1``, ``down:96``).

    ``"NAME"`` alone uses the default value. Raises :class:`InputError` naming the spec and
    listing the valid forms when it cannot be parsed.
    """
    if isinstance(spec, Degradation):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty degradation spec {spec!r}; {_valid_forms()}")
    name, sep, value = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in DEGRADATIONS:
        raise InputError(f"unknown degradation {name!r} in spec {spec!r}; {_valid_forms()}")
    entry = DEGRADATIONS[name]
    if not sep:
        return Degradation(name, entry.default)
    if not value.strip():
        raise InputError(f"degradation spec {spec!r} has no value after ':'; {_valid_forms()}")
    try:
        param = entry.parse(value.strip())
    except InputError as exc:
        raise InputError(f"bad degradation spec {spec!r}: {exc}; {_valid_forms()}") from None
    return Degradation(name, param)


def _valid_forms() -> str:
    forms = ", ".join(f"'{n}:{e.default}' ({e.help})" for n, e in DEGRADATIONS.items())
    return f"valid forms: {forms}"


def default_degradations() -> Tuple[Degradation, ...]:
    """blur:2.0, noise:0.1, down:96 (the robustness command's defaults)."""
    return tuple(Degradation(n, e.default) for n, e in DEGRADATIONS.items())


def resolve_specs(resolution: int, blur: Sequence[float] = (), noise: Sequence[float] = (),
                  down: Sequence[int] = ()) -> Tuple[List[str], List[str]]:
    """Specs for the requested strengths (duplicates dropped), or the defaults when none is
    given, leaving out a default ``down`` that is no downscale at ``resolution``.

    Returns ``(specs, notes)``; the notes say which defaults were skipped.
    """
    given = [format_spec("blur", v) for v in blur or ()]
    given += [format_spec("noise", v) for v in noise or ()]
    given += [format_spec("down", v) for v in down or ()]
    if given:
        return list(dict.fromkeys(given)), []
    specs, notes = [], []
    for d in default_degradations():
        if d.name == "down" and int(d.param) >= resolution:
            notes.append(f"default {d.spec} skipped: not a downscale at {resolution} px")
            continue
        specs.append(d.spec)
    return specs, notes


def parse_all(specs: Optional[Sequence[Union[str, Degradation]]], resolution: int,
              where: str = "this identity's") -> List[Degradation]:
    """Parse ``specs`` (``None``: the defaults) for crops of ``resolution`` px.

    Raises :class:`InputError` for duplicates and for a ``down`` that is no downscale.
    """
    degs = [parse_degradation(d) for d in (default_degradations() if specs is None else specs)]
    if len({d.spec for d in degs}) != len(degs):
        raise InputError(f"duplicate degradations in {[d.spec for d in degs]}")
    for d in degs:
        if d.name == "down" and int(d.param) >= resolution:
            raise InputError(f"{d.spec} is not a downscale at {where} {resolution} px "
                             f"resolution; use --down with a size below {resolution}")
    return degs


__all__ = ["gaussian_blur", "gaussian_noise", "down_up",
           "Degradation", "DegradationType", "DEGRADATIONS", "parse_degradation",
           "format_spec", "default_degradations", "resolve_specs", "parse_all"]
