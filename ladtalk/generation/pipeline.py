"""Generation: a face video or photo + speech -> a lip-synced (and identity-restored) video.

Library use (the CLI ``python -m ladtalk generate`` and the app are thin wrappers)::

    pipe = Pipeline(device="cpu")                 # models load once, on first use
    res = pipe.run("face.mp4", "speech.wav", "out.mp4", GenerateOptions(identity="alice"))
    base = pipe.run("face.mp4", "speech.wav", "base.mp4", GenerateOptions(), track=res.track)

:meth:`Pipeline.run` wires the steps: inputs (:mod:`~ladtalk.generation.inputs`), TRACK
(:mod:`~ladtalk.generation.track`), models, identity check, and the CHUNK PROCESSOR
(:mod:`~ladtalk.generation.chunks`) inside the STREAMING RUNNER
(:mod:`~ladtalk.generation.runner`). docs/generation.md explains each step.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ladtalk._util.choices import DEFAULT_BACKEND, DEFAULT_PRECISION
from ladtalk._util.cores import thread_budget
from ladtalk._util.device import device_type, loaded_torch, resolve_device
from ladtalk.errors import InputError
from ladtalk.face.crop import CropConfig
from ladtalk.face.detect import FixedBoxDetector, make_detector
from ladtalk.generation.chunks import ChunkProcessor, lipsync_first_row
from ladtalk.generation.fusion import FusionConfig
from ladtalk.generation.inputs import (
    SourcePlan,
    Speech,
    check_output,
    load_speech,
    plan_source,
)
from ladtalk.generation.lipsync import LipSyncer
from ladtalk.generation.lipsync_load import LipSyncers, LipSyncRequest
from ladtalk.generation.options import (
    DEFAULT_BATCH_SIZE,
    STILL_FPS,
    GenerateOptions,
    GenerateResult,
    PathLike,
    ProgressFn,
)
from ladtalk.generation.runner import StreamingRunner, StreamResult, open_stream
from ladtalk.generation.track import FileStamp, SourceTrack, framing_key, track_source
from ladtalk.media.audio import SAMPLE_RATE
from ladtalk.media.mel_process import MelProcess
from ladtalk.media.probe import estimate_frames
from ladtalk.runtime.autotune import RuntimeChoice
from ladtalk.runtime.select import RuntimeSpec

if TYPE_CHECKING:
    import torch

    from ladtalk.generation.identity_match import IdentityMatch

log = logging.getLogger(__name__)


@dataclass
class _Call:
    """The state of one :meth:`Pipeline.run` call (a pipeline may serve several at once)."""

    face: Path
    audio: Path
    out: Path
    opts: GenerateOptions
    report: ProgressFn
    t_start: float = field(default_factory=time.perf_counter)
    timings: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("%s", msg)


@dataclass
class _Models:
    syncer: LipSyncer
    restorer: Any
    identity_dir: Optional[str]
    precision: str
    runtimes: Dict[str, RuntimeChoice] = field(default_factory=dict)
    fusion: Optional[FusionConfig] = None  # the call's, None for the restorer's own


class Pipeline:
    """Holds the models (loaded once, lazily) and runs generation calls.

    ``wav2lip``: None (default checkpoint), a checkpoint reference / path, a ``Wav2Lip``
    module or a ready :class:`LipSyncer`. ``detector`` / ``restorer``: objects used for every
    call instead of the named detector / the identity's SOVQAE. ``dtype``: the models'
    precision and ``backend`` what runs them ("auto": the fastest measured on this machine,
    :mod:`ladtalk.runtime`); ``compile``: ``torch.compile`` the models torch runs.
    ``workers``: model threads (default :meth:`worker_plan`: 2 on a CPU, 3 for runs with an
    identity on 2-3 cores, 1 on CUDA).

    A Wav2Lip checkpoint that an earlier process prepared for OpenVINO on this machine is
    run from the cached model without torch (:mod:`~ladtalk.generation.lipsync_load`): a
    Wav2Lip-only run then never imports it (1.2 s of a 6 s clip on 2 cores). From a
    checkpoint, each call's Wav2Lip draws only the rows of the crop its paste can use
    (:func:`~ladtalk.generation.chunks.lipsync_first_row`; :meth:`lipsyncer_for`).
    """

    def __init__(self, wav2lip: Any = None, *, device: Any = None, dtype: Any = DEFAULT_PRECISION,
                 batch_size: int = DEFAULT_BATCH_SIZE, detector: Any = None,
                 restorer: Any = None, workers: Optional[int] = None,
                 backend: str = DEFAULT_BACKEND, compile: bool = False):
        self._device_arg = device
        self._device: Optional["torch.device"] = None
        self.device_type = device_type(device)  # validates; torch only for a GPU
        self.dtype = dtype
        self.backend = RuntimeSpec.of(dtype, backend, self.device_type).backend  # checks both
        self.compile = bool(compile)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch size must be a positive whole number, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self._lipsyncs = LipSyncers(wav2lip, self._lipsync_request, device=lambda: self.device,
                                    plan=self.worker_plan)
        self._detector = detector
        self._detectors: Dict[str, Any] = {}
        self._restorer = restorer
        self._restorers: Dict[Tuple[str, float], Any] = {}
        if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
            raise InputError(f"workers must be a positive whole number, got {workers!r}")
        self.workers = workers
        self._lock = threading.RLock()

    @property
    def device(self) -> "torch.device":
        """The torch device the models run on (resolved, importing torch, on first use)."""
        if self._device is None:
            self._device = resolve_device(self._device_arg)
        return self._device

    def worker_plan(self, restoring: bool = True) -> Tuple[int, int]:
        """``(model threads, intra-op threads each)`` a run uses (``restoring``: with an
        identity; the models are set up for the larger plan). On a CPU with 2-3 cores a run
        that restores uses three model threads of one intra-op thread each: while one waits
        (the GIL, the encoder, a chunk's turn) the others keep the cores busy (LaDTalk on 2
        cores: 20.6 -> 17.0 s, docs/performance.md); Wav2Lip alone gains nothing from a third
        and keeps two, and so does a larger CPU, with half of the threads each."""
        torch = loaded_torch()  # (not loaded by a run of prepared models)
        total = max(1, torch.get_num_threads() if torch is not None else thread_budget())
        if self.workers is not None:
            n = int(self.workers)
        elif self.device_type != "cpu" or total < 2:
            n = 1
        else:
            n = 3 if restoring and total < 4 else 2
        return n, max(1, total // n)

    # ------------------------------------------------------------------ models
    @property
    def lipsyncer(self) -> LipSyncer:
        """The :class:`LipSyncer` that draws whole crops (loaded on first access)."""
        return self.lipsyncer_for(0)

    def lipsyncer_for(self, first_row: int) -> LipSyncer:
        """A :class:`LipSyncer` that draws the crops' rows from ``first_row`` down (loaded on
        first use, :class:`~ladtalk.generation.lipsync_load.LipSyncers`)."""
        with self._lock:
            return self._lipsyncs.get(first_row)

    @property
    def lipsyncer_loaded(self) -> bool:
        """Whether the Wav2Lip model has been loaded (a refused input never loads it)."""
        return bool(self._lipsyncs.rows)

    def loaded_models(self) -> Dict[str, Any]:
        """What is loaded now: ``lipsync`` (bool), ``lipsync_rows`` (the first rows the loaded
        lip-sync models draw), ``restorers`` (identity directories), ``detectors`` (names)."""
        with self._lock:
            return {"lipsync": bool(self._lipsyncs.rows), "lipsync_rows": self._lipsyncs.rows,
                    "restorers": [k[0] for k in self._restorers],
                    "detectors": sorted(self._detectors)}

    def _lipsync_request(self, first_row: int) -> LipSyncRequest:
        return LipSyncRequest(
            device_type=self.device_type, precision=self.dtype, backend=self.backend,
            compile=self.compile, batch_size=self.batch_size, workers=self.workers,
            first_row=first_row)

    def detector_for(self, options: GenerateOptions, frame_size: Tuple[int, int]):
        """The detector a call uses: a fixed box, the injected one, or a cached named one."""
        if options.box is not None:
            k = float(options.resize_factor)
            y1, y2, x1, x2 = (float(v) / k for v in options.box)
            det = FixedBoxDetector((y1, y2, x1, x2))
            w, h = frame_size
            det.detect(np.zeros((1, h, w, 3), np.uint8))  # raises if the box is off-frame
            return det
        if self._detector is not None:
            return self._detector
        name = (options.detector or "auto").lower()
        with self._lock:
            if name not in self._detectors:
                self._detectors[name] = make_detector(name, device=self._device_arg)
            return self._detectors[name]

    def restorer_for(self, identity: Optional[Union[str, os.PathLike]]):
        """``(restorer, identity directory)``, or ``(None, None)`` for Wav2Lip only. The
        restorer is cached per directory and reloaded when its weights file changes."""
        if identity is None:
            return None, None
        if self._restorer is not None:
            return self._restorer, str(identity)
        # the identity stack (the SOVQAE, huggingface_hub: 0.2-0.3 s of imports) loads only
        # for a call that uses an identity, never for a Wav2Lip-only run
        from ladtalk.generation.restore import Restorer
        from ladtalk.identities.store import resolve_identity
        from ladtalk.models.sovqae import WEIGHTS_NAME
        path = resolve_identity(identity)
        weights = path / WEIGHTS_NAME
        key = (str(path.resolve()), weights.stat().st_mtime)
        with self._lock:
            if key not in self._restorers:
                self._restorers = {k: v for k, v in self._restorers.items() if k[0] != key[0]}
                restorer = Restorer.from_identity(path, device=self.device,
                                                  precision=self.dtype, backend=self.backend,
                                                  compile=self.compile)
                restorer.select_runtime(*self.worker_plan())
                self._restorers[key] = restorer
            return self._restorers[key], str(path)

    # ------------------------------------------------------------------ run
    def run(self, face: PathLike, audio: PathLike, out: PathLike,
            options: Optional[GenerateOptions] = None, progress: Optional[ProgressFn] = None,
            track: Optional[SourceTrack] = None,
            mel_process: Optional[MelProcess] = None) -> GenerateResult:
        """Generate ``out`` from ``face`` (video or photo) and ``audio``.

        ``track``: a previous result's ``track`` for the same face file and framing options
        skips face detection; a track that does not fit this call is ignored (detect again).
        ``mel_process``: the mel of ``audio`` started early in a child
        (:func:`ladtalk.media.mel_process.start`; the CLI's start-up overlap).
        Raises :class:`ladtalk.errors.InputError` or :class:`ladtalk.errors.CheckpointError`.
        """
        call = _Call(Path(face), Path(audio), Path(out),
                     (options or GenerateOptions()).validate(),
                     progress or (lambda stage, done, total: None))
        check_output(call.out, call.face, call.audio)
        t0 = time.perf_counter()
        speech = load_speech(call.audio, mel_process)
        call.timings["audio"] = time.perf_counter() - t0
        call.report("audio", 1, 1)
        plan = plan_source(call.face, speech, call.opts, self.batch_size)
        src_track = self._track(call, plan, track)
        models = self._models(call)
        match = self._identity_check(call, models, plan, src_track)
        processor = self._processor(call, models, plan, speech, src_track)
        stream = self._stream(call, plan, src_track, processor)
        return self._result(call, plan, speech, models, src_track, processor, stream, match)

    def track(self, face: PathLike, options: Optional[GenerateOptions] = None) -> SourceTrack:
        """The face track of ``face`` for ``options`` (detector, framing, frame rate), without
        generating: detected, or read from the track cache. It does not depend on the audio;
        pass it as ``run(..., track=...)`` (a batch's ranks share tracks this way)."""
        call = _Call(Path(face), Path(face), Path(face),
                     replace(options or GenerateOptions()).validate(), lambda *a: None)
        one_second = Speech(n_samples=SAMPLE_RATE, seconds=1.0)
        return self._track(call, plan_source(call.face, one_second, call.opts, self.batch_size),
                           None)

    def _track(self, call: _Call, plan: SourcePlan,
               given: Optional[SourceTrack]) -> SourceTrack:
        """The TRACK step, or the given track when it fits this call."""
        stamp = FileStamp.of(call.face)
        if given is not None:
            if not isinstance(given, SourceTrack):
                raise TypeError(f"track must be a GenerateResult.track (SourceTrack), got "
                                f"{type(given).__name__}")
            why = given.mismatch(framing_key(stamp, plan, call.opts))
            if why is None:
                call.timings["detect"] = 0.0
                n = given.n_source_frames or 1
                call.report("detect", n, n)
                if given.message:
                    call.warn(given.message)
                return given
            log.info("the given face track does not fit this call (%s); detecting again", why)
        detector = self.detector_for(call.opts, plan.size)
        t0 = time.perf_counter()
        result = track_source(call.face, plan, call.opts, detector, call.report, stamp)
        call.timings["detect"] = time.perf_counter() - t0
        if result.message:
            call.warn(result.message)
        return result

    def _models(self, call: _Call) -> _Models:
        """Load the models (after every input check)."""
        t0 = time.perf_counter()
        call.report("load", 0, 1)
        restorer, identity_dir = self.restorer_for(call.opts.identity)
        fusion = _fusion(call.opts, restorer)
        first_row = lipsync_first_row(restorer, fusion, call.opts.blend)
        syncer = self.lipsyncer_for(first_row)
        if restorer is None:
            log.info("no identity given: writing the Wav2Lip-only result (as --no-enhance)")
        call.timings["load"] = time.perf_counter() - t0
        call.report("load", 1, 1)
        runtimes = {"lipsync": syncer.runtime.choice}
        if restorer is not None and hasattr(restorer, "runtime"):
            runtimes["restore"] = restorer.runtime.choice
        for stage, choice in runtimes.items():
            log.info("%s runs %s", stage, choice.describe())
        return _Models(syncer, restorer, identity_dir, syncer.runtime.precision, runtimes,
                       fusion)

    def _identity_check(self, call: _Call, models: _Models, plan: SourcePlan,
                        track: SourceTrack) -> Optional[IdentityMatch]:
        """Never one person's identity on another's face: refuse / warn before streaming."""
        if models.restorer is None or call.opts.identity_check == "off":
            return None
        from ladtalk.generation.identity_match import run_identity_check
        t0 = time.perf_counter()
        match = run_identity_check(
            models.restorer, models.identity_dir, call.opts.identity_check, info=plan.info,
            fps=plan.fps, frame_size=plan.size, boxes=track.boxes, fixed=track.fixed,
            crop_cfg=_crop_config(call.opts), resize=plan.resize, source=str(call.face),
            warn=call.warn, chunk_size=plan.chunk_size)
        call.timings["identity_check"] = time.perf_counter() - t0
        return match

    def _processor(self, call: _Call, models: _Models, plan: SourcePlan, speech: Speech,
                   track: SourceTrack) -> ChunkProcessor:
        t0 = time.perf_counter()
        mel = speech.mel  # (waits for an early mel process, else computes it)
        call.timings["mel"] = time.perf_counter() - t0
        return ChunkProcessor(syncer=models.syncer, mel=mel, starts=plan.starts,
                              track=track, frame_size=plan.size, crop=_crop_config(call.opts),
                              blend=call.opts.blend, restorer=models.restorer,
                              fusion=models.fusion)

    def _stream(self, call: _Call, plan: SourcePlan, track: SourceTrack,
                processor: ChunkProcessor) -> StreamResult:
        """Decode -> models -> encode in a per-call temp folder (removed afterwards)."""
        workers, intra = self.worker_plan(processor.restores)
        hint = track.n_source_frames or estimate_frames(plan.info, plan.fps)
        with tempfile.TemporaryDirectory(prefix="ladtalk-gen-", dir=call.opts.temp_dir) as tmp:
            source, writer = open_stream(plan, call.opts, call.audio, call.out, Path(tmp),
                                         hint, call.warn)
            runner = StreamingRunner(source, writer, processor, plan.n_out, workers, intra,
                                     processor.clock, call.report)
            return runner.run()

    def _result(self, call: _Call, plan: SourcePlan, speech: Speech, models: _Models,
                track: SourceTrack, processor: ChunkProcessor, stream: StreamResult,
                match: Optional[IdentityMatch]) -> GenerateResult:
        timings = call.timings
        timings["generate"] = stream.generate_seconds
        timings["decode"] = stream.decode_seconds
        timings.update(processor.clock.as_dict())
        timings["total"] = time.perf_counter() - call.t_start
        if stream.passthrough:
            log.info("%d of %d output frames had no face and were written unchanged",
                     stream.passthrough, plan.n_out)
        fusion = processor.fusion_used
        return GenerateResult(
            out=call.out, n_frames=plan.n_out, fps=plan.fps, duration=plan.n_out / plan.fps,
            audio_duration=speech.seconds, size=plan.size, enhanced=models.restorer is not None,
            identity=models.identity_dir, n_source_frames=stream.n_src or track.n_source_frames,
            missing_face_timestamps=list(track.missing_timestamps),
            passthrough_frames=stream.passthrough, audio_copied=stream.audio_copied,
            warnings=call.warnings, timings=timings, precision=models.precision,
            backend=models.runtimes["lipsync"].backend,
            runtime={k: v.to_dict() for k, v in models.runtimes.items()},
            identity_match=match,
            fusion=fusion.to_dict() if hasattr(fusion, "to_dict") else None, track=track)


def _fusion(opts: GenerateOptions, restorer: Any) -> Optional[FusionConfig]:
    """The fusion a call asks for (``restore_strength``), None for the restorer's own."""
    strength = opts.restore_strength
    if restorer is None or strength is None:
        return None
    base = getattr(restorer, "fusion", None) or FusionConfig()
    return replace(base, low_strength=strength[0], high_strength=strength[1])


def _crop_config(opts: GenerateOptions) -> CropConfig:
    return CropConfig(pads=tuple(int(p) for p in opts.pads))


__all__ = ["Pipeline", "GenerateOptions", "GenerateResult", "SourceTrack", "ProgressFn",
           "DEFAULT_BATCH_SIZE", "STILL_FPS"]
