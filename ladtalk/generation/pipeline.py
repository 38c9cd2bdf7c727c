"""Generation: a face video or photo + speech -> a lip-synced (and identity-restored) video.

Library use (the CLI ``python -m ladtalk generate`` and the Gradio app are thin wrappers)::

    pipe = Pipeline(device="cpu")                 # models load once, on first use
    res = pipe.run("face.mp4", "speech.wav", "out.mp4",
                   GenerateOptions(identity="alice"))   # identity=None: Wav2Lip only
    print(res.duration, res.warnings, res.timings)

Stages
------
1. **Audio**: decode to 16 kHz mono, reject silence / too-short clips, Wav2Lip mel. The output
   has ``n_out = round(audio seconds x fps)`` frames (:func:`ladtalk.media.audio.num_video_frames`),
   so it lasts as long as the audio to the frame; the audio is muxed unchanged (stream copy
   when the output container takes its codec, else AAC).
2. **Pass 1, detection** (skipped for ``--box`` videos): the source is decoded at the output
   frame rate (``-vf fps``, which also regularises variable-frame-rate input), faces are
   detected on downscaled frames, and only the boxes are kept; they are gap-filled and
   smoothed (:func:`ladtalk.face.track_faces`). A video without any face is an error here,
   before any model work; frames without a face are reported with their timestamps and later
   pass through unchanged.
3. **Pass 2, generation**, streamed in chunks of ``batch_size`` frames through three threads
   joined by bounded queues: decode (producer, :class:`ladtalk.media.framesource.LoopedSource`, which
   applies the loop policy of :mod:`ladtalk.media.timing`) -> models (``workers`` threads that take
   consecutive chunks, results written in order: square crop at 96 px, Wav2Lip, optionally
   bicubic upsampling to the identity's resolution and SOVQAE restoration, colour-matched
   feathered lower-face paste, :mod:`ladtalk.generation.blend`) -> encode (consumer,
   :class:`ladtalk.media.video.VideoWriter`, frames piped into ffmpeg once). Peak memory is a few
   chunks, independent of the video and audio length.

Files: every call works in its own ``tempfile.TemporaryDirectory`` (removed afterwards, also on
error); the output is written to a temp file beside ``out`` and moved into place only when
encoding succeeded, so a failed run never leaves a half-written file and never replaces an
existing one. One :class:`Pipeline` may serve several calls at once from different threads.

Enhancement policy: :class:`GenerateOptions` ``identity=None`` means Wav2Lip only (the
``--no-enhance`` baseline, same crop and blending) and is logged as such; the CLI requires
``--identity`` or ``--no-enhance`` explicitly so that nobody gets the baseline by accident.
With an identity, the input's face is first checked against it (after detection, before
pass 2; :mod:`ladtalk.generation.identity_match`): ``GenerateOptions.identity_check`` "refuse" (default;
the app) raises :class:`InputError` when the identity belongs to someone else, "warn" (the
CLI's default) adds the message to ``warnings``, "off" skips the check.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig, CropRegion, crop_faces, face_region
from ladtalk.generation.blend import BlendConfig, blend_face
from ladtalk.media.audio import (
    SAMPLE_RATE,
    check_has_speech,
    load_audio,
    mel_chunk_starts,
    mel_windows,
    melspectrogram,
    num_video_frames,
)
from ladtalk.media.framesource import LoopedSource, decode_chunks
from ladtalk.media.timing import check_policy
from ladtalk.media.video import MediaInfo, VideoWriter, probe

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
#: progress(stage, done, total): stage is "audio", "detect", "load" or "generate"
ProgressFn = Callable[[str, int, int], None]

WAV2LIP_SIZE = 96
DEFAULT_BATCH_SIZE = 16
STILL_FPS = 25.0
QUEUE_DEPTH = 1  # chunks waiting between two stages (bounded memory)


@dataclass
class GenerateOptions:
    """Per-call settings (CLI flags in brackets).

    ``identity``: enrolled identity name or directory [--identity]; ``None`` = Wav2Lip only
    [--no-enhance]. ``detector``: "auto" (S3FD when its weights resolve, else dlib), "s3fd",
    "dlib" [--detector]. ``box``: fixed face box ``(y1, y2, x1, x2)`` in source pixels, which
    skips detection [--box]. ``pads``: ``(top, bottom, left, right)`` pixels added to the box
    before the square crop [--pads]. ``smooth``: temporal box smoothing [--no-smooth].
    ``resize_factor``: downscale the video by this integer first; the output is that small
    too, and ``box``/``pads`` stay in source pixels [--resize-factor]. ``fps``: output frame
    rate (default: the video's, 25 for a photo) [--fps]. ``loop``: "pingpong", "loop" or
    "hold" when the audio outlasts the video [--loop]. ``batch_size``: frames per chunk and per
    model batch (default: the pipeline's) [--batch-size]. ``crf``/``preset``: libx264 settings.
    ``audio_mode``: "copy-or-aac", "copy" or "aac" (see :class:`ladtalk.media.video.VideoWriter`).
    """

    identity: Optional[Union[str, os.PathLike]] = None
    detector: str = "auto"
    box: Optional[Sequence[float]] = None
    pads: Tuple[int, int, int, int] = (0, 10, 0, 0)
    smooth: bool = True
    resize_factor: int = 1
    fps: Optional[float] = None
    loop: str = "pingpong"
    batch_size: Optional[int] = None
    crf: int = 18
    preset: str = "veryfast"
    audio_mode: str = "copy-or-aac"
    blend: BlendConfig = field(default_factory=BlendConfig)
    temp_dir: Optional[Union[str, os.PathLike]] = None  # parent of the per-call temp dir
    #: "refuse" / "warn" / "off": does the identity reconstruct this input's face as well as
    #: its own (:mod:`ladtalk.generation.identity_match`)? [--identity-check; CLI default "warn"]
    identity_check: str = "refuse"
    #: fusion strengths ``S`` or ``(LOW, HIGH)`` instead of the identity's calibrated ones
    #: (:mod:`ladtalk.generation.fusion`; 1 = plain SOVQAE decode, 0 = Wav2Lip unchanged) [--restore-strength]
    restore_strength: Optional[Union[str, float, Sequence[float]]] = None

    def validate(self) -> "GenerateOptions":
        try:
            self.loop = check_policy(self.loop)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        from ladtalk.generation.identity_match import check_mode
        self.identity_check = check_mode(self.identity_check)
        from ladtalk.generation.fusion import parse_strength
        try:
            self.restore_strength = parse_strength(self.restore_strength)
        except ValueError as exc:
            raise InputError(f"--restore-strength: {exc}") from None
        if not isinstance(self.resize_factor, (int, np.integer)) or self.resize_factor < 1:
            raise InputError(f"--resize-factor must be a whole number >= 1, got "
                             f"{self.resize_factor!r}")
        if self.fps is not None and not (np.isfinite(self.fps) and 0 < self.fps <= 240):
            raise InputError(f"--fps must be between 0 and 240, got {self.fps}")
        if self.batch_size is not None and (not isinstance(self.batch_size, (int, np.integer))
                                            or self.batch_size < 1):
            raise InputError(f"--batch-size must be a positive whole number, got "
                             f"{self.batch_size!r}")
        if len(tuple(self.pads)) != 4:
            raise InputError(f"--pads needs 4 numbers TOP BOTTOM LEFT RIGHT, got {self.pads}")
        if self.box is not None and len(tuple(self.box)) != 4:
            raise InputError(f"--box needs 4 numbers Y1 Y2 X1 X2, got {list(self.box)}")
        return self


@dataclass
class GenerateResult:
    """What a :meth:`Pipeline.run` call produced.

    ``missing_face_timestamps`` are source-video times (seconds) of frames without a face;
    ``passthrough_frames`` counts output frames written unchanged because of that.
    ``precision`` is the models' arithmetic. ``timings`` holds seconds per stage
    ("audio", "detect", "load", "decode", "lipsync", "restore", "blend", "encode", "total");
    decode / models / encode overlap, so their sum exceeds "total".
    """

    out: Path
    n_frames: int
    fps: float
    duration: float
    audio_duration: float
    size: Tuple[int, int]
    enhanced: bool
    identity: Optional[str]
    n_source_frames: Optional[int]
    missing_face_timestamps: List[float]
    passthrough_frames: int
    audio_copied: Optional[bool]
    warnings: List[str]
    timings: Dict[str, float]
    precision: str = "fp32"  # the models' arithmetic ("fp32", "bf16", "fp16")
    #: :class:`ladtalk.generation.identity_match.IdentityMatch` of the identity on this input (None:
    #: Wav2Lip only or ``identity_check="off"``)
    identity_match: Optional[Any] = None
    #: the fusion strengths the restoration used (``FusionConfig.to_dict()``; None: plain
    #: decode or Wav2Lip only)
    fusion: Optional[Dict[str, Any]] = None

    def stage_fps(self) -> Dict[str, float]:
        """Frames per second of each stage (output frames / stage seconds)."""
        out = {}
        for k, v in self.timings.items():
            n = self.n_source_frames if k == "detect" else self.n_frames
            if v > 0 and n:
                out[k] = n / v
        return out


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


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


class Pipeline:
    """Holds the models (loaded once, lazily) and runs generation calls.

    ``wav2lip``: ``None`` (the default checkpoint, ``$LADTALK_WAV2LIP`` or the Hub file), a
    checkpoint reference / path, a :class:`ladtalk.models.wav2lip.Wav2Lip` module, or a ready
    :class:`ladtalk.generation.lipsync.LipSyncer`. ``detector``: a detector object to use for every call
    (tests, custom detectors); by default one is built per ``GenerateOptions.detector`` name
    and cached. ``restorer``: an object with ``resolution`` and ``restore(crops)`` used for
    every enhanced call instead of loading ``GenerateOptions.identity`` (tests, custom
    models). Identities are loaded on first use and cached by directory.

    ``dtype``: the models' precision (:func:`ladtalk._util.device.resolve_dtype`). The default
    "auto" runs Wav2Lip and the SOVQAE under bf16 autocast on a CPU with native bf16
    (AVX512-BF16 / AMX: about 2x the fp32 speed; outputs move by well under one grey level
    on average, see ``docs/performance.md``) and fp16 autocast on CUDA; "fp32" keeps
    upstream's exact arithmetic. (Robustness and enrollment metrics use fp32 on CPU.)

    ``workers``: model threads that process consecutive chunks in parallel (output order is
    kept). Default: 2 on CPU, each with half of torch's intra-op threads, 1 on CUDA. On a
    2-core CPU that is two single-threaded workers: both cores stay busy without the
    OpenMP barrier waits of one 2-thread convolution, which stalls whenever ffmpeg or
    another process takes one of the cores. ``torch.set_num_threads`` is called in the
    worker threads only; the default that later threads inherit is put back afterwards.
    """

    def __init__(self, wav2lip: Any = None, *, device: Any = None, dtype: Any = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, detector: Any = None,
                 restorer: Any = None, workers: Optional[int] = None):
        from ladtalk._util.device import resolve_device
        self.device = resolve_device(device)
        self.dtype = dtype
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch size must be a positive whole number, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self._wav2lip_spec = wav2lip
        self._lipsync = None
        self._detector = detector
        self._detectors: Dict[str, Any] = {}
        self._restorer = restorer
        self._restorers: Dict[Tuple[str, float], Any] = {}
        if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
            raise InputError(f"workers must be a positive whole number, got {workers!r}")
        self.workers = workers
        self._lock = threading.RLock()

    def _worker_plan(self) -> Tuple[int, int]:
        """``(model threads, intra-op threads each)`` for a run (see the class doc)."""
        import torch
        total = max(1, torch.get_num_threads())
        if self.workers is not None:
            n = int(self.workers)
        else:
            n = 1 if self.device.type != "cpu" or total < 2 else 2
        return n, max(1, total // n)

    # ------------------------------------------------------------------ models
    @property
    def lipsyncer(self):
        """The :class:`ladtalk.generation.lipsync.LipSyncer` (loaded on first access)."""
        with self._lock:
            if self._lipsync is None:
                self._lipsync = self._load_lipsyncer(self._wav2lip_spec)
                self._wav2lip_spec = None  # the caller's module is not kept alive twice
            return self._lipsync

    def _load_lipsyncer(self, spec: Any):
        import torch

        from ladtalk.generation.lipsync import LipSyncer
        injected = isinstance(spec, (LipSyncer, torch.nn.Module))
        if isinstance(spec, LipSyncer):
            syncer = spec
        elif isinstance(spec, torch.nn.Module):
            syncer = LipSyncer(spec, device=self.device, dtype=self.dtype,
                               batch_size=self.batch_size)
        else:
            syncer = LipSyncer.from_checkpoint("wav2lip" if spec is None else spec,
                                               device=self.device, dtype=self.dtype,
                                               batch_size=self.batch_size)
        # inference-only speed-ups (outputs equal up to float rounding): BatchNorm folded
        # into the convolutions (~15% less CPU), and NHWC convolutions on CPU (~2x faster)
        from ladtalk.models.fuse import fold_batchnorm
        syncer.model = fold_batchnorm(syncer.model, copy_model=injected)
        if syncer.device.type == "cpu":
            syncer.use_channels_last(True)
        return syncer

    def detector_for(self, options: GenerateOptions, frame_size: Tuple[int, int]):
        """The detector a call uses: the injected one, a fixed box, or a cached named one."""
        if options.box is not None:
            from ladtalk.face.detect import FixedBoxDetector
            k = float(options.resize_factor)
            y1, y2, x1, x2 = (float(v) / k for v in options.box)
            det = FixedBoxDetector((y1, y2, x1, x2))
            w, h = frame_size
            det.detect(np.zeros((1, h, w, 3), np.uint8))  # raises if the box is off-frame
            return det
        if self._detector is not None:
            return self._detector
        from ladtalk.face.detect import make_detector
        name = (options.detector or "auto").lower()
        with self._lock:
            if name not in self._detectors:
                self._detectors[name] = make_detector(name, device=self.device)
            return self._detectors[name]

    def restorer_for(self, identity: Optional[Union[str, os.PathLike]]):
        """``(restorer, identity directory)`` for an identity name / directory, or
        ``(None, None)`` for Wav2Lip-only output."""
        if identity is None:
            return None, None
        if self._restorer is not None:
            return self._restorer, str(identity)
        from ladtalk.identities.store import resolve_identity
        path = resolve_identity(identity)
        weights = path / "model.safetensors"
        key = (str(path.resolve()), weights.stat().st_mtime)
        with self._lock:
            if key not in self._restorers:
                from ladtalk.generation.restore import Restorer
                self._restorers = {k: v for k, v in self._restorers.items() if k[0] != key[0]}
                self._restorers[key] = Restorer.from_identity(
                    path, device=self.device, precision=self.dtype)
            return self._restorers[key], str(path)

    # ------------------------------------------------------------------ run
    def run(self, face: PathLike, audio: PathLike, out: PathLike,
            options: Optional[GenerateOptions] = None,
            progress: Optional[ProgressFn] = None) -> GenerateResult:
        """Generate ``out`` from ``face`` (video or photo) and ``audio``; see the module doc.

        Raises :class:`ladtalk.errors.InputError` (bad input, with the file / frame / time and
        the fix) or :class:`ladtalk.errors.CheckpointError` (missing / wrong weights).
        """
        opts = (options or GenerateOptions()).validate()
        report = progress or (lambda stage, done, total: None)
        t_start = time.perf_counter()
        timings: Dict[str, float] = {}
        warnings: List[str] = []

        def warn(msg: str) -> None:
            warnings.append(msg)
            log.warning("%s", msg)

        face, audio, out = Path(face), Path(audio), Path(out)
        _check_output(out, face, audio)

        # -- audio
        t0 = time.perf_counter()
        wav = load_audio(audio, SAMPLE_RATE)
        check_has_speech(wav, SAMPLE_RATE, audio)
        n_samples = len(wav)
        audio_seconds = n_samples / SAMPLE_RATE
        mel = melspectrogram(wav)
        del wav
        timings["audio"] = time.perf_counter() - t0
        report("audio", 1, 1)

        # -- source
        info = probe(face)
        if not info.has_video:
            raise InputError(f"{face} has no picture; pass a video or an image with a face")
        fps = float(opts.fps or (STILL_FPS if info.is_image else (info.fps or STILL_FPS)))
        n_out = num_video_frames(n_samples, SAMPLE_RATE, fps)
        starts = mel_chunk_starts(mel.shape[1], fps, n_out)
        k = int(opts.resize_factor)
        size = (max(1, info.width // k), max(1, info.height // k))
        resize = None if k == 1 else size
        bs = int(opts.batch_size or self.batch_size)
        detector = self.detector_for(opts, size)
        crop_cfg = CropConfig(pads=tuple(int(p) for p in opts.pads))
        if info.maybe_vfr and opts.fps is None:
            log.info("%s looks like variable frame rate; resampling it to a constant %.3f fps",
                     face, fps)

        # -- pass 1: detection (boxes only)
        from ladtalk.face.detect import FixedBoxDetector
        t0 = time.perf_counter()
        boxes: Optional[np.ndarray] = None
        fixed: Optional[np.ndarray] = None
        missing_ts: List[float] = []
        n_src_known: Optional[int] = None
        if isinstance(detector, FixedBoxDetector):
            fixed = detector.detect(np.zeros((1, size[1], size[0], 3), np.uint8))[0][0, :4]
            if info.is_image:
                n_src_known = 1
        else:
            from ladtalk.face.track import track_faces
            total = 1 if info.is_image else max(1, int(round(info.duration * fps)))
            track = track_faces(decode_chunks(info, fps, bs, resize), detector, fps,
                                smooth=opts.smooth, chunk_size=bs,
                                progress=lambda n: report("detect", n, max(n, total)))
            track.require_face(source=str(face))
            boxes = track.boxes
            n_src_known = len(track)
            missing_ts = track.missing_timestamps
            msg = track.report(source=str(face))
            if msg:
                warn(msg)
        timings["detect"] = time.perf_counter() - t0

        # -- models (after every input check)
        t0 = time.perf_counter()
        report("load", 0, 1)
        syncer = self.lipsyncer
        restorer, identity_dir = self.restorer_for(opts.identity)
        if restorer is None:
            log.info("no identity given: writing the Wav2Lip-only result (as --no-enhance)")
        res = int(restorer.resolution) if restorer is not None else 0
        from ladtalk._util.device import precision_name
        precision = precision_name(syncer.dtype)
        timings["load"] = time.perf_counter() - t0
        report("load", 1, 1)
        identity_match = None
        if restorer is not None and opts.identity_check != "off":
            # never one person's identity on another's face: refuse / warn before pass 2
            from ladtalk.generation.identity_match import run_identity_check
            t0 = time.perf_counter()
            identity_match = run_identity_check(
                restorer, identity_dir, opts.identity_check, info=info, fps=fps,
                frame_size=size, boxes=boxes, fixed=fixed, crop_cfg=crop_cfg, resize=resize,
                source=str(face), warn=warn, chunk_size=bs)
            timings["identity_check"] = time.perf_counter() - t0

        fusion_kw = {}
        if restorer is not None and opts.restore_strength is not None:
            from dataclasses import replace as _replace

            from ladtalk.generation.fusion import FusionConfig
            base = getattr(restorer, "fusion", None) or FusionConfig()
            fusion_kw["fusion"] = _replace(base, low_strength=opts.restore_strength[0],
                                           high_strength=opts.restore_strength[1])
        fusion_used = fusion_kw.get("fusion", getattr(restorer, "fusion", None))
        # strength 0 for both bands is Wav2Lip's face: paste it directly (no resampling detour)
        restore_on = restorer is not None and not getattr(fusion_used, "identity_off", False)

        # -- pass 2: decode -> models -> encode
        stage = {"lipsync": 0.0, "restore": 0.0, "blend": 0.0, "encode": 0.0}
        stage_lock = threading.Lock()
        passthrough = 0

        def spent(name: str, since: float) -> None:
            with stage_lock:
                stage[name] += time.perf_counter() - since

        def box_of(s: int) -> Optional[np.ndarray]:
            if fixed is not None:
                return fixed
            if boxes is None or s >= len(boxes) or np.isnan(boxes[s]).any():
                return None
            return boxes[s]

        def process(frames: np.ndarray, src: np.ndarray, t_first: int) -> int:
            regions: List[CropRegion] = []
            sel: List[int] = []
            for i, s in enumerate(src):
                b = box_of(int(s))
                if b is None:
                    continue
                try:
                    regions.append(face_region(b, size, crop_cfg))
                except ValueError:
                    continue
                sel.append(i)
            if not sel:
                return len(frames)
            ta = time.perf_counter()
            chosen = frames[sel]
            crops = crop_faces(chosen, regions, WAV2LIP_SIZE)
            spent("blend", ta)
            ta = time.perf_counter()
            mels = mel_windows(mel, starts[t_first + np.asarray(sel)])
            gen = syncer(crops, mels)
            spent("lipsync", ta)
            originals = crops
            if restore_on:
                import cv2
                ta = time.perf_counter()
                up = np.stack([cv2.resize(g, (res, res), interpolation=cv2.INTER_CUBIC)
                               for g in gen])
                gen = np.asarray(restorer.restore(up, **fusion_kw), dtype=np.uint8)
                spent("restore", ta)
                ta = time.perf_counter()
                originals = crop_faces(chosen, regions, res)
                spent("blend", ta)
            ta = time.perf_counter()
            for j, i in enumerate(sel):
                blend_face(frames[i], gen[j], regions[j], originals[j], opts.blend)
            spent("blend", ta)
            return len(frames) - len(sel)

        with tempfile.TemporaryDirectory(prefix="ladtalk-gen-", dir=opts.temp_dir) as tmp:
            source = LoopedSource(info, fps, n_out, opts.loop, chunk_size=bs, temp_dir=tmp,
                                  n_src_hint=n_src_known or _estimate_frames(info, fps),
                                  resize=resize, warn=warn)
            writer = VideoWriter(out, fps, size, audio=audio, audio_mode=opts.audio_mode,
                                 crf=opts.crf, preset=opts.preset)
            stop = threading.Event()
            q_in: "queue.Queue" = queue.Queue(maxsize=QUEUE_DEPTH)
            q_out: "queue.Queue" = queue.Queue(maxsize=QUEUE_DEPTH)
            errors: List[BaseException] = []

            def produce() -> None:
                try:
                    with closing(source.frames()) as chunks:  # closing kills ffmpeg early
                        for item in chunks:
                            if not _put(q_in, item, stop):
                                return
                    _put(q_in, _END, stop)
                except BaseException as exc:  # handed to the main thread
                    _put(q_in, _Failure(exc), stop)

            def consume() -> None:
                try:
                    while True:
                        item = _get(q_out, stop)
                        if item is _END:
                            return
                        ta = time.perf_counter()
                        writer.write(item)
                        spent("encode", ta)
                except BaseException as exc:
                    errors.append(exc)
                    stop.set()

            producer = threading.Thread(target=produce, name="ladtalk-decode", daemon=True)
            consumer = threading.Thread(target=consume, name="ladtalk-encode", daemon=True)
            workers, intra = self._worker_plan()
            pool = _model_pool(workers, intra)
            pending: Deque[Tuple[np.ndarray, Future]] = deque()
            emitted = 0

            def emit() -> bool:
                nonlocal emitted, passthrough
                frames, fut = pending.popleft()
                passthrough += fut.result()  # re-raises a worker's exception
                emitted += len(frames)
                if not _put(q_out, frames, stop):
                    return False
                report("generate", emitted, n_out)
                return True

            t_gen = time.perf_counter()
            writer.open()
            try:
                producer.start()
                consumer.start()
                done = 0
                report("generate", 0, n_out)
                ok = True
                while ok:
                    item = _get(q_in, stop)
                    if item is _END:
                        break
                    if isinstance(item, _Failure):
                        raise item.exc
                    frames, src = item
                    # chunks are processed by `workers` model threads, written in order
                    pending.append((frames, pool.submit(process, frames, src, done)))
                    done += len(frames)
                    while ok and len(pending) >= workers:
                        ok = emit()
                while ok and pending:
                    ok = emit()
                if not errors and not stop.is_set():
                    _put(q_out, _END, stop)
                consumer.join()
                if errors:
                    raise errors[0]
                if emitted != n_out:
                    raise RuntimeError(f"internal error: produced {emitted} of {n_out} frames")
                ta = time.perf_counter()
                writer.close()
                spent("encode", ta)
            except BaseException:
                stop.set()
                writer.abort()
                raise
            finally:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                _restore_threads(workers, intra)
                producer.join(timeout=30)
                consumer.join(timeout=30)
                source.close()
            timings["generate"] = time.perf_counter() - t_gen
            timings["decode"] = source.decode_seconds
            n_src = source.n_src or n_src_known

        timings.update(stage)
        timings["total"] = time.perf_counter() - t_start
        if passthrough:
            log.info("%d of %d output frames had no face and were written unchanged",
                     passthrough, n_out)
        return GenerateResult(
            out=out, n_frames=n_out, fps=fps, duration=n_out / fps,
            audio_duration=audio_seconds, size=size, enhanced=restorer is not None,
            identity=identity_dir, n_source_frames=n_src,
            missing_face_timestamps=[float(t) for t in missing_ts],
            passthrough_frames=passthrough, audio_copied=writer.audio_copied,
            warnings=warnings, timings=timings,
            precision=precision, identity_match=identity_match,
            fusion=fusion_used.to_dict() if hasattr(fusion_used, "to_dict") else None)


def _model_pool(workers: int, intra: int) -> ThreadPoolExecutor:
    """Threads that run the per-chunk model work; each uses ``intra`` intra-op threads."""
    def init() -> None:
        if workers > 1:
            import torch
            torch.set_num_threads(intra)
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ladtalk-model",
                              initializer=init)


def _restore_threads(workers: int, intra: int) -> None:
    """``torch.set_num_threads`` in a worker also changes the default that threads started
    later inherit; put the caller's value back (the calling thread's own is unchanged)."""
    if workers > 1:
        import torch
        torch.set_num_threads(torch.get_num_threads())


def _estimate_frames(info: MediaInfo, fps: float) -> int:
    if info.is_image:
        return 1
    if info.duration:
        return max(1, int(round(info.duration * fps)))
    return max(1, int(info.n_frames))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(out: Path, face: Path, audio: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first or choose "
                         "another --out")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out / 'out.mp4'}")
    for src, what in ((face, "--face"), (audio, "--audio")):
        if _same_file(out, src):
            raise InputError(f"--out {out} is the same file as {what}; choose another output "
                             "name so the input is not overwritten")
