"""Typed results of ``ladtalk eval quality``: W (Wav2Lip proxy) against L (LaDTalk) per
softening, as stored under ``"quality"`` in an identity's ``meta.json`` (docs/evaluation.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

from ladtalk._util.jsonsafe import parse_float, to_jsonable
from ladtalk.generation.fusion import FusionConfig


def sigma_key(sigma: float) -> str:
    """The JSON key of a softening sigma (``0``, ``0.5``, ``1``)."""
    return f"{float(sigma):g}"


def _rounded(v: Optional[float], digits: int = 4) -> Optional[float]:
    return None if v is None else round(float(v), digits)


@dataclass
class QualityStats:
    """Means over frames for one method at one softening (``lpips`` only when measured)."""

    psnr: float
    ssim: float
    mouth_psnr: float
    sharpness: float
    temporal: Optional[float]
    lpips: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        d = {f.name: _rounded(getattr(self, f.name)) for f in fields(self)}
        if d["lpips"] is None:
            d.pop("lpips")
        return to_jsonable(d)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "QualityStats":
        return cls(**{f.name: parse_float(d.get(f.name), None if f.name in ("temporal", "lpips")
                                          else math.nan) for f in fields(cls)})


@dataclass
class SoftenResult:
    """W and L at one softening, and how far L's mouth moved from W's (at 96 px)."""

    sigma: float
    W: QualityStats
    L: QualityStats
    sync_mad: float          # mean |L96 - W96| over the mouth box, grey levels
    sync_psnr: float         # PSNR of L96 against W96 over the mouth box
    stored_gain_db: Optional[float] = None  # the ``gain_db`` read from disk, if any

    @property
    def gain_db(self) -> float:
        """L's PSNR gain over W (the stored value of a record read back)."""
        if self.stored_gain_db is not None:
            return self.stored_gain_db
        return self.L.psnr - self.W.psnr

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({"W": self.W, "L": self.L, "gain_db": round(self.gain_db, 4),
                            "sync": {"mouth_mad_96": round(self.sync_mad, 4),
                                     "mouth_psnr_96": round(self.sync_psnr, 4)}})

    @classmethod
    def from_json(cls, sigma: float, d: Mapping[str, Any]) -> "SoftenResult":
        sync = d.get("sync") or {}
        return cls(sigma=float(sigma), W=QualityStats.from_json(d["W"]),
                   L=QualityStats.from_json(d["L"]),
                   sync_mad=parse_float(sync.get("mouth_mad_96"), math.nan),
                   sync_psnr=parse_float(sync.get("mouth_psnr_96"), math.nan),
                   stored_gain_db=parse_float(d.get("gain_db")))


class SummaryRow(NamedTuple):
    """One softening of a summary: the sigma label, PSNR and sharpness of W and L, gain."""

    sigma: str
    w_psnr: float
    l_psnr: float
    gain_db: float
    w_sharpness: float
    l_sharpness: float


_KNOWN = ("frames", "resolution", "face_px", "identity", "video", "holdout_first_s", "fusion",
          "soften")


@dataclass
class QualityReport:
    """W against L on held-out frames; ``extra``: further keys kept as they are."""

    frames: int
    resolution: int
    face_px: float
    soften: Dict[float, SoftenResult]
    fusion: FusionConfig
    identity: Optional[str] = None
    video: Optional[str] = None
    first_s: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return to_jsonable({
            "frames": self.frames, "resolution": self.resolution,
            "face_px": round(float(self.face_px), 1), "identity": self.identity,
            "video": self.video, "holdout_first_s": self.first_s,
            "fusion": self.fusion.to_dict(),
            "soften": {sigma_key(s): r for s, r in sorted(self.soften.items())},
            **self.extra})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "QualityReport":
        """Read the layout of :meth:`to_json` (an identity's ``meta.json["quality"]``)."""
        soften = {float(k): SoftenResult.from_json(float(k), v)
                  for k, v in (d.get("soften") or {}).items()}
        return cls(frames=int(d["frames"]), resolution=int(d["resolution"]),
                   face_px=parse_float(d.get("face_px"), math.nan), soften=soften,
                   fusion=FusionConfig.from_dict(d.get("fusion")),
                   identity=d.get("identity"), video=d.get("video"),
                   first_s=parse_float(d.get("holdout_first_s")),
                   extra={k: v for k, v in d.items() if k not in _KNOWN})

    def summary_rows(self) -> List[SummaryRow]:
        """The per-softening numbers the app and the CLI show, in the record's order."""
        return [SummaryRow(sigma_key(s), r.W.psnr, r.L.psnr, r.gain_db, r.W.sharpness,
                           r.L.sharpness) for s, r in self.soften.items()]

    def format_table(self) -> str:
        head = (f"{self.frames} held-out frames, identity {self.resolution} px, face "
                f"{self.face_px:.0f} px; fusion low {self.fusion.low_strength:g} / high "
                f"{self.fusion.high_strength:g}")
        cols = ("psnr", "ssim", "mouth_psnr", "sharpness", "temporal")
        lines = [head, f"{'sigma':>5} {'':>2} " + " ".join(f"{c:>10}" for c in cols)
                 + f" {'gain dB':>8} {'sync MAD':>8}"]
        for s, r in sorted(self.soften.items()):
            for name, st in (("W", r.W), ("L", r.L)):
                vals = [getattr(st, c) for c in cols]
                cells = " ".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in vals)
                tail = (f" {r.gain_db:>+8.2f} {r.sync_mad:>8.2f}" if name == "L" else "")
                lines.append(f"{s:>5g} {name:>2} {cells}{tail}")
        return "\n".join(lines)
