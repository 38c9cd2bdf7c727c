"""Encode RGB frames to H.264 / yuv420p (BT.709 tagged) and mux an audio track.

Frames are piped once into libx264. Odd sizes grow by one edge-replicated pixel on the right
/ bottom (:func:`encoded_size`). The file is written beside the destination and renamed into
place only after ffmpeg succeeded (:func:`ladtalk._util.atomic.atomic_path`).
"""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import ffmpeg
import numpy as np

from ladtalk._util.atomic import atomic_path
from ladtalk.errors import InputError, LadTalkError
from ladtalk.media.ffmpeg import PathLike, StderrDrain, compile_cmd, fps_arg, kill, widen_pipe
from ladtalk.media.probe import probe

#: Audio codecs that may be stream-copied into each output container (others -> AAC).
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
_COPY_OK = {
    ".mp4": MP4_AUDIO_COPY,
    ".m4v": MP4_AUDIO_COPY,
    ".mov": MP4_AUDIO_COPY | {"pcm_s16le", "pcm_s24le", "pcm_f32le"},
    ".mkv": None,  # Matroska takes any codec
}
AUDIO_MODES = ("copy-or-aac", "copy", "aac")


def encoded_size(width: int, height: int) -> Tuple[int, int]:
    """Output ``(width, height)`` of :class:`VideoWriter`: odd dimensions grow by one pixel
    (edge replication on the right / bottom), even ones are unchanged."""
    return (width + width % 2, height + height % 2)


def audio_copy_ok(codec: Optional[str], suffix: str) -> bool:
    """Whether ``codec`` can be stream-copied into a container with file ``suffix``."""
    if not codec:
        return False
    allowed = _COPY_OK.get(suffix.lower(), MP4_AUDIO_COPY)
    return True if allowed is None else codec in allowed


def encode_cmd(out: PathLike, size: Tuple[int, int], fps: Union[float, Fraction, str],
               audio: Optional[PathLike] = None, audio_opts: Optional[Dict[str, str]] = None,
               crf: int = 18, preset: str = "medium", faststart: bool = True,
               fmt: Optional[str] = None) -> List[str]:
    """ffmpeg command reading raw RGB frames of ``size`` from stdin and writing ``out``."""
    ow, oh = size
    video = ffmpeg.input("pipe:0", f="rawvideo", pix_fmt="rgb24", s=f"{ow}x{oh}",
                         framerate=fps_arg(fps))
    streams = [video.filter("scale", out_color_matrix="bt709", out_range="tv")
               .filter("format", "yuv420p")]
    if audio is not None:
        streams.append(ffmpeg.input(str(audio))["a:0"])
    opts = {"c:v": "libx264", "preset": preset, "crf": str(crf), "pix_fmt": "yuv420p",
            "colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709",
            "color_range": "tv", **(audio_opts or {})}
    if faststart:
        opts["movflags"] = "+faststart"
    if fmt:
        opts["f"] = fmt
    return compile_cmd(ffmpeg.output(*streams, str(out), **opts), overwrite=True)


class VideoWriter:
    """Encode RGB frames to H.264 (libx264, yuv420p) and optionally mux an audio track.

    ``size`` is the ``(width, height)`` of the frames you write. ``audio``: any file with an
    audio stream; ``audio_mode``: ``"copy-or-aac"`` (copy when the container takes the codec,
    else AAC), ``"copy"`` (copy or raise) or ``"aac"``. There is no ``-shortest``: the caller
    decides the length. Use as a context manager; the file appears only on success.
    """

    def __init__(self, path: PathLike, fps: Union[float, Fraction, str],
                 size: Tuple[int, int], audio: Optional[PathLike] = None,
                 audio_mode: str = "copy-or-aac", crf: int = 18, preset: str = "medium",
                 audio_bitrate: str = "192k"):
        if audio_mode not in AUDIO_MODES:
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
        self.frames_written = 0
        self.audio_copied: Optional[bool] = None
        self._proc: Optional[subprocess.Popen] = None
        self._drain: Optional[StderrDrain] = None
        self._files: Optional[ExitStack] = None  # holds the atomic temp file while open
        self._pad_buf: Optional[np.ndarray] = None

    # -- lifecycle
    def _audio_opts(self) -> Dict[str, str]:
        if self.audio is None:
            return {}
        ainfo = probe(self.audio, require_video=False)
        if not ainfo.has_audio:
            raise InputError(f"{self.audio} has no audio stream to mux")
        copy_ok = audio_copy_ok(ainfo.audio_codec, self.path.suffix)
        if self.audio_mode == "copy" and not copy_ok:
            raise InputError(f"audio codec {ainfo.audio_codec} of {self.audio} cannot be copied "
                             f"into {self.path.suffix or 'this container'}; use audio_mode='aac'")
        self.audio_copied = copy_ok and self.audio_mode != "aac"
        if self.audio_copied:
            return {"c:a": "copy"}
        return {"c:a": "aac", "b:a": self.audio_bitrate}

    def _cmd(self, tmp: Path, audio_opts: Dict[str, str]) -> List[str]:
        suffix = self.path.suffix.lower()
        return encode_cmd(tmp, self.out_size, self.fps, self.audio, audio_opts, self.crf,
                          self.preset, faststart=suffix in (".mp4", ".m4v", ".mov", ""),
                          fmt=None if suffix else "mp4")

    def open(self) -> "VideoWriter":
        if self._proc is not None:
            raise RuntimeError("VideoWriter is already open")
        dest_dir = self.path.parent if str(self.path.parent) else Path(".")
        if not dest_dir.is_dir():
            raise InputError(f"output folder does not exist: {dest_dir}")
        audio_opts = self._audio_opts()
        self._files = ExitStack()
        tmp = self._files.enter_context(atomic_path(self.path, self.path.suffix or ".mp4"))
        try:
            self._proc = subprocess.Popen(self._cmd(tmp, audio_opts), stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          bufsize=0)
        except BaseException:
            self._discard()
            raise
        widen_pipe(self._proc.stdin)
        self._drain = StderrDrain(self._proc.stderr)
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
            files, self._files = self._files, None
            files.close()  # atomic_path renames the temp file onto the destination
            return self.path
        except BaseException:
            self._cleanup(proc)
            raise

    def abort(self) -> None:
        """Stop encoding and delete the partial output (destination untouched)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            self._cleanup(proc)

    def _discard(self) -> None:
        """Delete the temp file without touching the destination."""
        files, self._files = self._files, None
        if files is not None:
            err = LadTalkError(f"encoding {self.path} was abandoned")
            files.__exit__(LadTalkError, err, None)  # atomic_path skips the rename

    def _cleanup(self, proc: subprocess.Popen) -> None:
        kill(proc)
        if self._drain is not None:
            self._drain.join()
        self._discard()

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
