"""Typed robustness results; ``to_json()`` gives the layout the CLI writes and the app returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from ladtalk._util.choices import CertificateCost
from ladtalk._util.jsonsafe import parse_float, to_jsonable
from ladtalk.analysis.certificate import Certificate

PSNR_NOTE = "per-frame 10*log10(1/MSE) on [0,1], MSE floored at 1e-10, mean over frames"
SSIM_NOTE = "ladtalk.metrics.image.ssim (Gaussian window, sigma 1.5), mean over frames"


def _f(v: Any) -> float:
    return parse_float(v, math.nan)


@dataclass
class Reconstruction:
    """Clean crops through the SOVQAE: mean per-frame PSNR (dB) and SSIM."""

    psnr: float
    ssim: float

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({"psnr": self.psnr, "ssim": self.ssim})

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Reconstruction":
        return cls(_f(d.get("psnr")), _f(d.get("ssim")))


@dataclass
class DegradationResult:
    """One degradation: PSNR / SSIM of the degraded and the restored crops vs the clean ones."""

    psnr_degraded: float
    psnr_restored: float
    ssim_degraded: float
    ssim_restored: float
    psnr_reconstruction: float
    ssim_reconstruction: float

    @property
    def psnr_gain(self) -> float:
        return self.psnr_restored - self.psnr_degraded

    @property
    def ssim_gain(self) -> float:
        return self.ssim_restored - self.ssim_degraded

    def to_json(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return to_jsonable({**d, "psnr_gain": self.psnr_gain, "ssim_gain": self.ssim_gain})

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "DegradationResult":
        return cls(**{f.name: _f(d.get(f.name)) for f in fields(cls)})


@dataclass
class RobustnessSettings:
    """How the numbers were made: seed, device, batch size, certificate cost, timings."""

    seed: int
    device: str
    batch_size: int
    cost: CertificateCost
    restore_seconds: float = 0.0
    certificate_seconds: float = 0.0

    def to_json(self) -> Dict[str, Any]:
        cost = {f.name: getattr(self.cost, f.name) for f in fields(self.cost)}
        return to_jsonable({
            "seed": self.seed, "device": self.device, "batch_size": self.batch_size, **cost,
            "restore_seconds": self.restore_seconds,
            "certificate_seconds": self.certificate_seconds,
            "psnr": PSNR_NOTE, "ssim": SSIM_NOTE})

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "RobustnessSettings":
        base = CertificateCost()
        cost = CertificateCost(**{f.name: type(getattr(base, f.name))(d[f.name])
                                  for f in fields(base) if d.get(f.name) is not None})
        return cls(seed=int(d.get("seed") or 0), device=str(d.get("device") or ""),
                   batch_size=int(d.get("batch_size") or 0), cost=cost,
                   restore_seconds=_f(d.get("restore_seconds")),
                   certificate_seconds=_f(d.get("certificate_seconds")))


@dataclass
class VideoSource:
    """Where the crops of :func:`~ladtalk.analysis.robustness.robustness_for_video` came from."""

    identity: str
    identity_dir: str
    video: str
    frames_from: str
    enrollment_video: bool
    frame_range_s: Tuple[float, float]
    frame_indices: List[int]
    detector: str
    video_frames: int
    frames_without_face: int

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "VideoSource":
        lo, hi = (d.get("frame_range_s") or [math.nan, math.nan])[:2]
        return cls(identity=str(d.get("identity")), identity_dir=str(d.get("identity_dir")),
                   video=str(d.get("video")), frames_from=str(d.get("frames_from")),
                   enrollment_video=bool(d.get("enrollment_video")),
                   frame_range_s=(_f(lo), _f(hi)),
                   frame_indices=[int(v) for v in d.get("frame_indices") or []],
                   detector=str(d.get("detector")), video_frames=int(d.get("video_frames") or 0),
                   frames_without_face=int(d.get("frames_without_face") or 0))


@dataclass
class RobustnessReport:
    """Degrade -> restore -> measure on a set of crops, with the certificate when computed."""

    frames: int
    resolution: int
    reconstruction: Reconstruction
    degradations: Dict[str, DegradationResult]
    settings: RobustnessSettings
    certificate: Optional[Certificate] = None
    source: Optional[VideoSource] = None
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        """``{frames, resolution, reconstruction, degradations, [certificate], settings,
        [video source keys], [notes]}`` as strict JSON."""
        out: Dict[str, Any] = {"frames": self.frames, "resolution": self.resolution,
                               "reconstruction": self.reconstruction,
                               "degradations": self.degradations}
        if self.certificate is not None:
            out["certificate"] = self.certificate
        out["settings"] = self.settings
        if self.source is not None:
            out.update(self.source.to_json())
        if self.notes:
            out["notes"] = list(self.notes)
        return to_jsonable(out)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "RobustnessReport":
        """Read :meth:`to_json` back (also files written with ``null`` for inf/NaN)."""
        cert = d.get("certificate")
        return cls(
            frames=int(d.get("frames") or 0), resolution=int(d.get("resolution") or 0),
            reconstruction=Reconstruction.from_json(d.get("reconstruction") or {}),
            degradations={str(k): DegradationResult.from_json(v)
                          for k, v in (d.get("degradations") or {}).items()},
            settings=RobustnessSettings.from_json(d.get("settings") or {}),
            certificate=Certificate.from_json(cert) if cert else None,
            source=VideoSource.from_json(d) if "identity" in d else None,
            notes=[str(n) for n in d.get("notes") or []])


__all__ = ["RobustnessReport", "DegradationResult", "Reconstruction", "RobustnessSettings",
           "VideoSource", "PSNR_NOTE", "SSIM_NOTE"]
