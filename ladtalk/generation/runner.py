"""The STREAMING RUNNER: decode -> model workers -> encode, overlapped, in bounded memory.

A decode thread fills a bounded queue with chunks, ``workers`` model threads process
consecutive chunks (results are written in order), and an encode thread pipes them into
ffmpeg. The first failure anywhere stops all three and is re-raised in the caller; the output
file appears only when encoding succeeded (:class:`ladtalk.media.encode.VideoWriter`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Deque, List, Optional, Tuple

import numpy as np

from ladtalk._util.device import loaded_torch
from ladtalk.generation.chunks import StageClock
from ladtalk.generation.inputs import SourcePlan
from ladtalk.generation.options import GenerateOptions
from ladtalk.media.encode import VideoWriter
from ladtalk.media.framesource import LoopedSource

QUEUE_DEPTH = 1  # chunks waiting between two stages (bounded memory)
#: process(frames, source indices, first output frame) -> frames left unchanged
ProcessFn = Callable[[np.ndarray, np.ndarray, int], int]
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _put(q: "queue.Queue", item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: "queue.Queue", stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _END


def model_pool(workers: int, intra: int) -> ThreadPoolExecutor:
    """Threads that run the per-chunk model work; each uses ``intra`` intra-op threads."""
    def init() -> None:
        torch = loaded_torch()  # (none: no torch threads to set)
        if workers > 1 and torch is not None:
            torch.set_num_threads(intra)
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ladtalk-model",
                              initializer=init)


def restore_threads(workers: int) -> None:
    """Put back the intra-op default that threads started later inherit (a worker's
    ``torch.set_num_threads`` changes it; the calling thread's own count is unchanged)."""
    torch = loaded_torch()
    if workers > 1 and torch is not None:
        torch.set_num_threads(torch.get_num_threads())


@dataclass
class StreamResult:
    """What the streaming pass did: frames left unchanged, source frames, stage seconds."""

    passthrough: int
    n_src: Optional[int]
    decode_seconds: float
    generate_seconds: float
    audio_copied: Optional[bool]


class StreamingRunner:
    """One streaming pass of ``source`` through ``process`` into ``writer``."""

    def __init__(self, source: LoopedSource, writer: VideoWriter, process: ProcessFn,
                 n_out: int, workers: int, intra: int, clock: StageClock,
                 report: Callable[[str, int, int], None]) -> None:
        self.source, self.writer, self.process = source, writer, process
        self.n_out, self.workers, self.intra = n_out, workers, intra
        self.clock, self.report = clock, report
        self.stop = threading.Event()
        self.q_in: "queue.Queue" = queue.Queue(maxsize=QUEUE_DEPTH)
        self.q_out: "queue.Queue" = queue.Queue(maxsize=QUEUE_DEPTH)
        self.errors: List[BaseException] = []
        self.pending: Deque[Tuple[np.ndarray, Future]] = deque()
        self.emitted = 0
        self.passthrough = 0

    def _produce(self) -> None:
        try:
            with closing(self.source.frames()) as chunks:  # closing kills ffmpeg early
                for item in chunks:
                    if not _put(self.q_in, item, self.stop):
                        return
            _put(self.q_in, _END, self.stop)
        except BaseException as exc:  # handed to the main thread
            _put(self.q_in, _Failure(exc), self.stop)

    def _consume(self) -> None:
        try:
            while True:
                item = _get(self.q_out, self.stop)
                if item is _END:
                    return
                with self.clock.time("encode"):
                    self.writer.write(item)
        except BaseException as exc:
            self.errors.append(exc)
            self.stop.set()

    def _emit(self) -> bool:
        frames, fut = self.pending.popleft()
        self.passthrough += fut.result()  # re-raises a worker's exception
        self.emitted += len(frames)
        if not _put(self.q_out, frames, self.stop):
            return False
        self.report("generate", self.emitted, self.n_out)
        return True

    def _feed(self, pool: ThreadPoolExecutor) -> None:
        """Hand decoded chunks to the model threads and finished ones to the encoder."""
        done, ok = 0, True
        self.report("generate", 0, self.n_out)
        while ok:
            item = _get(self.q_in, self.stop)
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.exc
            frames, src = item
            self.pending.append((frames, pool.submit(self.process, frames, src, done)))
            done += len(frames)
            while ok and len(self.pending) >= self.workers:
                ok = self._emit()
        while ok and self.pending:
            ok = self._emit()
        if not self.errors and not self.stop.is_set():
            _put(self.q_out, _END, self.stop)

    def run(self) -> StreamResult:
        producer = threading.Thread(target=self._produce, name="ladtalk-decode", daemon=True)
        consumer = threading.Thread(target=self._consume, name="ladtalk-encode", daemon=True)
        pool = model_pool(self.workers, self.intra)
        t0 = time.perf_counter()
        self.writer.open()
        try:
            producer.start()
            consumer.start()
            self._feed(pool)
            consumer.join()
            if self.errors:
                raise self.errors[0]
            if self.emitted != self.n_out:
                raise RuntimeError(f"internal error: produced {self.emitted} of {self.n_out} "
                                   "frames")
            with self.clock.time("encode"):
                self.writer.close()
        except BaseException:
            self.stop.set()
            self.writer.abort()
            raise
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            restore_threads(self.workers)
            producer.join(timeout=30)
            consumer.join(timeout=30)
            self.source.close()
        return StreamResult(passthrough=self.passthrough, n_src=self.source.n_src,
                            decode_seconds=self.source.decode_seconds,
                            generate_seconds=time.perf_counter() - t0,
                            audio_copied=self.writer.audio_copied)


def open_stream(plan: SourcePlan, opts: GenerateOptions, audio: Path, out: Path, temp_dir: Path,
                n_src_hint: int, warn: Callable[[str], None]
                ) -> Tuple[LoopedSource, VideoWriter]:
    """The looped frame source and the (not yet opened) writer of one run."""
    source = LoopedSource(plan.info, plan.fps, plan.n_out, opts.loop,
                          chunk_size=plan.chunk_size, temp_dir=temp_dir,
                          n_src_hint=n_src_hint, resize=plan.resize, warn=warn)
    writer = VideoWriter(out, plan.fps, plan.size, audio=audio, audio_mode=opts.audio_mode,
                         crf=opts.crf, preset=opts.preset)
    return source, writer


__all__ = ["StreamingRunner", "StreamResult", "open_stream", "model_pool", "restore_threads",
           "QUEUE_DEPTH"]
