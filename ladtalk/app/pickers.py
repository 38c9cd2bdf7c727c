"""The identity pickers: their choices, the default pick, and checking a picked value."""

from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

from ladtalk.errors import InputError
from ladtalk.identities.owners import Access, Owner
from ladtalk.identities.store import validate_name

NONE_IDENTITY = "none (Wav2Lip only)"
DEMO_IDENTITY = "demo"
#: a workstation: every identity is everyone's
SHARED = Access(public=False)


def identity_choices(include_none: bool = True, access: Access = SHARED
                     ) -> List[Tuple[str, str]]:
    """``(label, value)`` pairs for the pickers: the identities ``access`` may see (enrolled
    ones, shipped demos), then none."""
    out: List[Tuple[str, str]] = []
    for info in access.identities():
        tag = "shipped demo" if info.shipped else "enrolled"
        psnr = info.meta.holdout_psnr
        extra = f", holdout {psnr:.1f} dB" if isinstance(psnr, (int, float)) else ""
        out.append((f"{info.name} ({tag}{extra})", info.name))
    if include_none:
        out.append((NONE_IDENTITY, NONE_IDENTITY))
    return out


def default_identity(choices: Sequence[Tuple[str, str]]) -> str:
    """The first real identity of ``choices`` (else the first value, else none)."""
    values = [v for _, v in choices]
    for v in values:
        if v != NONE_IDENTITY:
            return v
    return values[0] if values else NONE_IDENTITY


def keep_or_default(value, choices: Sequence[Tuple[str, str]], default: str) -> str:
    """``value`` while it is still one of ``choices``, else ``default``."""
    return value if value in [v for _, v in choices] else default


def check_identity(choice, allow_none: bool = True, access: Access = SHARED) -> Optional[str]:
    """A picker value -> an identity name (None for Wav2Lip only). Names only: paths are
    refused so a public app never reads arbitrary directories; on a public app, another
    visitor's identity is unknown to this caller."""
    text = "" if choice is None else str(choice).strip()
    if not text or text == NONE_IDENTITY or text.lower() == "none":
        if allow_none:
            return None
        raise InputError("pick an identity (enroll one in the Enroll tab, or use the shipped "
                         f"'{DEMO_IDENTITY}' identity)")
    try:
        validate_name(text)
    except InputError:
        raise InputError(f"identity {text!r} is not a valid name; pick one from the list") from None
    known = [i.name for i in access.identities()]
    if text not in known:
        raise InputError(f"unknown identity {text!r} (known: {', '.join(known) or 'none yet'}); "
                         "enroll it in the Enroll tab first, or refresh the page to update the "
                         "list")
    return text


def identities_summary(access: Access = SHARED) -> List[Dict[str, object]]:
    """JSON-friendly list of the identities ``access`` may see, for ``/identities``."""
    out = []
    for info in access.identities():
        m = info.meta
        out.append({"name": info.name, "shipped": info.shipped, "config": m.config_name,
                    "steps": m.steps, "training_seconds": m.training_seconds,
                    "holdout_psnr": m.holdout_psnr, "holdout_ssim": m.holdout_ssim,
                    "restoration": m.restoration})
    return out


def default_session_identity(video_path, owner: Optional[Owner] = None) -> str:
    """Identity name for "enroll from this video first": stable per video content (and per
    owner on a public app), so a rerun on the same video continues that identity instead of
    starting over, and two visitors with the same video never share one."""
    h = hashlib.sha256()
    with open(video_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    tag = f"-{owner.tag}" if owner is not None else ""
    return f"video-{h.hexdigest()[:12]}{tag}"
