"""The status panel and the ``/status`` endpoint: device, checkpoints (and how to supply a
missing one), limits and identities."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import ladtalk
from ladtalk._util.paths import identities_dir
from ladtalk.app.pickers import identities_summary
from ladtalk.app.zerogpu import ZERO_GPU
from ladtalk.checkpoints import resolve_checkpoint
from ladtalk.errors import LadTalkError
from ladtalk.face.video_crops import crop_cache
from ladtalk.generation.track import track_cache
from ladtalk.identities.owners import store_bytes
from ladtalk.identities.store import list_identities

#: Checkpoints the app uses, and what for.
APP_CHECKPOINTS: Dict[str, str] = {
    "wav2lip": "needed by the Generate tab (stage 1 lip sync)",
    "s3fd": "optional: the better face detector (the offline dlib HOG detector is used "
            "without it)",
}


@dataclass
class CheckpointStatus:
    name: str
    purpose: str
    ok: bool
    detail: str  # resolved path, or the CheckpointError message


def checkpoint_status(names: Sequence[str] = tuple(APP_CHECKPOINTS),
                      overrides: Optional[Dict[str, object]] = None) -> List[CheckpointStatus]:
    """Try to resolve each checkpoint (downloads it into the HF cache when online);
    ``overrides`` maps a name to the reference given on the command line."""
    out = []
    for name in names:
        try:
            path = resolve_checkpoint(name, override=(overrides or {}).get(name))
            out.append(CheckpointStatus(name, APP_CHECKPOINTS.get(name, ""), True, str(path)))
        except LadTalkError as exc:
            out.append(CheckpointStatus(name, APP_CHECKPOINTS.get(name, ""), False, str(exc)))
    return out


#: Checkpoints without which a tab cannot work; the others have an offline fallback.
REQUIRED_CHECKPOINTS = ("wav2lip",)


def missing_checkpoints(statuses: Sequence[CheckpointStatus], wav2lip_error: Optional[str],
                        required_only: bool = False) -> List[str]:
    """Names of the checkpoints that did not resolve or load (``required_only``: only those
    of :data:`REQUIRED_CHECKPOINTS`)."""
    missing = [s.name for s in statuses if not s.ok]
    if wav2lip_error and "wav2lip" not in missing:
        missing.append("wav2lip")
    return [m for m in missing if m in REQUIRED_CHECKPOINTS] if required_only else missing


def _detector_in_use(statuses: Sequence[CheckpointStatus]) -> str:
    s3fd = [s for s in statuses if s.name == "s3fd"]
    if s3fd and s3fd[0].ok:
        return "face detector: S3FD"
    return "face detector: dlib; S3FD optional"


def status_title(statuses: Sequence[CheckpointStatus], wav2lip_error: Optional[str],
                 device: str, zero_gpu: bool) -> str:
    """The one line of the (closed) status panel: what is used, or which required
    checkpoint is missing."""
    where = f"{device}{' (ZeroGPU)' if zero_gpu else ''}"
    required = missing_checkpoints(statuses, wav2lip_error, required_only=True)
    if required:
        return (f"Status: missing {', '.join(required)} (Generate is unavailable; open for "
                f"how to supply it) - on {where}, {_detector_in_use(statuses)}")
    return f"Status: ready on {where} ({_detector_in_use(statuses)})"


def status_markdown(statuses: Sequence[CheckpointStatus], wav2lip_error: Optional[str],
                    device: str, zero_gpu: bool) -> str:
    """The status panel's body: device, each checkpoint, how to supply the missing ones."""
    lines = [f"**Device:** {device}{' (ZeroGPU)' if zero_gpu else ''}", ""]
    lines.append("| checkpoint | status | used for |")
    lines.append("|---|---|---|")
    for s in statuses:
        required = s.name in REQUIRED_CHECKPOINTS
        mark = "available" if s.ok else ("**missing**" if required else "not installed")
        lines.append(f"| `{s.name}` | {mark} | {s.purpose} |")
    if wav2lip_error and all(s.name != "wav2lip" or s.ok for s in statuses):
        lines += ["", f"Wav2Lip could not be loaded: {wav2lip_error}"]
    missing = [s for s in statuses if not s.ok and s.name in REQUIRED_CHECKPOINTS]
    optional = [s for s in statuses if not s.ok and s.name not in REQUIRED_CHECKPOINTS]
    if missing:
        lines += ["", "**How to supply missing checkpoints** (then restart the app):", ""]
        lines += [f"- `{s.name}`: {s.detail}" for s in missing]
        lines += ["", "The Robustness and Enroll tabs work without them (with the shipped demo "
                  "identity and the examples). See `checkpoints/README.md` for details."]
    if optional:
        lines += ["", "**Optional** (everything works without it):", ""]
        lines += [f"- `{s.name}`: {s.detail}" for s in optional]
    return "\n".join(lines)


def storage_usage(st: Any) -> Dict[str, Any]:
    """Disk use the app is responsible for (MB), and what bounds it."""
    stored = list_identities()
    free = shutil.disk_usage(identities_dir().parent if identities_dir().parent.exists()
                             else Path(".")).free
    return {
        "public": st.public,
        "identities_enrolled": sum(1 for i in stored if not i.shipped),
        "identities_mb": round(store_bytes() / 1e6, 2),
        "crop_cache_mb": round(crop_cache().usage().bytes / 1e6, 2),
        "track_cache_mb": round(track_cache().usage().bytes / 1e6, 2),
        "temp_mb": round(st.space.usage().bytes / 1e6, 2),
        "disk_free_mb": round(free / 1e6, 1),
        "policy": st.policy.to_json() if st.public else None,
    }


def status_dict(st: Any, access: Any = None) -> Dict[str, Any]:
    """The ``/status`` answer of one app state, for a caller who sees ``access``."""
    return {
        "ladtalk_version": ladtalk.__version__, "device": st.device,
        "zero_gpu": ZERO_GPU, "generate_available": st.wav2lip_error is None,
        "wav2lip_error": st.wav2lip_error,
        "checkpoints": [{"name": s.name, "available": s.ok, "used_for": s.purpose,
                         "detail": s.detail} for s in st.statuses],
        "limits": st.limits.to_json(),
        "identities": [i["name"] for i in (identities_summary(access) if access is not None
                                          else identities_summary())],
        "storage": storage_usage(st),
    }
