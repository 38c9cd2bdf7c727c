"""What a media file holds (:class:`MediaInfo`), read from ``ffmpeg -i``'s stream summary.

imageio-ffmpeg ships no ffprobe, so :func:`probe` parses what ``ffmpeg -i FILE`` prints.
Sizes are display sizes (rotation applied, as ffmpeg auto-rotates while decoding).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ladtalk.errors import InputError
from ladtalk.media.ffmpeg import PathLike, info_cmd, input_file, last_error_line
from ladtalk.media.image import decode_still, is_still_image

_NTSC_RATES = (24000 / 1001, 30000 / 1001, 48000 / 1001, 60000 / 1001, 120000 / 1001)

_STREAM_RE = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio|Subtitle|Data|Attachment): (.*)$")
_SIZE_RE = re.compile(r",\s(\d+)x(\d+)(?=[\s,\[]|$)")
_FPS_RE = re.compile(r"([\d.]+)(k?) fps")
_TBR_RE = re.compile(r"([\d.]+)(k?) tbr")
_DUR_RE = re.compile(r"Duration:\s*(\d+):(\d+):([\d.]+)")
_ROT_RE = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_ROT_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?\d+)", re.IGNORECASE)
_HZ_RE = re.compile(r"(\d+) Hz, ([^,]+)")


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learned about a file.

    ``width``/``height`` are display sizes. ``fps`` is the average rate (exact for NTSC
    rates), ``None`` for stills and audio-only files. ``n_frames`` is ``round(duration *
    fps)`` (1 for stills). ``maybe_vfr``: the average rate differs from ffmpeg's ``tbr``.
    """

    path: Path
    width: int
    height: int
    fps: Optional[float]
    duration: float
    n_frames: int
    has_video: bool
    has_audio: bool
    video_codec: Optional[str]
    audio_codec: Optional[str]
    is_image: bool
    rotation: int = 0
    audio_sample_rate: Optional[int] = None
    audio_channels: Optional[str] = None
    maybe_vfr: bool = False

    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)``."""
        return (self.width, self.height)


def estimate_frames(info: MediaInfo, fps: float) -> int:
    """Expected number of source frames at ``fps`` (a photo has one; without a duration,
    the probed frame count)."""
    if info.is_image:
        return 1
    if info.duration:
        return max(1, int(round(info.duration * fps)))
    return max(1, int(info.n_frames))


def _snap_fps(fps: float) -> float:
    """ffmpeg prints rates rounded to 2 decimals; restore the exact NTSC rates."""
    for exact in _NTSC_RATES:
        if abs(fps - exact) < 0.006:
            return exact
    return fps


def _num(value: str, suffix: str) -> float:
    return float(value) * (1000.0 if suffix == "k" else 1.0)


def _run_ffmpeg_info(path: Path) -> str:
    proc = subprocess.run(info_cmd(path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=120)
    return proc.stderr.decode("utf-8", errors="replace")


def _video_stream(desc: str) -> dict:
    v: dict = {"codec": desc.split()[0].rstrip(","), "rotation": 0.0}
    size = _SIZE_RE.search(desc)
    if size:
        v["width"], v["height"] = int(size.group(1)), int(size.group(2))
    fps = _FPS_RE.search(desc)
    v["fps"] = _num(*fps.groups()) if fps else None
    tbr = _TBR_RE.search(desc)
    v["tbr"] = _num(*tbr.groups()) if tbr else None
    return v


def _audio_stream(desc: str) -> dict:
    a: dict = {"codec": desc.split()[0].rstrip(",")}
    hz = _HZ_RE.search(desc)
    if hz:
        a["sample_rate"], a["channels"] = int(hz.group(1)), hz.group(2).strip()
    return a


def _parse_info(text: str) -> dict:
    """Parse ``ffmpeg -i`` stderr into a dict of the first video / audio stream facts."""
    out: dict = {"video": None, "audio": None, "duration": None, "format": None}
    m = re.search(r"Input #0, ([^ ]+), from", text)
    if m:
        out["format"] = m.group(1).rstrip(",")
    m = _DUR_RE.search(text)
    if m:
        out["duration"] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    current = None  # the stream dict whose side data / metadata lines follow
    for line in text.splitlines():
        sm = _STREAM_RE.match(line)
        if sm:
            kind, desc = sm.group(1), sm.group(2)
            current = None
            if kind == "Video" and out["video"] is None and "(attached pic)" not in desc:
                out["video"] = current = _video_stream(desc)
            elif kind == "Audio" and out["audio"] is None:
                out["audio"] = _audio_stream(desc)
            continue
        if current is not None:
            rm = _ROT_RE.search(line) or _ROT_TAG_RE.match(line)
            if rm:
                current["rotation"] = float(rm.group(1))
    return out


def _probe_image(p: Path) -> MediaInfo:
    img = decode_still(p)
    if img is None:  # magic bytes matched but OpenCV failed: ask ffmpeg
        v = _parse_info(_run_ffmpeg_info(p))["video"]
        if not v or "width" not in v:
            raise InputError(f"'{p}' looks like an image but could not be decoded; "
                             "re-save it as PNG or JPEG")
        h, w = v["height"], v["width"]
    else:
        h, w = img.shape[:2]
    return MediaInfo(path=p, width=int(w), height=int(h), fps=None, duration=0.0,
                     n_frames=1, has_video=True, has_audio=False,
                     video_codec="image", audio_codec=None, is_image=True)


def _video_facts(p: Path, v: dict) -> Tuple[int, int, Optional[float], int, bool]:
    """``(width, height, fps, rotation, maybe_vfr)`` of a parsed video stream."""
    if "width" not in v:
        raise InputError(f"cannot read the frame size of '{p}'; re-export it (e.g. as H.264 MP4)")
    width, height = v["width"], v["height"]
    rotation = int(round(v["rotation"])) % 360
    if rotation in (90, 270):
        width, height = height, width
    fps = v["fps"] or v["tbr"]
    vfr = False
    if fps:
        fps = _snap_fps(fps)
        if v["tbr"]:
            vfr = abs(_snap_fps(v["tbr"]) - fps) > 0.01 * fps
    return width, height, fps, rotation, vfr


def probe(path: PathLike, require_video: bool = True) -> MediaInfo:
    """Describe a video, still image or (with ``require_video=False``) audio file.

    Raises :class:`InputError` naming the file when it is missing, empty, not decodable, or
    (with ``require_video``) has no video stream.
    """
    p = input_file(path)
    if is_still_image(p):
        return _probe_image(p)
    text = _run_ffmpeg_info(p)
    if "Input #0" not in text:
        raise InputError(f"cannot decode '{p}': {last_error_line(text)}. "
                         "Is it a complete video/audio file? Re-export it (e.g. as H.264 MP4)")
    info = _parse_info(text)
    v, a = info["video"], info["audio"]
    if v is None and require_video:
        what = "an audio-only file" if a else "no video or audio stream"
        raise InputError(f"'{p}' has no video stream ({what}); pass a video or an image "
                         "with a visible face")
    width, height, fps, rotation, vfr = _video_facts(p, v) if v else (0, 0, None, 0, False)
    duration = info["duration"] or 0.0
    n_frames = int(round(duration * fps)) if (fps and duration) else 0
    if v is not None and n_frames == 0:
        try:
            import imageio_ffmpeg
            n_frames, secs = imageio_ffmpeg.count_frames_and_secs(str(p))
            duration = duration or float(secs)
        except Exception:  # pragma: no cover - best effort only
            n_frames = 0
    return MediaInfo(path=p, width=width, height=height, fps=fps, duration=float(duration),
                     n_frames=int(n_frames), has_video=v is not None, has_audio=a is not None,
                     video_codec=v["codec"] if v else None, audio_codec=a["codec"] if a else None,
                     is_image=False, rotation=rotation,
                     audio_sample_rate=a.get("sample_rate") if a else None,
                     audio_channels=a.get("channels") if a else None, maybe_vfr=vfr)
