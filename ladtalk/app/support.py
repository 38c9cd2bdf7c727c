"""Support code for the Gradio app (``app.py``), kept free of Gradio so it is easy to test.

What lives here (and only here): the app's input limits and the checks that enforce them
*before* any model work, the ZeroGPU duration estimates, the checkpoint status panel, the
identity choices of the pickers, and turning exceptions into user-facing messages. Generation,
enrollment and robustness evaluation stay in :mod:`ladtalk.generation.pipeline`,
:mod:`ladtalk.enrollment.enroll` and :mod:`ladtalk.analysis.robustness`; the app only calls them.

ZeroGPU conventions
-------------------
On a ZeroGPU Space each ``@spaces.GPU`` call gets a GPU for at most ``duration`` seconds, and a
single call may not ask for more than a per-call cap (a few minutes; the exact value is not
documented and changes, so it is configurable: ``LADTALK_GPU_MAX_SECONDS``, default 120).
:func:`generate_gpu_seconds` and :func:`enroll_gpu_seconds` estimate what a call needs from
the work it will do (frames, training budget) with a safety factor, clamped to
``[GPU_MIN_SECONDS, cap]``. Work that would not fit is refused up front with a message that
says how to make it fit. Enrollment is split into chunks (:func:`enroll_chunks`) that each
fit one call; :func:`ladtalk.enrollment.enroll.enroll` resumes an identity by name, so the
chunks add up to one training run.
"""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ladtalk.errors import CheckpointError, InputError, LadTalkError

NONE_IDENTITY = "none (Wav2Lip only)"
DEMO_IDENTITY = "demo"
GPU_MIN_SECONDS = 15
#: Checkpoints the app uses, and what for.
APP_CHECKPOINTS: Dict[str, str] = {
    "wav2lip": "needed by the Generate tab (stage 1 lip sync)",
    "s3fd": "optional: the better face detector (the offline dlib HOG detector is used "
            "without it)",
}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


@dataclass(frozen=True)
class AppLimits:
    """Input limits of one app instance (a public Space wants them small).

    Seconds are media durations, except the ``*_budget_*`` fields (training wall-clock) and
    ``gpu_cap_seconds`` (per ZeroGPU call). ``enroll_chunk_seconds``: training seconds per
    enrollment call; ``None`` trains the whole budget in one call (off ZeroGPU).
    """

    max_video_seconds: float = 60.0
    max_audio_seconds: float = 60.0
    max_upload_mb: float = 200.0
    max_frame_side: int = 4096
    min_enroll_video_seconds: float = 1.0
    max_enroll_video_seconds: float = 300.0
    enroll_budget_default: float = 120.0
    enroll_budget_max: float = 1800.0
    gpu_cap_seconds: float = field(default_factory=lambda: _env_float(
        "LADTALK_GPU_MAX_SECONDS", 120.0))
    enroll_chunk_seconds: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("max_video_seconds", "max_audio_seconds", "max_upload_mb",
                     "enroll_budget_default", "enroll_budget_max", "gpu_cap_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AppLimits.{name} must be positive")
        if self.enroll_chunk_seconds is not None and not self.enroll_chunk_seconds > 0:
            raise ValueError("AppLimits.enroll_chunk_seconds must be positive or None")


# -------------------------------------------------------------------------- input checks
def _name(path: Path) -> str:
    """The name the user knows: Gradio keeps the uploaded file's own name as the basename."""
    return path.name


def _check_upload(path, what: str, limits: AppLimits) -> Path:
    if path is None or (isinstance(path, str) and not path.strip()):
        raise InputError(f"no {what} was given: upload one (or pick an example) and try again")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"the {what} '{_name(p)}' could not be found on the server; upload it "
                         "again")
    size_mb = p.stat().st_size / 1e6
    if p.stat().st_size == 0:
        raise InputError(f"the {what} '{_name(p)}' is an empty file (0 bytes); upload the "
                         "complete file")
    if size_mb > limits.max_upload_mb:
        raise InputError(f"the {what} '{_name(p)}' is {size_mb:.0f} MB; this app accepts at most "
                         f"{limits.max_upload_mb:.0f} MB. Shorten or re-encode it (e.g. "
                         "`ffmpeg -i IN -vf scale=-2:720 -crf 23 OUT.mp4`)")
    return p


def _probe(p: Path, what: str, require_video: bool):
    from ladtalk.media.video import probe
    try:
        return probe(p, require_video=require_video)
    except InputError as exc:
        raise InputError(f"{what} '{_name(p)}': {exc}") from None


def check_face_input(path, limits: AppLimits):
    """Validate the face video / photo of a generation; returns its :class:`MediaInfo`."""
    p = _check_upload(path, "face video or photo", limits)
    info = _probe(p, "face video or photo", True)
    if max(info.width, info.height) > limits.max_frame_side:
        raise InputError(
            f"face input '{_name(p)}' is {info.width}x{info.height}; the longer side may be at "
            f"most {limits.max_frame_side} px here. Downscale it (e.g. `ffmpeg -i IN -vf "
            "scale=-2:1080 OUT.mp4`) or use the resize-factor option")
    if not info.is_image and info.duration > limits.max_video_seconds + 1e-6:
        raise InputError(
            f"face video '{_name(p)}' is {info.duration:.1f} s long; this app accepts videos "
            f"of at most {limits.max_video_seconds:g} s. Trim it (e.g. `ffmpeg -i IN -t "
            f"{limits.max_video_seconds:g} -c copy OUT.mp4`) - a short clip is looped to the "
            "audio length anyway - or run the app / CLI locally without this limit")
    return info


def check_audio_input(path, limits: AppLimits) -> float:
    """Validate the speech track; returns its duration in seconds."""
    p = _check_upload(path, "speech audio", limits)
    info = _probe(p, "speech audio", False)
    if not info.has_audio:
        raise InputError(f"speech audio '{_name(p)}' has no audio stream; upload a wav / mp3 / "
                         "m4a file or a video with a sound track, or record with the microphone")
    seconds = float(info.duration or 0.0)
    if seconds <= 0.0:
        from ladtalk.media.audio import SAMPLE_RATE, load_audio
        try:
            seconds = len(load_audio(p, SAMPLE_RATE)) / SAMPLE_RATE
        except InputError as exc:
            raise InputError(f"speech audio '{_name(p)}': {exc}") from None
    if seconds <= 0.0:
        raise InputError(f"speech audio '{_name(p)}' is empty (0 s of sound); upload or record "
                         "some speech")
    if seconds > limits.max_audio_seconds + 1e-6:
        raise InputError(
            f"speech audio '{_name(p)}' is {seconds:.1f} s long; this app accepts at most "
            f"{limits.max_audio_seconds:g} s per video. Split it into parts (e.g. `ffmpeg -i IN "
            f"-t {limits.max_audio_seconds:g} OUT.wav`) or run the CLI locally")
    return seconds


def check_enroll_video(path, limits: AppLimits):
    """Validate an enrollment video (a real video, long enough, not too long)."""
    p = _check_upload(path, "enrollment video", limits)
    info = _probe(p, "enrollment video", True)
    if info.is_image:
        raise InputError(f"enrollment needs a video of the person talking, but '{_name(p)}' is a "
                         "still image; upload 10 s to a few minutes of video of one face")
    if info.duration < limits.min_enroll_video_seconds:
        raise InputError(f"enrollment video '{_name(p)}' is only {info.duration:.1f} s long; "
                         f"give at least {limits.min_enroll_video_seconds:g} s (10 s or more "
                         "works much better)")
    if info.duration > limits.max_enroll_video_seconds + 1e-6:
        raise InputError(f"enrollment video '{_name(p)}' is {info.duration:.0f} s long; this app "
                         f"accepts at most {limits.max_enroll_video_seconds:g} s. Trim it or "
                         "enroll locally with `python -m ladtalk enroll`")
    if max(info.width, info.height) > limits.max_frame_side:
        raise InputError(f"enrollment video '{_name(p)}' is {info.width}x{info.height}; "
                         f"downscale it to at most {limits.max_frame_side} px on the longer side")
    return info


def check_budget(seconds, limits: AppLimits) -> float:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise InputError(f"the enrollment time budget must be a number of seconds, got "
                         f"{seconds!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise InputError(f"the enrollment time budget must be positive, got {seconds!r}")
    if s > limits.enroll_budget_max:
        raise InputError(f"the enrollment time budget may be at most "
                         f"{limits.enroll_budget_max:g} s here (got {s:g}); enroll longer "
                         "locally with `python -m ladtalk enroll --seconds N`")
    return s


def parse_box(text) -> Optional[Tuple[float, float, float, float]]:
    """``"Y1 Y2 X1 X2"`` (spaces or commas; empty = detect) -> a 4-tuple or None."""
    if text is None or not str(text).strip():
        return None
    parts = str(text).replace(",", " ").split()
    try:
        vals = tuple(float(v) for v in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise InputError(f"fixed face box {text!r}: give 4 numbers Y1 Y2 X1 X2 in source "
                         "pixels (like Wav2Lip's --box), or leave it empty to detect the face")
    return vals  # type: ignore[return-value]


def parse_pads(*values) -> Tuple[int, int, int, int]:
    out = []
    for name, v in zip(("top", "bottom", "left", "right"), values):
        try:
            f = float(v if v is not None else 0)
        except (TypeError, ValueError):
            raise InputError(f"pad {name} must be a whole number of pixels, got {v!r}") from None
        if not math.isfinite(f) or abs(f) > 1000:
            raise InputError(f"pad {name} must be between -1000 and 1000 pixels, got {v!r}")
        out.append(int(round(f)))
    return tuple(out)  # type: ignore[return-value]


# -------------------------------------------------------------------------- identities
def identity_choices(include_none: bool = True) -> List[Tuple[str, str]]:
    """``(label, value)`` pairs for the pickers: enrolled ones, shipped demos, then none."""
    from ladtalk.identities.store import list_identities
    out: List[Tuple[str, str]] = []
    for info in list_identities():
        tag = "shipped demo" if info.shipped else "enrolled"
        psnr = info.meta.get("holdout_psnr")
        extra = f", holdout {psnr:.1f} dB" if isinstance(psnr, (int, float)) else ""
        out.append((f"{info.name} ({tag}{extra})", info.name))
    if include_none:
        out.append((NONE_IDENTITY, NONE_IDENTITY))
    return out


def default_identity(choices: Sequence[Tuple[str, str]]) -> str:
    values = [v for _, v in choices]
    for v in values:
        if v != NONE_IDENTITY:
            return v
    return values[0] if values else NONE_IDENTITY


def check_identity(choice, allow_none: bool = True) -> Optional[str]:
    """A picker value -> an identity name (None for Wav2Lip only). Names only: paths are
    refused so a public app never reads arbitrary directories."""
    text = "" if choice is None else str(choice).strip()
    if not text or text == NONE_IDENTITY or text.lower() == "none":
        if allow_none:
            return None
        raise InputError("pick an identity (enroll one in the Enroll tab, or use the shipped "
                         f"'{DEMO_IDENTITY}' identity)")
    from ladtalk.identities.store import list_identities, validate_name
    try:
        validate_name(text)
    except InputError:
        raise InputError(f"identity {text!r} is not a valid name; pick one from the list") from None
    known = [i.name for i in list_identities()]
    if text not in known:
        raise InputError(f"unknown identity {text!r} (known: {', '.join(known) or 'none yet'}); "
                         "enroll it in the Enroll tab first, or refresh the page to update the "
                         "list")
    return text


def identities_summary() -> List[Dict[str, object]]:
    """JSON-friendly list of identities for the ``/identities`` endpoint."""
    from ladtalk.identities.store import list_identities
    out = []
    for info in list_identities():
        m = info.meta
        out.append({"name": info.name, "shipped": info.shipped,
                    "config": m.get("config_name"), "steps": m.get("steps"),
                    "training_seconds": m.get("training_seconds"),
                    "holdout_psnr": m.get("holdout_psnr"),
                    "holdout_ssim": m.get("holdout_ssim"),
                    "restoration": m.get("restoration")})
    return out


def default_session_identity(video_path) -> str:
    """Identity name for "enroll from this video first": stable per video content, so a rerun
    on the same video continues that identity instead of starting over."""
    import hashlib
    h = hashlib.sha256()
    with open(video_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"video-{h.hexdigest()[:12]}"


# -------------------------------------------------------------------------- checkpoints
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
    from ladtalk.checkpoints.hub import resolve_checkpoint
    out = []
    for name in names:
        try:
            path = resolve_checkpoint(name, override=(overrides or {}).get(name))
            out.append(CheckpointStatus(name, APP_CHECKPOINTS.get(name, ""), True, str(path)))
        except LadTalkError as exc:
            out.append(CheckpointStatus(name, APP_CHECKPOINTS.get(name, ""), False, str(exc)))
    return out


def status_markdown(statuses: Sequence[CheckpointStatus], wav2lip_error: Optional[str],
                    device: str, zero_gpu: bool) -> str:
    lines = [f"**Device:** {device}{' (ZeroGPU)' if zero_gpu else ''}", ""]
    lines.append("| checkpoint | status | used for |")
    lines.append("|---|---|---|")
    for s in statuses:
        mark = "available" if s.ok else "**missing**"
        lines.append(f"| `{s.name}` | {mark} | {s.purpose} |")
    missing = [s for s in statuses if not s.ok]
    if wav2lip_error and not any(s.name == "wav2lip" for s in missing):
        lines += ["", f"Wav2Lip could not be loaded: {wav2lip_error}"]
    if missing:
        lines += ["", "**How to supply missing checkpoints** (then restart the app):", ""]
        for s in missing:
            lines.append(f"- `{s.name}`: {s.detail}")
        lines += ["", "The Robustness and Enroll tabs work without them (with the shipped demo "
                  "identity and the examples). See `checkpoints/README.md` for details."]
    return "\n".join(lines)


# -------------------------------------------------------------------------- GPU durations
def clamp_gpu(seconds: float, cap: float) -> int:
    return int(max(GPU_MIN_SECONDS, min(float(cap), math.ceil(seconds))))


def generate_work_seconds(n_frames: int, n_source_frames: int, enhance: bool,
                          baseline: bool) -> float:
    """Rough GPU-call seconds for a generation: model load/warm-up + detection of the source
    + per-output-frame Wav2Lip (and SOVQAE) + decode / blend / encode done inside the call.
    Calibrated loosely on an H100-class GPU (Wav2Lip ~2 ms/frame, base SOVQAE ~15 ms/frame,
    CPU-side blend + encode ~10 ms/frame) with a 2x safety factor."""
    per_frame = 0.012 + (0.015 if enhance else 0.0)
    passes_frames = n_frames * (per_frame + (0.012 if (baseline and enhance) else 0.0))
    detect = n_source_frames * 0.004 * (2 if (baseline and enhance) else 1)
    return 2.0 * (8.0 + detect + passes_frames)


def generate_gpu_seconds(n_frames: int, n_source_frames: int, enhance: bool, baseline: bool,
                         cap: float) -> int:
    return clamp_gpu(generate_work_seconds(n_frames, n_source_frames, enhance, baseline), cap)


def check_generate_fits(n_frames: int, n_source_frames: int, enhance: bool, baseline: bool,
                        fps: float, cap: float) -> None:
    """Refuse, before any GPU work, a generation that cannot finish within one GPU call."""
    need = generate_work_seconds(n_frames, n_source_frames, enhance, baseline)
    if need <= cap:
        return
    per_second = (need - 16.0) / max(1e-6, n_frames / fps)
    fit = max(1.0, (cap - 16.0) / max(1e-6, per_second))
    raise InputError(f"this video would need about {need:.0f} s of GPU time, more than the "
                     f"{cap:.0f} s one call may use here. Use at most about {fit:.0f} s of "
                     "audio" + (" or untick the Wav2Lip-only baseline" if baseline and enhance
                                else "") + ", or run it locally")


#: seconds an enrollment call needs besides training: face detection + crops (first call
#: only, then cached), evaluation on the holdout frames and saving.
ENROLL_OVERHEAD_SECONDS = 45.0


def enroll_chunks(budget: float, chunk: Optional[float]) -> List[float]:
    """Split a training budget into per-call chunks (one chunk when ``chunk`` is None).
    The last chunk absorbs a remainder shorter than 10 s."""
    budget = float(budget)
    if chunk is None or budget <= chunk:
        return [budget]
    n = int(budget // chunk)
    parts = [float(chunk)] * n
    rest = budget - n * chunk
    if rest >= 10.0:
        parts.append(rest)
    elif rest > 0:
        parts[-1] += rest
    return parts


def enroll_gpu_seconds(train_seconds: float, cap: float) -> int:
    return clamp_gpu(float(train_seconds) + ENROLL_OVERHEAD_SECONDS, cap)


# -------------------------------------------------------------------------- errors
def user_message(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """Message for the UI: LadTalkError text as-is (it already names input and fix), other
    errors with their type and a pointer to the logs. ``secrets`` (e.g. a Hub token) are
    masked wherever they appear."""
    if isinstance(exc, LadTalkError):
        msg = str(exc)
    elif isinstance(exc, MemoryError):
        msg = ("out of memory: use a shorter or smaller video (or a lower resolution via the "
               "resize factor)")
    else:
        msg = (f"internal error ({type(exc).__name__}: {exc}). This is a bug; please report "
               "it with the inputs that caused it")
    for s in secrets:
        if s:
            msg = msg.replace(s, "***")
    return msg


def format_exception_for_log(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


__all__ = [
    "AppLimits", "NONE_IDENTITY", "DEMO_IDENTITY", "APP_CHECKPOINTS", "CheckpointStatus",
    "check_face_input", "check_audio_input", "check_enroll_video", "check_budget",
    "check_identity", "parse_box", "parse_pads", "identity_choices", "default_identity",
    "identities_summary", "default_session_identity", "checkpoint_status", "status_markdown",
    "generate_work_seconds", "generate_gpu_seconds", "check_generate_fits", "enroll_chunks",
    "enroll_gpu_seconds", "clamp_gpu", "user_message", "format_exception_for_log",
    "CheckpointError",
]
