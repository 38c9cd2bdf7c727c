"""Frame decoding and encoding through the ffmpeg binary bundled with ``imageio-ffmpeg``.

There is no ffprobe in that bundle, so :func:`probe` parses the stream summary that
``ffmpeg -hide_banner -i FILE`` prints on stderr.

Conventions
-----------
* Frames are ``uint8`` RGB arrays, ``(H, W, 3)`` for one frame and ``(n, H, W, 3)`` for a
  chunk. Sizes are given as ``(width, height)`` where a pair is needed (ffmpeg's order).
* Sizes reported by :func:`probe` are *display* sizes: rotation metadata (a display matrix,
  or the legacy ``rotate`` tag) is applied, because ffmpeg auto-rotates while decoding.
  Non-square pixels (SAR != 1) are not resampled; frames come out at their storage size.
* Still images are recognised by content (magic bytes, then an OpenCV decode attempt), not
  by extension, so a PNG named ``.mp4`` or a JPEG named ``.png`` works everywhere.
* Decoding streams through a rawvideo pipe and never holds more than one chunk of frames.
  With ``fps=None`` every decoded frame is delivered exactly once (``-fps_mode passthrough``);
  with ``fps=F`` the video is resampled to a constant rate ``F`` (``-vf fps=F``), which is how
  variable-frame-rate input is put on a regular timeline.
* Encoding (:class:`VideoWriter`) pipes frames once into libx264 / yuv420p (BT.709 tagged).
  H.264 4:2:0 cannot represent odd widths or heights, so an odd dimension is padded by
  **one pixel on the right / bottom, replicating the last column / row** (no black line);
  even sizes are kept exactly. :func:`encoded_size` states the result for any size.
* Output files are written to a temporary file next to the destination and moved into place
  with ``os.replace`` only when encoding succeeded; on any error the temporary file is
  removed and an existing destination is left untouched.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Deque, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk.errors import InputError, LadTalkError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Audio codecs that may be stream-copied into each output container (others -> AAC).
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
_COPY_OK = {
    ".mp4": MP4_AUDIO_COPY,
    ".m4v": MP4_AUDIO_COPY,
    ".mov": MP4_AUDIO_COPY | {"pcm_s16le", "pcm_s24le", "pcm_f32le"},
    ".mkv": None,  # Matroska takes any codec
}

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
# Container signatures that are certainly not still images (skip the OpenCV attempt).
_VIDEO_MAGIC = (b"ftyp", b"\x1aE\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"\x00\x00\x01\xba",
                b"ID3", b"fLaC", b"GIF8")  # GIF may be animated: decode it as video
_IMAGE_SNIFF_MAX_BYTES = 64 * 1024 * 1024

_NTSC_RATES = (24000 / 1001, 30000 / 1001, 48000 / 1001, 60000 / 1001, 120000 / 1001)


# --------------------------------------------------------------------------- helpers

def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped with imageio-ffmpeg."""
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_file(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    if p.is_dir():
        raise InputError(f"expected a media file but got a directory: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"input file is empty (0 bytes): {p}; re-export or re-download it")
    return p


def _snap_fps(fps: float) -> float:
    """ffmpeg prints rates rounded to 2 decimals; restore the exact NTSC rates."""
    for exact in _NTSC_RATES:
        if abs(fps - exact) < 0.006:
            return exact
    return fps


def _fps_arg(fps: Union[float, Fraction, str]) -> str:
    """Frame rate as an exact ffmpeg rational string ('30000/1001', '25/1')."""
    if isinstance(fps, str):
        fps = Fraction(fps)
    frac = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    if frac <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return f"{frac.numerator}/{frac.denominator}"


def _num(value: str, suffix: str) -> float:
    return float(value) * (1000.0 if suffix == "k" else 1.0)


# --------------------------------------------------------------------------- probing

@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learned about a file.

    ``width``/``height`` are display sizes (rotation applied). ``fps`` is the average frame
    rate (exact for NTSC rates), ``None`` for still images and audio-only files. ``n_frames``
    is an estimate (``round(duration * fps)``; 1 for stills); use :func:`count_frames` for an
    exact count. ``maybe_vfr`` is True when the average rate differs from ffmpeg's base-rate
    guess (``tbr``), the usual sign of variable-frame-rate input.
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


def _run_ffmpeg_info(path: Path) -> str:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=120)
    return proc.stderr.decode("utf-8", errors="replace")


_STREAM_RE = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio|Subtitle|Data|Attachment): (.*)$")
_SIZE_RE = re.compile(r",\s(\d+)x(\d+)(?=[\s,\[]|$)")
_FPS_RE = re.compile(r"([\d.]+)(k?) fps")
_TBR_RE = re.compile(r"([\d.]+)(k?) tbr")
_DUR_RE = re.compile(r"Duration:\s*(\d+):(\d+):([\d.]+)")
_ROT_RE = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_ROT_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?\d+)", re.IGNORECASE)
_HZ_RE = re.compile(r"(\d+) Hz, ([^,]+)")


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
                v: dict = {"codec": desc.split()[0].rstrip(","), "rotation": 0.0}
                size = _SIZE_RE.search(desc)
                if size:
                    v["width"], v["height"] = int(size.group(1)), int(size.group(2))
                fps = _FPS_RE.search(desc)
                v["fps"] = _num(*fps.groups()) if fps else None
                tbr = _TBR_RE.search(desc)
                v["tbr"] = _num(*tbr.groups()) if tbr else None
                out["video"] = current = v
            elif kind == "Audio" and out["audio"] is None:
                a: dict = {"codec": desc.split()[0].rstrip(",")}
                hz = _HZ_RE.search(desc)
                if hz:
                    a["sample_rate"], a["channels"] = int(hz.group(1)), hz.group(2).strip()
                out["audio"] = a
            continue
        if current is not None:
            rm = _ROT_RE.search(line) or _ROT_TAG_RE.match(line)
            if rm:
                current["rotation"] = float(rm.group(1))
    return out


def _ffmpeg_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()
             and not ln.startswith("At least one output file")]
    return lines[-1] if lines else "ffmpeg gave no details"


def is_still_image(path: PathLike) -> bool:
    """True when the file's *content* is a still image (PNG, JPEG, BMP, TIFF, WebP, ...).

    Magic bytes decide the common formats; for anything else that is not a known video
    container, an OpenCV decode attempt decides. The extension is never consulted.
    """
    p = _check_file(path)
    with open(p, "rb") as fh:
        head = fh.read(32)
    for magic, _ in _MAGIC:
        if head.startswith(magic):
            return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"heic", b"heix", b"mif1"):
        return False  # single-image HEIF/AVIF: let ffmpeg treat it as a 1-frame video
    if any(head.startswith(m) or head[4:8] == m for m in _VIDEO_MAGIC):
        return False
    if p.stat().st_size > _IMAGE_SNIFF_MAX_BYTES:
        return False
    return _cv2_decode(p) is not None


def _cv2_decode(p: Path) -> Optional[np.ndarray]:
    import cv2
    data = np.fromfile(str(p), dtype=np.uint8)  # unicode-safe, unlike cv2.imread on Windows
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # applies EXIF orientation, drops alpha
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: PathLike) -> np.ndarray:
    """Decode a still image to ``(H, W, 3)`` uint8 RGB (EXIF orientation applied).

    Falls back to ffmpeg's first frame for formats OpenCV cannot read.
    """
    p = _check_file(path)
    img = _cv2_decode(p)
    if img is not None:
        return np.ascontiguousarray(img)
    frames = [c for c in iter_frames(p, chunk_size=1, max_frames=1)]
    if not frames:
        raise InputError(f"could not decode an image from {p}")
    return frames[0][0]


def probe(path: PathLike, require_video: bool = True) -> MediaInfo:
    """Describe a video, still image or (with ``require_video=False``) audio file.

    Raises :class:`InputError` naming the file when it is missing, empty, not decodable, or
    (with ``require_video``) has no video stream.
    """
    p = _check_file(path)
    if is_still_image(p):
        img = _cv2_decode(p)
        if img is None:  # magic bytes matched but OpenCV failed: try ffmpeg below
            info = _parse_info(_run_ffmpeg_info(p))
            v = info["video"]
            if not v or "width" not in v:
                raise InputError(f"{p} looks like an image but could not be decoded; "
                                 "re-save it as PNG or JPEG")
            h, w = v["height"], v["width"]
        else:
            h, w = img.shape[:2]
        return MediaInfo(path=p, width=int(w), height=int(h), fps=None, duration=0.0,
                         n_frames=1, has_video=True, has_audio=False,
                         video_codec="image", audio_codec=None, is_image=True)
    text = _run_ffmpeg_info(p)
    if "Input #0" not in text:
        raise InputError(f"cannot decode {p}: {_ffmpeg_error_line(text)}. "
                         "Is it a complete video/audio file? Re-export it (e.g. as H.264 MP4)")
    info = _parse_info(text)
    v, a = info["video"], info["audio"]
    if v is None and require_video:
        what = "an audio-only file" if a else "no video or audio stream"
        raise InputError(f"{p} has no video stream ({what}); pass a video or an image "
                         "with a visible face")
    width = height = 0
    fps = None
    rotation = 0
    vfr = False
    if v is not None:
        if "width" not in v:
            raise InputError(f"cannot read the frame size of {p}; re-export it (e.g. as H.264 MP4)")
        width, height = v["width"], v["height"]
        rotation = int(round(v["rotation"])) % 360
        if rotation in (90, 270):
            width, height = height, width
        fps = v["fps"] or v["tbr"]
        if fps:
            fps = _snap_fps(fps)
            if v["tbr"]:
                vfr = abs(_snap_fps(v["tbr"]) - fps) > 0.01 * fps
    duration = info["duration"]
    if duration is None:
        duration = 0.0
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


def count_frames(path: PathLike) -> int:
    """Exact number of video frames (demuxes the whole file, does not decode; 1 for stills)."""
    p = _check_file(path)
    if is_still_image(p):
        return 1
    import imageio_ffmpeg
    try:
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(p))
    except Exception as exc:
        raise InputError(f"cannot count frames of {p}: {exc}") from None
    return int(n)


# --------------------------------------------------------------------------- decoding

class _StderrDrain:
    """Reads a child's stderr on a thread (so the pipe never fills) and keeps the tail."""

    def __init__(self, stream, keep: int = 200):
        self.lines: Deque[str] = collections.deque(maxlen=keep)
        self.n_lines = 0
        self._stream = stream
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                self.lines.append(raw.decode("utf-8", errors="replace").rstrip())
                self.n_lines += 1
        except (OSError, ValueError):
            pass

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def tail(self, n: int = 3) -> str:
        lines = [ln for ln in self.lines if ln.strip()]
        return " | ".join(lines[-n:]) if lines else "no error message from ffmpeg"


def _read_exact(stream, buf: memoryview) -> int:
    """Fill ``buf`` from ``stream``; returns bytes read (< len(buf) only at end of stream)."""
    got = 0
    n = len(buf)
    while got < n:
        k = stream.readinto(buf[got:])
        if not k:
            break
        got += k
    return got


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass
    for s in (proc.stdin, proc.stdout, proc.stderr):
        if s is not None:
            try:
                s.close()
            except OSError:
                pass


def iter_frames(path: PathLike, fps: Optional[float] = None, chunk_size: int = 16,
                strict: bool = False, info: Optional[MediaInfo] = None,
                max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Stream decoded frames as ``(n, H, W, 3)`` uint8 RGB chunks (``n <= chunk_size``).

    Memory is bounded by one chunk. ``fps=None`` delivers every decoded frame once;
    ``fps=F`` resamples to a constant ``F`` frames per second (use it for variable-frame-rate
    input). Still images yield a single one-frame chunk. Rotation metadata is honoured.

    Decode errors that ffmpeg conceals are logged as warnings; the generator raises
    :class:`InputError` with the timestamp of the last good frame when ffmpeg exits with an
    error, a frame arrives truncated, or (after decode errors) the stream ends well before
    its stated duration. ``strict=True`` aborts at the first decode error (``-xerror``).
    ``max_frames`` stops after that many frames. ``info`` skips a second :func:`probe`.
    Closing the generator early (``break``, ``.close()``, garbage collection) kills ffmpeg.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    info = info or probe(path)
    p = info.path
    if info.is_image:
        img = _cv2_decode(p)
        if img is not None:
            yield np.ascontiguousarray(img)[None]
            return
    w, h = info.width, info.height
    frame_bytes = w * h * 3
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
    if strict:
        cmd.append("-xerror")
    cmd += ["-i", str(p), "-map", "0:v:0", "-an", "-sn", "-dn"]
    if fps is not None:
        cmd += ["-vf", f"fps={_fps_arg(fps)}"]
    else:
        cmd += ["-fps_mode", "passthrough"]
    if max_frames is not None:
        cmd += ["-frames:v", str(int(max_frames))]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    rate = float(fps) if fps is not None else (info.fps or 25.0)
    expected = info.duration * rate if info.duration else 0.0

    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)
    drain = _StderrDrain(proc.stderr)
    n_done = 0
    warned = 0
    try:
        while True:
            chunk = np.empty((chunk_size, h, w, 3), dtype=np.uint8)
            flat = memoryview(chunk.reshape(-1))
            n_in_chunk = 0
            ended = False
            for i in range(chunk_size):
                got = _read_exact(proc.stdout, flat[i * frame_bytes:(i + 1) * frame_bytes])
                if got == frame_bytes:
                    n_in_chunk += 1
                    continue
                ended = True
                if got:
                    proc.wait()
                    drain.join()
                    raise InputError(
                        f"decoding {p} failed at t={(n_done + n_in_chunk) / rate:.2f}s "
                        f"(frame {n_done + n_in_chunk}): truncated frame "
                        f"({got} of {frame_bytes} bytes); {drain.tail()}")
                break
            if drain.n_lines > warned:
                log.warning("decode errors in %s near t=%.2fs: %s", p,
                            (n_done + n_in_chunk) / rate, drain.tail(1))
                warned = drain.n_lines
            if n_in_chunk:
                n_done += n_in_chunk
                yield chunk[:n_in_chunk] if n_in_chunk < chunk_size else chunk
            if ended:
                break
        rc = proc.wait()
        drain.join()
        if rc != 0:
            raise InputError(f"decoding {p} failed at t={n_done / rate:.2f}s (frame {n_done}): "
                             f"{drain.tail()}. Re-export the file (e.g. as H.264 MP4)")
        short = expected - n_done
        if (drain.n_lines and max_frames is None and expected
                and short > max(0.5 * rate, 0.05 * expected)):
            raise InputError(f"decoding {p} stopped at t={n_done / rate:.2f}s of "
                             f"{info.duration:.2f}s (frame {n_done}); the file looks truncated "
                             f"or corrupt: {drain.tail()}")
        if n_done == 0:
            raise InputError(f"no frames could be decoded from {p}: {drain.tail()}")
    finally:
        _kill(proc)
        drain.join()


def read_frames(path: PathLike, fps: Optional[float] = None) -> np.ndarray:
    """All frames at once as ``(n, H, W, 3)``. Only for short clips (tests, previews)."""
    chunks = list(iter_frames(path, fps=fps, chunk_size=64))
    return np.concatenate(chunks, axis=0)


# --------------------------------------------------------------------------- encoding

def encoded_size(width: int, height: int) -> Tuple[int, int]:
    """Output ``(width, height)`` of :class:`VideoWriter` for an input size: odd dimensions
    grow by one pixel (edge replication on the right / bottom), even ones are unchanged."""
    return (width + width % 2, height + height % 2)


def audio_copy_ok(codec: Optional[str], suffix: str) -> bool:
    """Whether ``codec`` can be stream-copied into a container with file ``suffix``."""
    if not codec:
        return False
    allowed = _COPY_OK.get(suffix.lower(), MP4_AUDIO_COPY)
    return True if allowed is None else codec in allowed


class VideoWriter:
    """Encode RGB frames to H.264 (libx264, yuv420p) and optionally mux an audio track.

    ``size`` is ``(width, height)`` of the frames you will write; see :func:`encoded_size`
    for the odd-size rule. ``audio`` is any file with an audio stream (its first audio stream
    is used). ``audio_mode``: ``"copy-or-aac"`` (stream copy when the codec fits the output
    container, else AAC 192 kb/s), ``"copy"`` (copy or raise), ``"aac"`` (always re-encode).
    There is no ``-shortest``: the output holds every frame written and the whole audio
    track, so the caller decides the length (write as many frames as the audio lasts).

    Use as a context manager; the destination appears only after a successful close.
    """

    def __init__(self, path: PathLike, fps: Union[float, Fraction, str],
                 size: Tuple[int, int], audio: Optional[PathLike] = None,
                 audio_mode: str = "copy-or-aac", crf: int = 18, preset: str = "medium",
                 audio_bitrate: str = "192k", extra_args: Sequence[str] = ()):
        if audio_mode not in ("copy-or-aac", "copy", "aac"):
            raise ValueError(f"audio_mode must be copy-or-aac, copy or aac, not {audio_mode!r}")
        self.path = Path(path)
        self.fps = fps
        self.width, self.height = int(size[0]), int(size[1])
        if self.width < 1 or self.height < 1:
            raise ValueError(f"invalid frame size {size}")
        self.out_size = encoded_size(self.width, self.height)
        self.audio = Path(audio) if audio is not None else None
        self.audio_mode = audio_mode
        self.crf, self.preset, self.audio_bitrate = crf, preset, audio_bitrate
        self.extra_args = list(extra_args)
        self.frames_written = 0
        self.audio_copied: Optional[bool] = None
        self._proc: Optional[subprocess.Popen] = None
        self._drain: Optional[_StderrDrain] = None
        self._tmp: Optional[Path] = None
        self._pad_buf: Optional[np.ndarray] = None

    # -- lifecycle
    def _audio_args(self) -> List[str]:
        if self.audio is None:
            return []
        ainfo = probe(self.audio, require_video=False)
        if not ainfo.has_audio:
            raise InputError(f"{self.audio} has no audio stream to mux")
        copy_ok = audio_copy_ok(ainfo.audio_codec, self.path.suffix)
        if self.audio_mode == "copy" and not copy_ok:
            raise InputError(f"audio codec {ainfo.audio_codec} of {self.audio} cannot be copied "
                             f"into {self.path.suffix or 'this container'}; use audio_mode='aac'")
        self.audio_copied = copy_ok and self.audio_mode != "aac"
        if self.audio_copied:
            return ["-c:a", "copy"]
        return ["-c:a", "aac", "-b:a", self.audio_bitrate]

    def open(self) -> "VideoWriter":
        if self._proc is not None:
            raise RuntimeError("VideoWriter is already open")
        dest_dir = self.path.parent if str(self.path.parent) else Path(".")
        if not dest_dir.is_dir():
            raise InputError(f"output folder does not exist: {dest_dir}")
        audio_args = self._audio_args()
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{self.path.stem}.",
                                   suffix=f".partial{self.path.suffix or '.mp4'}")
        os.close(fd)
        self._tmp = Path(tmp)
        ow, oh = self.out_size
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{ow}x{oh}",
               "-framerate", _fps_arg(self.fps), "-i", "pipe:0"]
        if self.audio is not None:
            cmd += ["-i", str(self.audio), "-map", "0:v:0", "-map", "1:a:0"]
        cmd += ["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
                "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
                "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709",
                "-color_trc", "bt709", "-color_range", "tv"]
        cmd += audio_args + self.extra_args
        if self.path.suffix.lower() in (".mp4", ".m4v", ".mov", ""):
            cmd += ["-movflags", "+faststart"]
        if not self.path.suffix:
            cmd += ["-f", "mp4"]
        cmd.append(str(self._tmp))
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, bufsize=0)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
            raise
        self._drain = _StderrDrain(self._proc.stderr)
        return self

    def write(self, frames: np.ndarray) -> None:
        """Write one ``(H, W, 3)`` frame or a ``(n, H, W, 3)`` chunk of uint8 RGB."""
        if self._proc is None:
            raise RuntimeError("VideoWriter is not open (use it as a context manager)")
        arr = np.asarray(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected frames of shape (n, {self.height}, {self.width}, 3), "
                             f"got {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {arr.dtype}")
        if self.out_size != (self.width, self.height):
            arr = self._pad(arr)
        try:
            self._proc.stdin.write(np.ascontiguousarray(arr).data)
        except (BrokenPipeError, OSError):
            self._proc.wait()
            self._drain.join()
            raise LadTalkError(f"ffmpeg stopped while encoding {self.path} "
                               f"(frame {self.frames_written}): {self._drain.tail()}") from None
        self.frames_written += arr.shape[0]

    def _pad(self, arr: np.ndarray) -> np.ndarray:
        ow, oh = self.out_size
        n = arr.shape[0]
        if self._pad_buf is None or self._pad_buf.shape[0] < n:
            self._pad_buf = np.empty((n, oh, ow, 3), dtype=np.uint8)
        buf = self._pad_buf[:n]
        buf[:, :self.height, :self.width] = arr
        if ow > self.width:
            buf[:, :self.height, self.width:] = arr[:, :, -1:]
        if oh > self.height:
            buf[:, self.height:, :] = buf[:, self.height - 1:self.height, :]
        return buf

    def close(self) -> Path:
        """Finish encoding and move the file into place. Returns the destination path."""
        if self._proc is None:
            raise RuntimeError("VideoWriter is not open")
        proc, self._proc = self._proc, None
        try:
            if self.frames_written == 0:
                raise LadTalkError(f"no frames were written to {self.path}")
            proc.stdin.close()
            rc = proc.wait()
            self._drain.join()
            if rc != 0:
                raise LadTalkError(f"ffmpeg failed to encode {self.path}: {self._drain.tail()}")
            os.replace(self._tmp, self.path)
            self._tmp = None
            return self.path
        except BaseException:
            self._cleanup(proc)
            raise

    def abort(self) -> None:
        """Stop encoding and delete the partial output (destination untouched)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            self._cleanup(proc)

    def _cleanup(self, proc: subprocess.Popen) -> None:
        _kill(proc)
        if self._drain is not None:
            self._drain.join()
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass
            self._tmp = None

    def __enter__(self) -> "VideoWriter":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):  # last-resort cleanup if the caller forgot to close
        try:
            if self._proc is not None:
                self.abort()
        except Exception:
            pass
