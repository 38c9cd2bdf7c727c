"""The app's input limits and the checks that enforce them before any model work.

Also the ZeroGPU work estimates: how many GPU seconds a call needs (clamped to the per-call
cap, ``LADTALK_GPU_MAX_SECONDS``), and how an enrollment budget is split into calls that
each fit one GPU call (enrollment resumes an identity by name, so they add up to one run).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ladtalk.errors import InputError
from ladtalk.media.audio import SAMPLE_RATE, load_audio
from ladtalk.media.probe import MediaInfo, probe

GPU_MIN_SECONDS = 15
#: seconds an enrollment call needs besides training: face detection + crops (first call
#: only, then cached), evaluation on the holdout frames and saving.
ENROLL_OVERHEAD_SECONDS = 45.0


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


@dataclass(frozen=True)
class AppLimits:
    """Input limits of one app instance (a public Space wants them small).

    Seconds are media durations, except the ``*_budget_*`` fields (training wall-clock),
    ``gpu_cap_seconds`` (per ZeroGPU call) and ``enroll_chunk_seconds`` (training seconds per
    enrollment call; ``None``: the whole budget in one call).
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

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# -------------------------------------------------------------------------- input checks
def _check_upload(path, what: str, limits: AppLimits) -> Path:
    if path is None or (isinstance(path, str) and not path.strip()):
        raise InputError(f"no {what} was given: upload one (or pick an example) and try again")
    p = Path(path)  # Gradio keeps the uploaded file's own name as the basename
    if not p.is_file():
        raise InputError(f"the {what} '{p.name}' could not be found on the server; upload it "
                         "again")
    size_mb = p.stat().st_size / 1e6
    if p.stat().st_size == 0:
        raise InputError(f"the {what} '{p.name}' is an empty file (0 bytes); upload the "
                         "complete file")
    if size_mb > limits.max_upload_mb:
        raise InputError(f"the {what} '{p.name}' is {size_mb:.0f} MB; this app accepts at most "
                         f"{limits.max_upload_mb:.0f} MB. Shorten or re-encode it (e.g. "
                         "`ffmpeg -i IN -vf scale=-2:720 -crf 23 OUT.mp4`)")
    return p


def _named(what: str, p: Path, exc: InputError) -> InputError:
    """``exc`` prefixed with the input it is about (its file name only once)."""
    msg = str(exc)
    return InputError(f"{what}: {msg}" if f"'{p.name}'" in msg else f"{what} '{p.name}': {msg}")


def _probe(p: Path, what: str, require_video: bool) -> MediaInfo:
    try:
        return probe(p, require_video=require_video)
    except InputError as exc:
        raise _named(what, p, exc) from None


def check_face_input(path, limits: AppLimits) -> MediaInfo:
    """Validate the face video / photo of a generation; returns its :class:`MediaInfo`."""
    p = _check_upload(path, "face video or photo", limits)
    info = _probe(p, "face video or photo", True)
    check_frame_size(p.name, info, "face input", limits)
    if not info.is_image and info.duration > limits.max_video_seconds + 1e-6:
        raise InputError(
            f"face video '{p.name}' is {info.duration:.1f} s long; this app accepts videos "
            f"of at most {limits.max_video_seconds:g} s. Trim it (e.g. `ffmpeg -i IN -t "
            f"{limits.max_video_seconds:g} -c copy OUT.mp4`) - a short clip is looped to the "
            "audio length anyway - or run the app / CLI locally without this limit")
    return info


def check_audio_input(path, limits: AppLimits) -> float:
    """Validate the speech track; returns its duration in seconds."""
    p = _check_upload(path, "speech audio", limits)
    info = _probe(p, "speech audio", False)
    if not info.has_audio:
        raise InputError(f"speech audio '{p.name}' has no audio stream; upload a wav / mp3 / "
                         "m4a file or a video with a sound track, or record with the microphone")
    seconds = float(info.duration or 0.0)
    if seconds <= 0.0:
        try:
            seconds = len(load_audio(p, SAMPLE_RATE)) / SAMPLE_RATE
        except InputError as exc:
            raise _named("speech audio", p, exc) from None
    if seconds <= 0.0:
        raise InputError(f"speech audio '{p.name}' is empty (0 s of sound); upload or record "
                         "some speech")
    if seconds > limits.max_audio_seconds + 1e-6:
        raise InputError(
            f"speech audio '{p.name}' is {seconds:.1f} s long; this app accepts at most "
            f"{limits.max_audio_seconds:g} s per video. Split it into parts (e.g. `ffmpeg -i IN "
            f"-t {limits.max_audio_seconds:g} OUT.wav`) or run the CLI locally")
    return seconds


def check_enroll_video(path, limits: AppLimits, info: Optional[MediaInfo] = None) -> MediaInfo:
    """Validate an enrollment video (a real video, long enough, not too long); ``info``: its
    :class:`MediaInfo` when already probed (with ``require_video``), to skip a second probe."""
    p = _check_upload(path, "enrollment video", limits)
    if info is None:
        info = _probe(p, "enrollment video", True)
    if info.is_image:
        raise InputError(f"enrollment needs a video of the person talking, but '{p.name}' is a "
                         "still image; upload 10 s to a few minutes of video of one face")
    if info.duration < limits.min_enroll_video_seconds:
        raise InputError(f"enrollment video '{p.name}' is only {info.duration:.1f} s long; "
                         f"give at least {limits.min_enroll_video_seconds:g} s (10 s or more "
                         "works much better)")
    if info.duration > limits.max_enroll_video_seconds + 1e-6:
        raise InputError(f"enrollment video '{p.name}' is {info.duration:.0f} s long; this app "
                         f"accepts at most {limits.max_enroll_video_seconds:g} s. Trim it, or "
                         "enroll on your own machine with the command-line tool (no limit)")
    check_frame_size(p.name, info, "enrollment video", limits)
    return info


def check_frame_size(name: str, info: MediaInfo, what: str, limits: AppLimits) -> None:
    """The resolution policy: a frame whose longer side is above ``limits.max_frame_side`` is
    refused with the limit (one decoded chunk of 16 such frames needs over 1.5 GB; the
    resize factor would not help, the frames are decoded at full size first). Up to the
    limit, every size works: faces are detected on a copy scaled to the detector's range."""
    side = max(info.width, info.height)
    if side > limits.max_frame_side:
        raise InputError(
            f"{what} '{name}' is {info.width}x{info.height} px; this app accepts frames of at "
            f"most {limits.max_frame_side} px on the longer side. Downscale it first (e.g. "
            "`ffmpeg -i IN -vf scale=-2:2160 OUT.mp4` for 4K), or run it on your own machine "
            "with the command-line tool")


def check_budget(seconds, limits: AppLimits) -> float:
    """An enrollment time budget (seconds) within the app's maximum."""
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
                         "on your own machine with the command-line tool")
    return s


def check_choice(value, choices: Sequence[str], what: str, verb: str = "use") -> str:
    """``value`` if it is one of ``choices``, else an error listing them (for the face
    detector, only the ones that work here: no S3FD without its weights)."""
    if value not in choices:
        listed = choices
        if what == "face detector":
            from ladtalk.face.detect import available_detectors
            listed = [c for c in choices if c in available_detectors()]
        raise InputError(f"unknown {what} {value!r}; {verb} one of {', '.join(listed)}")
    return value


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
        raise InputError(f"fixed face box {text!r}: give 4 numbers Y1 Y2 X1 X2 (top, bottom, "
                         "left, right) in pixels of the face video, or leave it empty to "
                         "detect the face")
    return vals  # type: ignore[return-value]


def parse_pads(*values) -> Tuple[int, int, int, int]:
    """Four pad values (top, bottom, left, right) -> whole pixels within +-1000."""
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


def parse_resize_factor(value) -> int:
    """The resize factor: a whole number >= 1 (empty = 1, full size)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if not (math.isfinite(f) and f >= 1 and f == int(f)):
        raise InputError(f"the resize factor must be a whole number >= 1 (1 = full size, 2 = "
                         f"half the width and height), got {value!r}")
    return int(f)


# -------------------------------------------------------------------------- GPU durations
def clamp_gpu(seconds: float, cap: float) -> int:
    return int(max(GPU_MIN_SECONDS, min(float(cap), math.ceil(seconds))))


def generate_work_seconds(n_frames: int, n_source_frames: int, enhance: bool,
                          baseline: bool) -> float:
    """Rough GPU-call seconds of a generation (model warm-up, detection, per-frame models,
    blend and encode), loosely calibrated on an H100-class GPU, times a safety factor of 2.
    The baseline pass reuses the LaDTalk pass's face track: detection is counted once."""
    per_frame = 0.012 + (0.015 if enhance else 0.0)
    passes_frames = n_frames * (per_frame + (0.012 if (baseline and enhance) else 0.0))
    detect = n_source_frames * 0.004
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


def robustness_gpu_seconds(certificate: bool, cap: float) -> int:
    return clamp_gpu(20 + (30 if certificate else 0), cap)


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
