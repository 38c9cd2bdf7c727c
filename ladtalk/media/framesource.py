"""Source frames in *output* order (:mod:`ladtalk.media.timing`), one chunk in memory.

:class:`LoopedSource` yields exactly ``n_out`` frames at the output rate: one sequential
decode, then (audio longer than the video) a re-decode per cycle (``loop``), the last frame
(``hold``) or frames read back from an on-disk cache (``pingpong``). See docs/media.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from ladtalk._util.choices import DEFAULT_LOOP
from ladtalk.errors import InputError
from ladtalk.media.decode import iter_frames, read_image
from ladtalk.media.probe import MediaInfo
from ladtalk.media.timing import check_policy, source_index

log = logging.getLogger(__name__)

#: free space left on the temp disk after the ping-pong cache is written
CACHE_DISK_RESERVE = 256 * 1024 * 1024


def resize_frames(chunk: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
    """Downsample a ``(n, H, W, 3)`` chunk to ``size = (w, h)`` (INTER_AREA); no-op if None."""
    if size is None or (chunk.shape[2], chunk.shape[1]) == tuple(size):
        return chunk
    import cv2
    w, h = size
    out = np.empty((chunk.shape[0], h, w, 3), dtype=np.uint8)
    for i in range(chunk.shape[0]):
        out[i] = cv2.resize(chunk[i], (w, h), interpolation=cv2.INTER_AREA)
    return out


def decode_chunks(info: MediaInfo, fps: float, chunk_size: int,
                  resize: Optional[Tuple[int, int]] = None) -> Iterator[np.ndarray]:
    """Decoded source frames at ``fps`` (a still image: its single frame), resized."""
    if info.is_image:
        yield resize_frames(read_image(info.path)[None], resize)
        return
    with closing(iter_frames(info.path, fps=fps, chunk_size=chunk_size, info=info)) as it:
        for chunk in it:
            yield resize_frames(chunk, resize)


class LoopedSource:
    """Source frames in output order, as ``(frames (b, h, w, 3), source_indices (b,))`` chunks.

    ``n_src_hint`` is the expected number of source frames (exact after a detection pass, an
    estimate otherwise); it only decides up front whether the ping-pong cache is written during
    the first leg. The true count is :attr:`n_src` once the first leg has ended (``None``
    before, when the audio is shorter than the video it is never known).
    ``decode_seconds`` accumulates the time spent decoding / reading frames.
    """

    def __init__(self, info: MediaInfo, fps: float, n_out: int, policy: str = DEFAULT_LOOP,
                 chunk_size: int = 16, temp_dir: Optional[os.PathLike] = None,
                 n_src_hint: Optional[int] = None, resize: Optional[Tuple[int, int]] = None,
                 warn: Optional[Callable[[str], None]] = None):
        if n_out < 1:
            raise ValueError(f"n_out must be >= 1, got {n_out}")
        self.info = info
        self.fps = float(fps)
        self.n_out = int(n_out)
        self.policy = check_policy(policy)
        self.chunk_size = max(1, int(chunk_size))
        self.temp_dir = Path(temp_dir) if temp_dir is not None else None
        self.resize = resize
        self.n_src: Optional[int] = 1 if info.is_image else None
        self.decode_seconds = 0.0
        self.cache_path: Optional[Path] = None
        self._warn = warn or (lambda msg: log.warning("%s", msg))
        self._fd: Optional[int] = None
        self._frame_shape: Optional[Tuple[int, int, int]] = None
        hint = n_src_hint if n_src_hint is not None else info.n_frames
        # the cache is written during the first leg only when the estimate says the audio
        # outlasts the video: dubbing a clip with speech of its own length (the usual case)
        # then writes no copy of every frame (0.3-0.6 s of a 5 s 844x844 clip on 2 cores); an
        # estimate that falls short costs one more decode when the first leg ends
        self._want_cache = (self.policy == "pingpong" and not info.is_image
                            and self.n_out > max(1, int(hint or 0)))

    # ------------------------------------------------------------------ cache
    def _open_cache(self, frame_bytes: int) -> bool:
        if self.temp_dir is None:
            return False
        need = frame_bytes * max(self.info.n_frames, 1) + CACHE_DISK_RESERVE
        free = shutil.disk_usage(self.temp_dir).free
        if free < need:
            self._warn(f"not enough free space in {self.temp_dir} for the ping-pong frame cache "
                       f"(about {need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free); "
                       "looping forwards instead (--loop loop). Set TMPDIR to a larger disk "
                       "to keep ping-pong")
            self.policy = "loop"
            return False
        self.cache_path = self.temp_dir / "source-frames.rgb"
        self._fd = os.open(self.cache_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        return True

    def _cache_write(self, frames: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(frames).reshape(-1))
        while len(view):
            n = os.write(self._fd, view)
            view = view[n:]

    def _cache_read(self, index: int, out: np.ndarray) -> None:
        nbytes = out.nbytes
        data = os.pread(self._fd, nbytes, index * nbytes)
        if len(data) != nbytes:
            raise InputError(f"frame cache in {self.temp_dir} is truncated at frame {index} "
                             "(disk full?); free some space or use --loop loop")
        out.reshape(-1)[:] = np.frombuffer(data, dtype=np.uint8)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.cache_path is not None:
            try:
                self.cache_path.unlink()
            except FileNotFoundError:
                pass
            self.cache_path = None

    def __enter__(self) -> "LoopedSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ iteration
    def _timed(self, it: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        while True:
            t0 = time.perf_counter()
            try:
                chunk = next(it)
            except StopIteration:
                self.decode_seconds += time.perf_counter() - t0
                return
            self.decode_seconds += time.perf_counter() - t0
            yield chunk

    def _decoded(self) -> Iterator[np.ndarray]:
        return self._timed(decode_chunks(self.info, self.fps, self.chunk_size, self.resize))

    def frames(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Yield ``(frames, source_indices)`` chunks covering output frames ``0 .. n_out-1``."""
        buf: List[np.ndarray] = []
        idx: List[int] = []
        t = 0

        def flush():
            out = (np.stack(buf) if len(buf) > 1 else buf[0][None].copy(),
                   np.asarray(idx, dtype=np.int64))
            buf.clear()
            idx.clear()
            return out

        # first leg: sequential decode, optionally filling the ping-pong cache
        last: Optional[np.ndarray] = None
        caching = False
        with closing(self._decoded()) as it:
            for chunk in it:
                if self._frame_shape is None:
                    self._frame_shape = tuple(chunk.shape[1:])
                    if self._want_cache:
                        caching = self._open_cache(int(np.prod(self._frame_shape)))
                take = min(len(chunk), self.n_out - t)
                if caching:
                    t0 = time.perf_counter()
                    self._cache_write(chunk[:take])
                    self.decode_seconds += time.perf_counter() - t0
                if not buf and take == self.chunk_size:
                    # a whole decoded chunk is a fresh array already: handed out as it is
                    # (no copy), keeping a copy of its last frame, which the caller may change
                    last = chunk[take - 1].copy()
                    yield chunk[:take], np.arange(t, t + take, dtype=np.int64)
                    t += take
                    if t >= self.n_out:
                        break
                    continue
                for i in range(take):
                    buf.append(chunk[i])
                    idx.append(t)
                    t += 1
                    if len(buf) == self.chunk_size:
                        yield flush()
                last = chunk[take - 1] if take else last
                if t >= self.n_out:
                    break
            else:
                self.n_src = t
        if last is None:
            raise InputError(f"no frames could be decoded from {self.info.path}")
        if t < self.n_out:
            n_src = self.n_src or t
            if self.policy == "pingpong" and n_src > 1 and not caching:
                # the estimate said no cache was needed; build it now (one extra decode)
                self._build_cache()
            yield from self._later_legs(t, n_src, last, buf, idx, flush)
        elif buf:
            yield flush()

    def _build_cache(self) -> None:
        assert self._frame_shape is not None
        if not self._open_cache(int(np.prod(self._frame_shape))):
            return
        with closing(self._decoded()) as it:
            for chunk in it:
                t0 = time.perf_counter()
                self._cache_write(chunk)
                self.decode_seconds += time.perf_counter() - t0

    def _later_legs(self, t: int, n_src: int, last: np.ndarray, buf, idx, flush):
        policy = self.policy if n_src > 1 else "hold"
        if policy == "loop":
            while t < self.n_out:
                with closing(self._decoded()) as it:
                    for chunk in it:
                        for frame in chunk:
                            buf.append(frame)
                            idx.append(source_index(t, n_src, "loop"))
                            t += 1
                            if len(buf) == self.chunk_size:
                                yield flush()
                            if t >= self.n_out:
                                break
                        if t >= self.n_out:
                            break
            if buf:
                yield flush()
            return
        while t < self.n_out:
            s = source_index(t, n_src, policy)
            if policy == "hold":
                frame = last.copy()
            else:
                frame = np.empty(self._frame_shape, dtype=np.uint8)
                t0 = time.perf_counter()
                self._cache_read(s, frame)
                self.decode_seconds += time.perf_counter() - t0
            buf.append(frame)
            idx.append(s)
            t += 1
            if len(buf) == self.chunk_size:
                yield flush()
        if buf:
            yield flush()
