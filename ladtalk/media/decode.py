"""Decode frames: a bounded-memory stream of ``(n, H, W, 3)`` uint8 RGB chunks from ffmpeg.

``fps=None`` delivers every decoded frame once (``-fps_mode passthrough``); ``fps=F``
resamples to a constant rate with ffmpeg's ``fps`` filter (how variable-frame-rate input is
put on a regular timeline). Still images yield one one-frame chunk.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Iterator, List, Optional

import ffmpeg
import numpy as np

from ladtalk.errors import InputError
from ladtalk.media.ffmpeg import (
    PathLike,
    StderrDrain,
    compile_cmd,
    fps_arg,
    input_file,
    kill,
    read_exact,
    widen_pipe,
)
from ladtalk.media.image import decode_still
from ladtalk.media.probe import MediaInfo, probe

log = logging.getLogger(__name__)


def decode_cmd(path: PathLike, fps: Optional[float] = None, strict: bool = False,
               max_frames: Optional[int] = None) -> List[str]:
    """ffmpeg command that writes the first video stream of ``path`` as raw RGB to stdout."""
    stream = ffmpeg.input(str(path))["v:0"]
    opts = {"an": None, "sn": None, "dn": None, "f": "rawvideo", "pix_fmt": "rgb24"}
    if fps is not None:
        stream = stream.filter("fps", fps=fps_arg(fps))
    else:
        opts["fps_mode"] = "passthrough"
    if max_frames is not None:
        opts["frames:v"] = int(max_frames)
    return compile_cmd(stream.output("pipe:1", **opts), *(["-xerror"] if strict else []))


def _read_chunk(stdout, chunk_size: int, h: int, w: int):
    """Up to ``chunk_size`` frames: ``(chunk, n_full_frames, bytes_of_a_partial_frame)``."""
    frame_bytes = h * w * 3
    chunk = np.empty((chunk_size, h, w, 3), dtype=np.uint8)
    flat = memoryview(chunk.reshape(-1))
    for i in range(chunk_size):
        got = read_exact(stdout, flat[i * frame_bytes:(i + 1) * frame_bytes])
        if got != frame_bytes:
            return chunk, i, got
    return chunk, chunk_size, 0


def _stream(proc: subprocess.Popen, drain: StderrDrain, info: MediaInfo, chunk_size: int,
            rate: float):
    """Yield chunks until ffmpeg's stdout ends; returns the number of frames delivered."""
    n_done = warned = 0
    frame_bytes = info.width * info.height * 3
    while True:
        chunk, n, partial = _read_chunk(proc.stdout, chunk_size, info.height, info.width)
        if partial:
            proc.wait()
            drain.join()
            raise InputError(
                f"decoding '{info.path}' failed at t={(n_done + n) / rate:.2f}s "
                f"(frame {n_done + n}): truncated frame "
                f"({partial} of {frame_bytes} bytes; {drain.tail()}). Upload the complete "
                "file, or re-export it (e.g. as H.264 MP4)")
        if drain.n_lines > warned:
            log.warning("decode errors in %s near t=%.2fs: %s", info.path,
                        (n_done + n) / rate, drain.tail(1))
            warned = drain.n_lines
        if n:
            n_done += n
            yield chunk[:n] if n < chunk_size else chunk
        if n < chunk_size:
            return n_done


def _check_end(proc: subprocess.Popen, drain: StderrDrain, info: MediaInfo, n_done: int,
               rate: float, max_frames: Optional[int]) -> None:
    """Raise when ffmpeg failed, stopped well short of the duration, or gave no frame."""
    p = info.path
    rc = proc.wait()
    drain.join()
    if rc != 0:
        raise InputError(f"decoding '{p}' failed at t={n_done / rate:.2f}s (frame {n_done}): "
                         f"{drain.tail()}. Re-export the file (e.g. as H.264 MP4)")
    expected = info.duration * rate if info.duration else 0.0
    short = expected - n_done
    if (drain.n_lines and max_frames is None and expected
            and short > max(0.5 * rate, 0.05 * expected)):
        raise InputError(f"decoding '{p}' stopped at t={n_done / rate:.2f}s of "
                         f"{info.duration:.2f}s (frame {n_done}); the file looks truncated "
                         f"or corrupt ({drain.tail()}). Upload the complete file, or "
                         "re-export it (e.g. as H.264 MP4)")
    if n_done == 0:
        raise InputError(f"no frames could be decoded from '{p}': {drain.tail()}")


def iter_frames(path: PathLike, fps: Optional[float] = None, chunk_size: int = 16,
                strict: bool = False, info: Optional[MediaInfo] = None,
                max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Stream decoded frames as ``(n, H, W, 3)`` uint8 RGB chunks (``n <= chunk_size``).

    Concealed decode errors are logged; :class:`InputError` (with the time of the last good
    frame) when ffmpeg fails, a frame is truncated, or the stream ends well short of its
    duration. ``strict`` stops at the first decode error; ``info`` skips a second probe.
    Closing the generator early kills ffmpeg.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    info = info or probe(path)
    if info.is_image:
        img = decode_still(info.path)
        if img is not None:
            yield img[None]
            return
    rate = float(fps) if fps is not None else (info.fps or 25.0)
    proc = subprocess.Popen(decode_cmd(info.path, fps, strict, max_frames),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)
    widen_pipe(proc.stdout)
    drain = StderrDrain(proc.stderr)
    try:
        n_done = yield from _stream(proc, drain, info, chunk_size, rate)
        _check_end(proc, drain, info, n_done, rate, max_frames)
    finally:
        kill(proc)
        drain.join()


def read_frames(path: PathLike, fps: Optional[float] = None) -> np.ndarray:
    """All frames at once as ``(n, H, W, 3)``. Only for short clips (tests, previews)."""
    return np.concatenate(list(iter_frames(path, fps=fps, chunk_size=64)), axis=0)


def read_image(path: PathLike) -> np.ndarray:
    """Decode a still image to ``(H, W, 3)`` uint8 RGB (EXIF orientation applied).

    Falls back to ffmpeg's first frame for formats OpenCV cannot read.
    """
    p = input_file(path)
    img = decode_still(p)
    if img is not None:
        return img
    frames = list(iter_frames(p, chunk_size=1, max_frames=1))
    if not frames:
        raise InputError(f"could not decode an image from '{p}'")
    return frames[0][0]


def frame_at(path, seconds: float, info=None) -> np.ndarray:
    """The RGB frame shown at ``seconds`` (decoding up to it; the last frame when the
    video is shorter than its header says). ``info``: the file's :func:`probe`, if known."""
    info = info or probe(path)
    name = getattr(path, "name", str(path))
    t = float(seconds)
    if not (0.0 <= t <= info.duration):
        raise InputError(f"frame time {t:g} s is outside the video '{name}' "
                         f"(0 to {info.duration:.2f} s)")
    want = min(int(round(t * (info.fps or 25.0))), max(0, info.n_frames - 1))
    last = None
    for chunk in iter_frames(path, chunk_size=8, info=info, max_frames=want + 1):
        last = chunk[-1]
    if last is None:
        raise InputError(f"no frame could be decoded from '{name}'")
    return np.ascontiguousarray(last)

