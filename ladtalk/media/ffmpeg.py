"""The one ffmpeg binary (imageio-ffmpeg's), command building, and child-process helpers.

Command lines are built as ffmpeg-python graphs and compiled against :func:`ffmpeg_exe`;
see docs/media.md for why and for the conventions every command follows.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Deque, List, Union

from ladtalk.errors import InputError, LadTalkError

PathLike = Union[str, os.PathLike]

#: Global options of every command: no banner, no stdin, no progress, errors only.
QUIET = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error")


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio-ffmpeg`` (no system ffmpeg needed)."""
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # ImportError or "could not find ffmpeg"
        raise LadTalkError(f"cannot find the ffmpeg binary from imageio-ffmpeg ({exc}); "
                           "reinstall it with `pip install --force-reinstall imageio-ffmpeg`"
                           ) from exc


def compile_cmd(stream, *global_args: str, overwrite: bool = False) -> List[str]:
    """Argument list of an ffmpeg-python output ``stream`` for the bundled binary."""
    return stream.global_args(*QUIET, *global_args).compile(cmd=ffmpeg_exe(),
                                                             overwrite_output=overwrite)


def info_cmd(path: PathLike) -> List[str]:
    """``ffmpeg -i FILE`` without an output: prints the stream summary on stderr.

    ffmpeg-python cannot express a command without an output, so this one is a plain list.
    """
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]


def input_file(path: PathLike, what: str = "input file", expected: str = "a media file") -> Path:
    """``path`` as a :class:`Path`; :class:`InputError` when missing, not a file, or empty."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} '{p}' does not exist; check the path")
    if not p.is_file():
        raise InputError(f"'{p}' is not a file (expected {expected})")
    if p.stat().st_size == 0:
        raise InputError(f"{what} '{p}' is empty (0 bytes); re-export or re-download it")
    return p


def fps_arg(fps: Union[float, Fraction, str]) -> str:
    """Frame rate as an exact ffmpeg rational string ('30000/1001', '25/1')."""
    if isinstance(fps, str):
        fps = Fraction(fps)
    frac = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    if frac <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return f"{frac.numerator}/{frac.denominator}"


def last_error_line(text: str) -> str:
    """The last meaningful line of ffmpeg's stderr (its actual complaint)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()
             and not ln.startswith("At least one output file")]
    return lines[-1] if lines else "ffmpeg gave no details"


class StderrDrain:
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


def read_exact(stream, buf: memoryview) -> int:
    """Fill ``buf`` from ``stream``; returns bytes read (< len(buf) only at end of stream)."""
    got = 0
    n = len(buf)
    while got < n:
        k = stream.readinto(buf[got:])
        if not k:
            break
        got += k
    return got


#: pipe buffer for raw frames (Linux ``F_SETPIPE_SZ``; 1 MiB is the unprivileged maximum):
#: a 844x844 RGB frame crosses the default 64 KiB pipe in 33 pieces, each a wake-up of the
#: other side (a 5 s 844x844 clip: a third of the context switches, 0.2-0.3 s faster on 2
#: cores, docs/performance.md)
FRAME_PIPE_BYTES = 1 << 20


def widen_pipe(stream, size: int = FRAME_PIPE_BYTES) -> None:
    """Grow the kernel buffer of a pipe to ``size`` bytes where the OS allows it (else it
    stays as it is: only speed depends on it)."""
    try:
        import fcntl
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), int(size))
    except (ImportError, OSError, ValueError, AttributeError):
        pass


def kill(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if still running, reap it and close its pipes."""
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
