"""LaDTalk Gradio app: Generate, Robustness and Enroll tabs, each also a named API endpoint.

``python app.py`` builds :func:`create_demo` with the real checkpoints (resolved once at
startup; a missing one becomes a status panel and a ``gr.Error`` on Generate, never a crash)
and launches it. Tests build it with injected tiny models (``create_demo(wav2lip=Wav2Lip())``).

Endpoints (``api_name``): ``/generate``, ``/robustness``, ``/enroll``, ``/identities``,
``/status``; see the README section "Gradio app and API" for a ``gradio_client`` example.

ZeroGPU: input checks, decoding for validation, enrollment face crops and the certificate
bookkeeping run in the request thread; only the model work runs inside ``@spaces.GPU``
functions, whose ``duration`` is computed from the work (frames, training budget) and clamped
to the per-call cap (:mod:`ladtalk.app.support`). Enrollment runs in resumable chunks on
ZeroGPU. Off ZeroGPU ``spaces.GPU`` is a no-op and everything runs in-process.
"""

from __future__ import annotations

# ``spaces`` must be imported before torch / gradio touch CUDA on ZeroGPU; it is a no-op
# elsewhere (and optional).
try:  # pragma: no cover - depends on the environment
    import spaces  # type: ignore
    ZERO_GPU = bool(spaces.config.Config.zero_gpu)
except Exception:  # noqa: BLE001 - ImportError or an incompatible spaces version
    spaces = None
    ZERO_GPU = False

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import gradio as gr

import ladtalk
from ladtalk.app import support as sup
from ladtalk.errors import CheckpointError, InputError, LadTalkError

log = logging.getLogger("ladtalk.app")
ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
DETECTORS = ["auto", "s3fd", "dlib"]
LOOPS = ["pingpong", "loop", "hold"]
ENROLL_CONFIGS = ["auto", "cpu", "base", "tiny"]
#: Certificate settings for the app: one face, a short power iteration, no layer-wise bound
#: (a few seconds on a CPU; the CLI's defaults are more thorough).
APP_ROBUSTNESS_KWARGS = dict(cert_faces=1, power_iters=4, n_random=2, max_positions=4,
                             layerwise=False)
SWEEPS = {  # degradation -> strengths for the PSNR-vs-strength plot
    "blur": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
    "noise": [0.02, 0.05, 0.1, 0.15, 0.2, 0.3],
    "down": [112, 96, 80, 64, 48, 32],
}


def _gpu(duration: Callable[..., int]):
    """``spaces.GPU(duration=...)`` when the package is there (a no-op off ZeroGPU)."""
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


# ============================================================================ app state
@dataclass
class AppState:
    """Everything the handlers share: models (loaded once), limits and startup status.

    Stored in a module-level registry and addressed by ``key`` so that the ``@spaces.GPU``
    functions (which ZeroGPU runs in a forked worker with pickled arguments) receive only
    plain values.
    """

    key: int
    pipeline: Any
    limits: sup.AppLimits
    device: str
    statuses: List[sup.CheckpointStatus]
    wav2lip_error: Optional[str]
    enroll_config: Optional[str] = None
    enroll_kwargs: Dict[str, Any] = field(default_factory=dict)
    robustness_kwargs: Dict[str, Any] = field(default_factory=dict)
    enroll_lock: threading.Lock = field(default_factory=threading.Lock)

    def status_dict(self) -> Dict[str, Any]:
        return {
            "ladtalk_version": ladtalk.__version__, "device": self.device,
            "zero_gpu": ZERO_GPU, "generate_available": self.wav2lip_error is None,
            "wav2lip_error": self.wav2lip_error,
            "checkpoints": [{"name": s.name, "available": s.ok, "used_for": s.purpose,
                             "detail": s.detail} for s in self.statuses],
            "limits": {k: getattr(self.limits, k) for k in self.limits.__dataclass_fields__},
            "identities": [i["name"] for i in sup.identities_summary()],
        }


_STATES: Dict[int, AppState] = {}
_KEYS = itertools.count(1)


def _state(key: int) -> AppState:
    try:
        return _STATES[key]
    except KeyError:  # pragma: no cover - only if a demo object outlives its state
        raise gr.Error("the app state was lost; reload the page") from None


@contextlib.contextmanager
def _user_errors(*secrets: str):
    """Turn every failure into a ``gr.Error`` with a specific, actionable message."""
    try:
        yield
    except gr.Error:
        raise
    except LadTalkError as exc:
        log.info("user error: %s", sup.user_message(exc, secrets))
        raise gr.Error(sup.user_message(exc, secrets), print_exception=False) from None
    except Exception as exc:  # noqa: BLE001 - the UI must get a message, not a crash
        log.error("%s", sup.format_exception_for_log(exc, secrets))
        raise gr.Error(sup.user_message(exc, secrets), print_exception=False) from None


def _tmpdir(prefix: str) -> Path:
    """A fresh per-request output folder under the system temp dir (Gradio may serve it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# ============================================================================ generate
def _generate_duration(key, face, audio, out_dir, options, baseline, n_frames, n_src,
                       progress=None) -> int:
    st = _STATES.get(key)
    cap = st.limits.gpu_cap_seconds if st else 120.0
    return sup.generate_gpu_seconds(n_frames, n_src, options.identity is not None, baseline, cap)


@_gpu(duration=_generate_duration)
def _generate_on_gpu(key, face, audio, out_dir, options, baseline, n_frames, n_src,
                     progress=None):
    """Model work of one generation (+ the Wav2Lip-only baseline): runs on the GPU."""
    st = _state(key)
    passes = [("ladtalk", options)]
    if baseline:
        passes.append(("baseline", replace(options, identity=None)))
    results = {}
    with _user_errors():
        for i, (name, opts) in enumerate(passes):
            label = "LaDTalk (Wav2Lip + SOVQAE)" if opts.identity is not None else "Wav2Lip"

            def report(stage, done, total, i=i, label=label):
                if progress is None:
                    return
                frac = {"audio": 0.02, "detect": 0.05 + 0.25 * done / max(1, total),
                        "load": 0.3}.get(stage, 0.3 + 0.7 * done / max(1, total))
                what = {"audio": "reading audio", "detect": f"finding the face ({done}/{total})",
                        "load": "loading models"}.get(stage, f"{label}: frame {done}/{total}")
                progress((i + frac) / len(passes), desc=what)

            out = Path(out_dir) / f"{name}.mp4"
            results[name] = st.pipeline.run(face, audio, out, opts, progress=report)
    return results


def _result_report(res, gpu_s: int) -> Dict[str, Any]:
    return {"video_seconds": round(res.duration, 3), "audio_seconds": round(res.audio_duration, 3),
            "frames": res.n_frames, "fps": res.fps, "size": list(res.size),
            "enhanced": res.enhanced, "identity": Path(res.identity).name if res.identity else None,
            "frames_without_face": res.passthrough_frames,
            "missing_face_timestamps": res.missing_face_timestamps[:50],
            "audio_copied": res.audio_copied, "precision": res.precision,
            "warnings": res.warnings, "timings_s": {k: round(v, 2) for k, v in res.timings.items()},
            "identity_match": (res.identity_match.to_dict()
                               if getattr(res, "identity_match", None) is not None else None),
            "fusion": getattr(res, "fusion", None),
            "gpu_seconds_requested": gpu_s}


# ============================================================================ enroll
def _enroll_duration(key, video, name, seconds, config, detector, fresh, progress=None,
                     offset=0.0, total=None) -> int:
    st = _STATES.get(key)
    cap = st.limits.gpu_cap_seconds if st else 120.0
    return sup.enroll_gpu_seconds(seconds, cap)


@_gpu(duration=_enroll_duration)
def _enroll_on_gpu(key, video, name, seconds, config, detector, fresh, progress=None,
                   offset=0.0, total=None):
    """One enrollment chunk (``seconds`` of training); resumes ``name`` when it exists."""
    from ladtalk.enrollment.enroll import enroll
    st = _state(key)
    total = total or seconds
    last: Dict[str, Any] = {}

    def on_progress(info: Dict[str, Any]) -> None:
        if progress is None:
            return
        phase = info.get("phase")
        if phase == "train":
            if "holdout_psnr" in info:
                last["psnr"] = info["holdout_psnr"]
            done = offset + min(float(info.get("elapsed", 0.0)), seconds)
            psnr = f" | holdout PSNR {last['psnr']:.2f} dB" if "psnr" in last else ""
            progress(min(0.99, done / total),
                     desc=f"training step {info.get('step')} | loss {info.get('rec', 0):.4f}"
                          f"{psnr} | {done:.0f}/{total:.0f} s")
        elif phase in ("detect", "crop"):
            progress(offset / total, desc=f"{phase}: frame {info.get('done')}/{info.get('total')}")
        elif phase in ("evaluate", "save"):
            progress(min(0.99, (offset + seconds) / total), desc=f"{phase} identity '{name}'")

    with _user_errors():
        path = enroll(video, name, seconds=seconds, config=config, detector=detector,
                      device=st.pipeline.device, on_progress=on_progress, fresh=fresh,
                      show_progress=False, **st.enroll_kwargs)
    return str(path)


def _prepare_enroll_crops(st: AppState, video: str, name: str, config: Optional[str],
                          detector: str, fresh: bool, progress) -> None:
    """Face detection + crops on the CPU, before any GPU call (cached; enroll reuses them)."""
    from ladtalk.enrollment.enroll import train_preset
    from ladtalk.face.video_crops import extract_crops
    from ladtalk.identities.store import store_path
    from ladtalk.models.sovqae import SOVQAEConfig, default_config_name, get_config
    target = store_path(name)
    if (target / "config.json").is_file() and not fresh:
        cfg = SOVQAEConfig.from_dict(json.loads((target / "config.json").read_text()))
        cname = json.loads((target / "meta.json").read_text()).get("config_name", "cpu") \
            if (target / "meta.json").is_file() else "cpu"
    else:
        cname = config or st.enroll_config or default_config_name(st.pipeline.device)
        cfg = get_config(cname)
    from ladtalk.models.sovqae import AUTO_RESOLUTION_CONFIGS
    fresh_auto = cname in AUTO_RESOLUTION_CONFIGS and not (
        (target / "config.json").is_file() and not fresh)
    overrides = st.enroll_kwargs.get("train_overrides") or {}
    max_frames = overrides.get("max_frames", train_preset(cname).max_frames)

    def report(phase, done, total):
        if progress is not None:
            progress(0.0, desc=f"{'finding the face' if phase == 'detect' else 'cropping'}: "
                               f"frame {done}/{total}")

    # a new identity's resolution follows the measured face size, as in enroll()
    extract_crops(video, "auto" if fresh_auto else cfg.resolution, detector, device="cpu",
                  max_frames=max_frames, progress=report)


def run_enrollment(st: AppState, video: str, name: str, budget: float, config: Optional[str],
                   detector: str, fresh: bool, progress) -> Path:
    """Validate, crop on CPU, then train in GPU-sized chunks (one chunk off ZeroGPU)."""
    config = None if config in (None, "", "auto") else config
    if config is not None and config not in ENROLL_CONFIGS:
        raise InputError(f"unknown model config {config!r}; choose one of "
                         f"{', '.join(ENROLL_CONFIGS)}")
    if detector not in DETECTORS:
        raise InputError(f"unknown face detector {detector!r}; choose one of "
                         f"{', '.join(DETECTORS)}")
    from ladtalk.identities.store import SHIPPED_DIR, validate_name
    validate_name(name)
    if (SHIPPED_DIR / name).exists():
        raise InputError(f"'{name}' is the name of a shipped demo identity; choose another name")
    config = config or st.enroll_config
    with st.enroll_lock:  # two enrollments of the same store never interleave
        _prepare_enroll_crops(st, video, name, config, detector, fresh, progress)
        chunks = sup.enroll_chunks(budget, st.limits.enroll_chunk_seconds)
        offset, path = 0.0, None
        for i, secs in enumerate(chunks):
            path = _enroll_on_gpu(st.key, video, name, secs, config, detector,
                                  fresh and i == 0, progress, offset, budget)
            offset += secs
    return Path(path)


def _identity_summary_md(meta: Dict[str, Any], name: str) -> str:
    lines = [f"### Identity `{name}`", ""]
    psnr, ssim = meta.get("holdout_psnr"), meta.get("holdout_ssim")
    lines.append(f"- training: {meta.get('steps')} steps, {meta.get('training_seconds')} s "
                 f"(config `{meta.get('config_name')}`)")
    if psnr is not None:
        lines.append(f"- holdout reconstruction: PSNR {psnr:.2f} dB"
                     + (f", SSIM {ssim:.3f}" if ssim is not None else "")
                     + " (frames at the end of the video, never trained on)")
    rest = meta.get("restoration") or {}
    if rest:
        lines += ["", "| degradation | PSNR degraded | PSNR restored | gain |", "|---|---|---|---|"]
        for spec, r in rest.items():
            pd_, pr = r.get("psnr_degraded"), r.get("psnr_restored")
            if pd_ is not None and pr is not None:
                lines.append(f"| `{spec}` | {pd_:.2f} dB | {pr:.2f} dB | {pr - pd_:+.2f} dB |")
    lines += quality_md(meta)
    return "\n".join(lines)


def quality_md(meta: Dict[str, Any]) -> list:
    """Markdown lines: LaDTalk (L) against the Wav2Lip proxy (W) on held-out frames."""
    q = meta.get("quality")
    if not q:
        return []
    fusion = meta.get("fusion") or {}
    lines = ["", f"**LaDTalk vs Wav2Lip** on {q.get('frames')} held-out frames (face "
             f"{q.get('face_px', 0):.0f} px, identity {q.get('resolution')} px). W: the true "
             "face reduced to 96 px (the best a Wav2Lip output can be), optionally softened "
             "like a real Wav2Lip output (sigma in px at 96 px); L: that face restored by this "
             "identity. Scores against the real frame, in the pasted lower-face region.", "",
             "| softened | PSNR W → L | gain | sharpness W → L |", "|---|---|---|---|"]
    for sigma, r in (q.get("soften") or {}).items():
        w, l_ = r["W"], r["L"]
        lines.append(f"| {sigma} | {w['psnr']:.2f} → {l_['psnr']:.2f} dB | "
                     f"{r['gain_db']:+.2f} dB | {w['sharpness']:.2f} → {l_['sharpness']:.2f} |")
    if fusion:
        lines += ["", f"Restore strength calibrated on the holdout: low band "
                  f"{fusion.get('low_strength'):g}, detail {fusion.get('high_strength'):g} "
                  "(1 = the identity's decode, 0 = Wav2Lip's face). Sharpness: fine detail "
                  "relative to the real frame (1.0 = as sharp as the truth)."]
    return lines


def _push_to_hub(path: Path, repo_id: str, token: str, private: bool) -> str:
    """Upload an identity to the user's own Hub repo; the token is used once, never kept."""
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=bool(private), exist_ok=True, repo_type="model")
    api.upload_folder(repo_id=repo_id, folder_path=str(path), repo_type="model",
                      allow_patterns=["config.json", "model.safetensors", "meta.json"],
                      commit_message="LaDTalk identity (SOVQAE) from the LaDTalk app")
    return str(url)


# ============================================================================ robustness
def _robustness_duration(key, crops01, identity, specs, sweep_specs, certificate,
                         progress=None) -> int:
    st = _STATES.get(key)
    cap = st.limits.gpu_cap_seconds if st else 120.0
    return sup.clamp_gpu(20 + (30 if certificate else 0), cap)


@_gpu(duration=_robustness_duration)
def _robustness_on_gpu(key, crops01, identity, specs, sweep_specs, certificate,
                       progress=None):
    """Degrade + restore + measure one face crop with the library: runs on the GPU.

    Returns the :func:`ladtalk.analysis.robustness.evaluate_robustness` dict and the pictures to show
    (made the same way: same degradation, same noise seed, same restorer)."""
    import numpy as np

    from ladtalk.analysis import robustness as rb
    from ladtalk.analysis.degrade import parse_degradation
    st = _state(key)

    def report(phase, done, total):
        if progress is not None:
            progress(0.2 + 0.7 * (phase == "certificate"),
                     desc="estimating L_enc for the certificate" if phase == "restore"
                     and certificate and done >= total else f"{phase} {done}/{total}")

    with _user_errors():
        restorer, _ = st.pipeline.restorer_for(identity)
        all_specs = list(dict.fromkeys(list(specs) + list(sweep_specs)))
        res = rb.evaluate_robustness(restorer.model, crops01, all_specs, device=restorer.device,
                                     certificate=certificate, progress=report,
                                     **st.robustness_kwargs)

        def to_u8(x):
            return (x[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)

        images = {"clean": to_u8(crops01), "reconstructed": to_u8(restorer.restore01(crops01))}
        for spec in specs:
            xd = parse_degradation(spec)(crops01, seed=[0])
            images[f"{spec} degraded"] = to_u8(xd)
            images[f"{spec} restored"] = to_u8(restorer.restore01(xd))
    return res, images


def _frame_from_inputs(st: AppState, image, video, frame_time) -> Tuple[Any, str]:
    """The face picture for the Robustness tab: the image, else a frame of the video."""
    import numpy as np

    from ladtalk.media.video import iter_frames, read_image
    if image:
        p = Path(image)
        sup.check_face_input(p, st.limits)
        return read_image(p), p.name
    if video:
        info = sup.check_face_input(video, st.limits)
        if info.is_image:
            return read_image(video), Path(video).name
        t = float(frame_time or 0.0)
        if not (0.0 <= t <= info.duration):
            raise InputError(f"frame time {t:g} s is outside the video '{Path(video).name}' "
                             f"(0 to {info.duration:.2f} s)")
        want = min(int(round(t * (info.fps or 25.0))), max(0, info.n_frames - 1))
        n = 0
        last = None
        for chunk in iter_frames(video, chunk_size=8):
            if n + len(chunk) > want:
                return np.ascontiguousarray(chunk[want - n]), f"{Path(video).name} @ {t:g} s"
            n += len(chunk)
            last = chunk[-1]
        if last is not None:
            return np.ascontiguousarray(last), f"{Path(video).name} @ {t:g} s"
        raise InputError(f"no frame could be decoded from '{Path(video).name}'")
    raise InputError("no face picture was given: upload a face image (or a video and a frame "
                     "time), or pick an example")


def _identity_resolution(name: str) -> int:
    from ladtalk.identities.store import resolve_identity
    from ladtalk.models.sovqae import SOVQAEConfig
    path = resolve_identity(name)
    return int(SOVQAEConfig.from_dict(json.loads((path / "config.json").read_text())).resolution)


def _face_crop(st: AppState, frame, name: str, resolution: int, is_crop: bool, detector: str):
    """Detect the face (CPU) and crop it with the generation / enrollment framing."""
    import numpy as np

    from ladtalk.face.crop import CropConfig, crop_face, face_region
    from ladtalk.face.track import select_largest
    from ladtalk.generation.pipeline import GenerateOptions
    h, w = frame.shape[:2]
    if is_crop:
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        import cv2
        return cv2.resize(np.ascontiguousarray(frame[y0:y0 + side, x0:x0 + side]),
                          (resolution, resolution), interpolation=cv2.INTER_AREA), None
    det = st.pipeline.detector_for(GenerateOptions(detector=detector), (w, h))
    boxes, _ = select_largest(det.detect(frame[None]))
    if np.isnan(boxes[0]).any():
        raise InputError(f"no face found in '{name}' (detector: {getattr(det, 'name', detector)}); "
                         "use a clear, frontal face picture, try another detector, or tick "
                         "'the picture is already a face crop'")
    region = face_region(boxes[0], (w, h), CropConfig())
    return crop_face(frame, region, resolution), [float(v) for v in boxes[0]]


CERT_EXPLAIN = [
    ("d_C", "d_C", "minimum distance between two codebook vectors: how far apart the "
     "identity's codes are"),
    ("gamma", "gamma", "largest distance from a clean latent vector to its nearest code "
     "(quantisation error on this picture)"),
    ("L_enc", "L_enc", "estimated Lipschitz constant of the encoder per latent position: how "
     "much a pixel change can move a latent vector (an empirical lower bound)"),
    ("radius", "certified radius", "(d_C - 2 gamma) / (2 L_enc): any perturbation with a "
     "smaller L2 norm (whole crop, [0,1] pixels) provably keeps every code; negative = no "
     "guarantee"),
    ("radius_rms", "radius per pixel (RMS)", "the certified radius divided by sqrt(pixels): "
     "comparable to a noise sigma"),
]


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    return str(v)


def _certificate_md(cert: Optional[Dict[str, Any]], specs: List[str]) -> str:
    if not cert:
        return "*Certificate not computed (tick 'compute the Theorem 3.3 certificate').*"
    # values in a narrow table (a wide "meaning" column squeezed them into wrapped digits),
    # the one-line explanations below it
    lines = ["### Theorem 3.3 certificate", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {label} | {_fmt(cert.get(key))} |" for key, label, _ in CERT_EXPLAIN]
    lines += [""] + [f"- **{label}**: {text}" for _, label, text in CERT_EXPLAIN]
    pres = cert.get("codes_preserved") or {}
    certf = cert.get("certified_fraction") or {}
    norms = cert.get("degradation_norms") or {}
    lines += ["", "| degradation | perturbation norm ‖N‖ | codes preserved (measured) | "
              "codes certified (per position) |", "|---|---|---|---|"]
    for spec in specs:
        if spec in pres:
            nrm = (norms.get(spec) or {}).get("mean")
            lines.append(f"| `{spec}` | {_fmt(nrm)} | {100 * pres[spec]:.1f} % | "
                         f"{100 * certf.get(spec, 0.0):.1f} % |")
    lines += ["", "*Codes preserved*: fraction of latent positions whose code is unchanged by "
              "the degradation (what makes restoration work). *Certified*: fraction whose own "
              "margin (d2 - d1) / (2 L_enc) exceeds ‖N‖, so the theorem guarantees it."]
    for note in cert.get("notes") or []:
        lines.append(f"\n> {note}")
    return "\n".join(lines)


# ============================================================================ handlers
def make_handlers(st: AppState) -> Dict[str, Callable]:
    """The request handlers of one app instance (plain functions: the UI and the API call
    the same code)."""
    import pandas as pd

    limits = st.limits

    def generate(face, audio, identity=sup.NONE_IDENTITY, enroll_first=False,
                 enroll_seconds=None, compare=True, pad_top=0, pad_bottom=10, pad_left=0,
                 pad_right=0, smooth=True, detector="auto", loop="pingpong", box="",
                 resize_factor=1, restore_strength="", progress=gr.Progress()):
        """Lip-sync a face video or photo to speech; returns (LaDTalk video, Wav2Lip-only
        video or None, report). Default identity: none (Wav2Lip only); an identity that does
        not match the uploaded face (``ladtalk.generation.identity_match``) is refused with the measured
        PSNRs and the fix."""
        with _user_errors():
            from ladtalk.generation.pipeline import GenerateOptions
            if st.wav2lip_error:
                raise CheckpointError("Generate needs the Wav2Lip checkpoint, which is not "
                                      f"available: {st.wav2lip_error}")
            # -- every input check before any model work
            info = sup.check_face_input(face, limits)
            audio_s = sup.check_audio_input(audio, limits)
            if detector not in DETECTORS:
                raise InputError(f"unknown face detector {detector!r}; use one of "
                                 f"{', '.join(DETECTORS)}")
            if loop not in LOOPS:
                raise InputError(f"unknown loop policy {loop!r}; use one of {', '.join(LOOPS)}")
            try:
                rf = int(resize_factor or 1)
            except (TypeError, ValueError):
                raise InputError(f"resize factor must be a whole number >= 1, got "
                                 f"{resize_factor!r}") from None
            opts = GenerateOptions(detector=detector, box=sup.parse_box(box),
                                   pads=sup.parse_pads(pad_top, pad_bottom, pad_left, pad_right),
                                   smooth=bool(smooth), loop=loop, resize_factor=rf,
                                   restore_strength=restore_strength).validate()
            if enroll_first:
                if info.is_image:
                    raise InputError("'enroll from this video first' needs a video of the "
                                     "person, but the face input is a photo; untick it or "
                                     "upload a video")
                budget = sup.check_budget(enroll_seconds or limits.enroll_budget_default, limits)
                sup.check_enroll_video(face, limits)
                ident = sup.default_session_identity(face)
            else:
                ident = sup.check_identity(identity)
            fps = 25.0 if info.is_image else float(info.fps or 25.0)
            n_frames = max(1, int(math.floor(audio_s * fps + 0.5)))
            n_src = 1 if info.is_image else max(1, int(round(info.duration * fps)))
            baseline = bool(compare) and ident is not None
            sup.check_generate_fits(n_frames, n_src, ident is not None, baseline, fps,
                                    limits.gpu_cap_seconds)
            # -- enrollment (its own GPU calls), then generation
            if enroll_first:
                progress(0.0, desc=f"enrolling identity '{ident}' from this video")
                run_enrollment(st, face, ident, budget, None, detector, False, progress)
            opts.identity = ident
            gpu_s = sup.generate_gpu_seconds(n_frames, n_src, ident is not None, baseline,
                                             limits.gpu_cap_seconds)
            out_dir = _tmpdir("ladtalk-gen-")
            results = _generate_on_gpu(st.key, str(face), str(audio), str(out_dir), opts,
                                       baseline, n_frames, n_src, progress)
            main = results["ladtalk"]
            report = _result_report(main, gpu_s)
            base = results.get("baseline")
            if base is not None:
                report["baseline"] = _result_report(base, gpu_s)
            if ident is not None:
                report["identity"] = ident
            return str(main.out), (str(base.out) if base is not None else None), report

    def robustness(image=None, video=None, frame_time=0.0, identity=sup.DEMO_IDENTITY,
                   blur=2.0, noise=0.1, down=96, sweep="blur", certificate=True,
                   is_crop=False, detector="auto", progress=gr.Progress()):
        """Degrade a face crop (blur / noise / down-up), restore it with an identity's SOVQAE;
        returns (gallery, metrics table, PSNR-vs-strength plot data, certificate, raw JSON)."""
        import numpy as np
        import torch
        with _user_errors():
            from ladtalk.analysis.degrade import format_spec
            ident = sup.check_identity(identity, allow_none=False)
            res_px = _identity_resolution(ident)
            specs = []
            for name, val in (("blur", blur), ("noise", noise), ("down", down)):
                try:
                    v = float(val or 0)
                except (TypeError, ValueError):
                    raise InputError(f"{name} strength must be a number, got {val!r}") from None
                if not math.isfinite(v) or v < 0:
                    raise InputError(f"{name} strength must be >= 0, got {val!r}")
                if v == 0:
                    continue
                if name == "down":
                    if int(round(v)) >= res_px:
                        raise InputError(f"down-up size {int(round(v))} px must be smaller than "
                                         f"the identity's crop size ({res_px} px); use 0 to "
                                         "turn it off")
                    specs.append(format_spec("down", int(round(v))))
                else:
                    specs.append(format_spec(name, v))
            if not specs:
                raise InputError("all degradations are off: set blur, noise or down-up above 0")
            if sweep not in SWEEPS:
                raise InputError(f"unknown sweep {sweep!r}; use one of {', '.join(SWEEPS)}")
            sweep_vals = [v for v in SWEEPS[sweep] if sweep != "down" or v < res_px]
            sweep_specs = [format_spec(sweep, v) for v in sweep_vals]
            progress(0.05, desc="finding the face")
            frame, label = _frame_from_inputs(st, image, video, frame_time)
            crop, box = _face_crop(st, frame, label, res_px, bool(is_crop), detector or "auto")
            x01 = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255
            res, images = _robustness_on_gpu(st.key, x01, ident, specs, sweep_specs,
                                             bool(certificate), progress)
            degs = res.get("degradations", {})
            cert = res.get("certificate")
            rows = []
            for spec in specs:
                r = degs[spec]
                rows.append({
                    "degradation": spec,
                    "PSNR degraded (dB)": round(r["psnr_degraded"], 3),
                    "PSNR restored (dB)": round(r["psnr_restored"], 3),
                    "gain (dB)": round(r["psnr_restored"] - r["psnr_degraded"], 3),
                    "SSIM degraded": round(r["ssim_degraded"], 4),
                    "SSIM restored": round(r["ssim_restored"], 4),
                    "codes preserved": (round(cert["codes_preserved"][spec], 4)
                                        if cert and spec in cert.get("codes_preserved", {})
                                        else None)})
            table = pd.DataFrame(rows)
            points = []
            for v, spec in zip(sweep_vals, sweep_specs):
                r = degs[spec]
                strength = (res_px / v) if sweep == "down" else v
                points.append({"strength": float(strength), "PSNR (dB)": r["psnr_degraded"],
                               "curve": "degraded"})
                points.append({"strength": float(strength), "PSNR (dB)": r["psnr_restored"],
                               "curve": "restored"})
            plot = pd.DataFrame(points)
            gallery = []
            out_dir = _tmpdir("ladtalk-rob-")
            from PIL import Image
            for i, (cap, img) in enumerate(images.items()):
                if cap.endswith("degraded") or cap.endswith("restored"):
                    r = degs[cap.rsplit(" ", 1)[0]]
                    kind = cap.rsplit(" ", 1)[1]
                    cap = (f"{cap}: PSNR {r[f'psnr_{kind}']:.2f} dB, "
                           f"SSIM {r[f'ssim_{kind}']:.3f}")
                elif cap == "reconstructed" and "reconstruction" in res:
                    rr = res["reconstruction"]
                    cap = f"reconstructed (no degradation): PSNR {rr['psnr']:.2f} dB"
                path = out_dir / f"{i:02d}.png"
                Image.fromarray(np.asarray(img, dtype=np.uint8)).save(path)
                gallery.append((str(path), cap))
            raw = {"identity": ident, "input": label, "face_box_xyxy": box,
                   "resolution": res_px, "degradations": {s: degs[s] for s in specs},
                   "sweep": {"kind": sweep, "specs": sweep_specs,
                             "results": {s: degs[s] for s in sweep_specs}},
                   "reconstruction": res.get("reconstruction"), "certificate": cert}
            return (gallery, table, plot, _certificate_md(cert, specs),
                    json.loads(json.dumps(raw, default=_json_default)))

    def enroll(video, name, seconds=None, config="auto", detector="auto", fresh=False,
               hub_repo="", hub_token="", hub_private=True, progress=gr.Progress()):
        """Enroll (or continue) an identity from a video within a time budget; returns
        (summary markdown, metrics JSON, the identity's model.safetensors)."""
        token = (hub_token or "").strip()
        with _user_errors(token):
            from ladtalk.identities.store import resolve_identity
            name = (name or "").strip()
            if not name:
                raise InputError("give the identity a name (letters, digits, '_', '-', '.')")
            from ladtalk.identities.store import validate_name
            validate_name(name)
            budget = sup.check_budget(seconds if seconds not in (None, "") else
                                      limits.enroll_budget_default, limits)
            sup.check_enroll_video(video, limits)
            repo = (hub_repo or "").strip()
            if repo and not token:
                raise InputError("to push to the Hub, also give a write token for your account "
                                 "(it is used once and never stored)")
            if token and not repo:
                raise InputError("a Hub token was given but no repository: enter "
                                 "'your-user/your-repo' (or clear the token)")
            path = run_enrollment(st, str(video), name, budget, config, detector or "auto",
                                  bool(fresh), progress)
            path = resolve_identity(name)
            meta = json.loads((path / "meta.json").read_text())
            meta.pop("history", None)
            md = _identity_summary_md(meta, name)
            if repo:
                progress(0.99, desc=f"pushing to the Hub repo {repo}")
                try:
                    url = _push_to_hub(path, repo, token, bool(hub_private))
                    md += f"\n\nPushed to the Hub: {url}"
                except Exception as exc:  # noqa: BLE001 - enrollment itself succeeded
                    md += ("\n\n**Push to the Hub failed** (the identity is saved here): "
                           + sup.user_message(exc, [token]))
            out_dir = _tmpdir("ladtalk-enroll-")
            dl = out_dir / f"{name}.safetensors"
            shutil.copy2(path / "model.safetensors", dl)
            shutil.copy2(path / "config.json", out_dir / f"{name}.config.json")
            return md, meta, str(dl)

    def identities() -> List[Dict[str, Any]]:
        """Enrolled and shipped identities with their training metrics."""
        return sup.identities_summary()

    def status() -> Dict[str, Any]:
        """Device, checkpoint availability (and how to supply missing ones), limits."""
        return st.status_dict()

    return {"generate": generate, "robustness": robustness, "enroll": enroll,
            "identities": identities, "status": status}


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ============================================================================ UI
def _load_state(pipeline, wav2lip, device, limits, load_models, enroll_config, enroll_kwargs,
                robustness_kwargs) -> AppState:
    from ladtalk.generation.pipeline import Pipeline
    given_ref = isinstance(wav2lip, (str, os.PathLike))
    injected = pipeline is not None or (wav2lip is not None and not given_ref)
    if pipeline is None:
        pipeline = Pipeline(wav2lip, device=device)
    statuses = sup.checkpoint_status(overrides={"wav2lip": wav2lip} if given_ref else None) \
        if load_models else []
    if injected:  # a test / custom model stands in for the default checkpoint
        statuses = [s if s.name != "wav2lip" else
                    sup.CheckpointStatus("wav2lip", s.purpose, True, "model given to create_demo")
                    for s in statuses]
    wav2lip_error = None
    if load_models or injected:
        try:
            pipeline.lipsyncer  # load once, at startup
        except LadTalkError as exc:
            wav2lip_error = str(exc)
    st = AppState(key=next(_KEYS), pipeline=pipeline, limits=limits,
                  device=str(pipeline.device), statuses=statuses, wav2lip_error=wav2lip_error,
                  enroll_config=enroll_config, enroll_kwargs=dict(enroll_kwargs or {}),
                  robustness_kwargs=dict(APP_ROBUSTNESS_KWARGS if robustness_kwargs is None
                                         else robustness_kwargs))
    _STATES[st.key] = st
    return st


def create_demo(pipeline: Any = None, wav2lip: Any = None, *, device: Any = None,
                limits: Optional[sup.AppLimits] = None, max_video_seconds: Optional[float] = None,
                max_audio_seconds: Optional[float] = None, enroll_budget: Optional[float] = None,
                load_models: bool = True, enroll_config: Optional[str] = None,
                enroll_kwargs: Optional[Dict[str, Any]] = None,
                robustness_kwargs: Optional[Dict[str, Any]] = None,
                queue_size: int = 16, cache_examples: bool = True) -> gr.Blocks:
    """Build the app (call ``.launch()`` on the result).

    ``pipeline``: a ready :class:`ladtalk.generation.pipeline.Pipeline` (tests), else one is built from
    ``wav2lip`` (a checkpoint reference or a ``Wav2Lip`` module; None = the default
    checkpoint, resolved at startup) on ``device``. ``load_models``: resolve the checkpoints
    and load Wav2Lip now; a failure becomes the status panel and a ``gr.Error`` on Generate,
    never an exception here. ``max_video_seconds`` / ``max_audio_seconds`` / ``enroll_budget``
    (default enrollment budget, s) override fields of ``limits``. ``enroll_config``: SOVQAE
    config for new identities (None: ``cpu`` on CPU, ``base`` on CUDA); ``enroll_kwargs``
    and ``robustness_kwargs``: extra keyword arguments for
    :func:`ladtalk.enrollment.enroll.enroll` and :func:`ladtalk.analysis.robustness.evaluate_robustness`.
    ``queue_size``: most requests waiting in the queue. ``cache_examples``: cache the
    Robustness examples lazily (on first use).
    """
    if limits is None:
        chunk = (max(30.0, sup.AppLimits().gpu_cap_seconds - sup.ENROLL_OVERHEAD_SECONDS)
                 if ZERO_GPU else None)
        limits = sup.AppLimits(enroll_chunk_seconds=chunk)
    upd: Dict[str, Any] = {}
    if max_video_seconds is not None:
        upd["max_video_seconds"] = float(max_video_seconds)
    if max_audio_seconds is not None:
        upd["max_audio_seconds"] = float(max_audio_seconds)
    if enroll_budget is not None:
        upd["enroll_budget_default"] = float(enroll_budget)
        upd["enroll_budget_max"] = max(limits.enroll_budget_max, float(enroll_budget))
    limits = replace(limits, **upd)
    st = _load_state(pipeline, wav2lip, device, limits, load_models, enroll_config,
                     enroll_kwargs, robustness_kwargs)
    return _build_ui(st, queue_size, cache_examples)


INTRO = """# LaDTalk
Lip-synced talking heads that keep a person's own detail: **Wav2Lip** makes the mouth move
with the speech (96 px, blurry), then **SOVQAE**, a VQGAN trained on one person (an
*identity*), maps the blurry face onto that person's codebook ("latent denoising").
**Generate** a video, check how well an identity **restores** degraded faces (with the
paper's Theorem 3.3 certificate), or **enroll** a new identity from a short video.
"""


def _example(name: str) -> Optional[str]:
    p = EXAMPLES / name
    return str(p) if p.is_file() else None


def _build_ui(st: AppState, queue_size: int = 16, cache_examples: bool = True) -> gr.Blocks:
    h = make_handlers(st)
    lim = st.limits
    choices = sup.identity_choices()
    rob_choices = sup.identity_choices(include_none=False)
    missing = [s.name for s in st.statuses if not s.ok] + (
        ["wav2lip"] if st.wav2lip_error and all(s.name != "wav2lip" for s in st.statuses) else [])
    gpu_kw = dict(concurrency_id="gpu", concurrency_limit=1)

    with gr.Blocks(title="LaDTalk") as demo:
        gr.Markdown(INTRO)
        with gr.Accordion("Status: device and checkpoints"
                          + (f" - missing: {', '.join(missing)}" if missing else ""),
                          open=bool(missing)):
            gr.Markdown(sup.status_markdown(st.statuses, st.wav2lip_error,
                                                        st.device, ZERO_GPU))

        # ------------------------------------------------------------------ Generate
        with gr.Tab("Generate", id="generate"):
            if st.wav2lip_error:
                gr.Markdown("**Generate is unavailable: the Wav2Lip checkpoint is missing** "
                            "(see Status above for how to supply it). The Robustness and "
                            "Enroll tabs work without it.")
            with gr.Row():
                with gr.Column():
                    g_face = gr.File(label="Face video or photo", file_types=["video", "image"],
                                     type="filepath")
                    g_audio = gr.Audio(label="Speech", sources=["upload", "microphone"],
                                       type="filepath")
                    # default: Wav2Lip only. An identity is one person's codebook; on anyone
                    # else's face it paints that person's detail, so it is never preselected
                    # (the astronaut example row picks the shipped demo for its own face)
                    g_identity = gr.Dropdown(choices=choices, value=sup.NONE_IDENTITY,
                                             allow_custom_value=True,
                                             label="Identity (stage 2)",
                                             info="default: none = Wav2Lip only. Pick the "
                                                  "identity enrolled from this person (or tick "
                                                  "'Enroll from this video first'); an identity "
                                                  "of someone else is refused. The shipped demo "
                                                  "is the astronaut of the examples")
                    with gr.Row():
                        g_enroll = gr.Checkbox(label="Enroll from this video first", value=False,
                                               info="fine-tune an identity on the uploaded "
                                                    "video itself, then generate")
                        g_enroll_s = gr.Slider(1, lim.enroll_budget_max,
                                               value=lim.enroll_budget_default, step=1,
                                               label="Enrollment time budget (s)")
                    g_compare = gr.Checkbox(label="Also render the Wav2Lip-only baseline "
                                                  "(side by side)", value=True)
                    with gr.Accordion("Advanced options", open=False):
                        with gr.Row():
                            g_pt = gr.Number(0, label="pad top", precision=0)
                            g_pb = gr.Number(10, label="pad bottom", precision=0)
                            g_pl = gr.Number(0, label="pad left", precision=0)
                            g_pr = gr.Number(0, label="pad right", precision=0)
                        with gr.Row():
                            g_smooth = gr.Checkbox(label="Temporal box smoothing", value=True)
                            g_det = gr.Dropdown(DETECTORS, value="auto", label="Face detector")
                            g_loop = gr.Dropdown(LOOPS, value="pingpong",
                                                 label="When the audio is longer than the video")
                        with gr.Row():
                            g_box = gr.Textbox("", label="Fixed face box Y1 Y2 X1 X2 (optional)",
                                               placeholder="empty = detect the face")
                            g_rf = gr.Number(1, label="resize factor", precision=0, minimum=1)
                        g_strength = gr.Textbox(
                            "", label="Restore strength (optional)",
                            placeholder="empty = calibrated for the identity at enrollment",
                            info="S or LOW,HIGH in [0, 2]: how much of the identity's "
                                 "restoration to use in the band Wav2Lip's 96 px face has "
                                 "(LOW) and in the detail above it (HIGH); 1 = the identity's "
                                 "decode, 0 = Wav2Lip's face unchanged")
                    g_btn = gr.Button("Generate", variant="primary",
                                      interactive=st.wav2lip_error is None)
                with gr.Column():
                    with gr.Row():
                        g_out = gr.Video(label="LaDTalk (Wav2Lip + SOVQAE)")
                        g_base = gr.Video(label="Wav2Lip only")
                    g_report = gr.JSON(label="Report")
            g_inputs = [g_face, g_audio, g_identity, g_enroll, g_enroll_s, g_compare, g_pt, g_pb,
                        g_pl, g_pr, g_smooth, g_det, g_loop, g_box, g_rf, g_strength]
            g_btn.click(h["generate"], g_inputs, [g_out, g_base, g_report],
                        api_name="generate", **gpu_kw)
            gen_examples = [[_example("astronaut.mp4"), _example("hello.wav"),
                             sup.DEMO_IDENTITY],
                            [_example("astronaut.png"), _example("demo_sentence.wav"),
                             sup.NONE_IDENTITY]]
            gen_examples = [e for e in gen_examples if all(e)]
            if gen_examples:
                # cached lazily (on first use) only when Wav2Lip is there to make them
                can_cache = bool(cache_examples) and st.wav2lip_error is None
                gr.Examples(gen_examples, [g_face, g_audio, g_identity],
                            outputs=[g_out, g_base, g_report] if can_cache else None,
                            fn=(lambda face, audio, ident: h["generate"](face, audio, ident))
                            if can_cache else None,
                            cache_examples=can_cache, cache_mode="lazy" if can_cache else None,
                            label="Examples (public-domain face, synthetic speech)")

        # ------------------------------------------------------------------ Robustness
        with gr.Tab("Robustness", id="robustness"):
            gr.Markdown("Degrade a face the way Wav2Lip's output is degraded (blur, noise, "
                        "down to 96 px and back up), restore it with an identity's SOVQAE, "
                        "and see how much comes back. Use a picture of the identity's own "
                        "person: the identity preselected here (the first enrolled one, else "
                        "the shipped `demo`) is only a demonstration on its own face, and the "
                        "demo identity was trained on the astronaut example.")
            with gr.Row():
                with gr.Column():
                    r_image = gr.Image(label="Face image", type="filepath", format="png", elem_id="rob-image",
                                       sources=["upload", "clipboard"])
                    with gr.Accordion("... or a frame of a video", open=False):
                        r_video = gr.Video(label="Video", sources=["upload"])
                        r_time = gr.Number(0.0, label="frame at (s)")
                    r_identity = gr.Dropdown(choices=rob_choices,
                                             value=sup.default_identity(rob_choices),
                                             allow_custom_value=True, label="Identity")
                    r_blur = gr.Slider(0, 6, value=2.0, step=0.25, label="Blur sigma (px)")
                    r_noise = gr.Slider(0, 0.4, value=0.1, step=0.01,
                                        label="Noise sigma ([0,1] pixel scale)")
                    r_down = gr.Slider(0, 120, value=96, step=8,
                                       label="Down-up size (px, 0 = off; Wav2Lip works at 96)")
                    r_sweep = gr.Radio(list(SWEEPS), value="blur",
                                       label="Plot PSNR against the strength of")
                    with gr.Row():
                        r_cert = gr.Checkbox(label="Compute the Theorem 3.3 certificate",
                                             value=True)
                        r_is_crop = gr.Checkbox(label="The picture is already a face crop",
                                                value=False)
                    r_det = gr.Dropdown(DETECTORS, value="auto", label="Face detector")
                    r_btn = gr.Button("Degrade and restore", variant="primary", elem_id="rob-run")
                with gr.Column():
                    r_gallery = gr.Gallery(label="Clean / degraded / restored", columns=3, elem_id="rob-gallery",
                                           height="auto", object_fit="contain")
                    r_table = gr.Dataframe(label="PSNR / SSIM against the clean crop", elem_id="rob-table",
                                           interactive=False)
                    r_plot = gr.LinePlot(x="strength", y="PSNR (dB)", color="curve",
                                         label="PSNR vs degradation strength", elem_id="rob-plot",
                                         x_title="sigma (blur, noise) or crop px / size "
                                                 "(down-up)",
                                         y_title="PSNR (dB)", height=280,
                                         caption="red: degraded input, green: restored by "
                                                 "the SOVQAE (PSNR against the clean crop)",
                                         color_map={"degraded": "#d62728",
                                                    "restored": "#2ca02c"})
                    r_cert_md = gr.Markdown(label="Certificate", elem_id="rob-cert")
                    r_json = gr.JSON(label="Raw numbers")
            r_inputs = [r_image, r_video, r_time, r_identity, r_blur, r_noise, r_down, r_sweep,
                        r_cert, r_is_crop, r_det]
            r_outputs = [r_gallery, r_table, r_plot, r_cert_md, r_json]
            r_btn.click(h["robustness"], r_inputs, r_outputs, api_name="robustness", **gpu_kw)
            if _example("astronaut.png") and any(v == sup.DEMO_IDENTITY for _, v in rob_choices):
                gr.Examples([[_example("astronaut.png"), sup.DEMO_IDENTITY, 2.0, 0.1, 96]],
                            [r_image, r_identity, r_blur, r_noise, r_down],
                            outputs=r_outputs,
                            fn=lambda img, ident, b, n, d: h["robustness"](
                                img, None, 0.0, ident, b, n, d, "blur", True, False, "auto"),
                            cache_examples=bool(cache_examples), cache_mode="lazy",
                            label="Example: the shipped demo identity")

        # ------------------------------------------------------------------ Enroll
        with gr.Tab("Enroll", id="enroll"):
            gr.Markdown("Train an identity (SOVQAE) on a video of one person. Ten seconds to a "
                        "few minutes of frontal, well-lit video work best; the last 10 % of "
                        "the frames are held out to measure quality. The identity works at the "
                        "face's own size (256 px for faces of 200 px or more, else 128 px) and "
                        "learns to restore exactly what Wav2Lip produces (the face reduced to "
                        "96 px and softened). At the end, how much of its restoration to mix "
                        "into Wav2Lip's face is calibrated on the held-out frames, so that it "
                        "never does worse than Wav2Lip alone there, and the result shows "
                        "LaDTalk against the Wav2Lip proxy on those frames. Running it again "
                        "with the same name continues the training.")
            with gr.Row():
                with gr.Column():
                    e_video = gr.Video(label="Video of the person", sources=["upload"])
                    e_name = gr.Textbox(label="Identity name", placeholder="e.g. alice")
                    e_budget = gr.Slider(1, lim.enroll_budget_max,
                                         value=lim.enroll_budget_default, step=1,
                                         label="Training time budget (s)")
                    with gr.Row():
                        e_config = gr.Dropdown(ENROLL_CONFIGS, value="auto",
                                               label="Model config",
                                               info="auto: cpu on CPU, base on GPU")
                        e_det = gr.Dropdown(DETECTORS, value="auto", label="Face detector")
                        e_fresh = gr.Checkbox(label="Start over (ignore an existing identity "
                                                    "of this name)", value=False)
                    with gr.Accordion("Push to your own Hugging Face Hub repo (optional)",
                                      open=False):
                        e_repo = gr.Textbox("", label="Repository", placeholder="your-user/ladtalk-alice")
                        e_token = gr.Textbox("", label="Write token (used once, never stored)",
                                             type="password")
                        e_private = gr.Checkbox(label="Private repository", value=True)
                    e_btn = gr.Button("Enroll", variant="primary")
                with gr.Column():
                    e_md = gr.Markdown(label="Summary")
                    e_meta = gr.JSON(label="Identity metrics (meta.json)")
                    e_file = gr.File(label="Download the identity weights (safetensors)")
            e_inputs = [e_video, e_name, e_budget, e_config, e_det, e_fresh, e_repo, e_token,
                        e_private]
            e_event = e_btn.click(h["enroll"], e_inputs, [e_md, e_meta, e_file],
                                  api_name="enroll", **gpu_kw)
            if _example("astronaut.mp4"):
                gr.Examples([[_example("astronaut.mp4"), "astronaut", 60]],
                            [e_video, e_name, e_budget],
                            cache_examples=False,  # enrolling writes an identity: never cached
                            label="Example (public-domain face)")

        # ------------------------------------------------------------------ pickers + API
        def refresh_pickers(g_value, r_value):
            c, rc = sup.identity_choices(), sup.identity_choices(include_none=False)
            gv = g_value if g_value in [v for _, v in c] else sup.NONE_IDENTITY
            rv = r_value if r_value in [v for _, v in rc] else sup.default_identity(rc)
            return gr.update(choices=c, value=gv), gr.update(choices=rc, value=rv)

        e_event.success(refresh_pickers, [g_identity, r_identity], [g_identity, r_identity],
                        api_visibility="private", queue=False)
        demo.load(refresh_pickers, [g_identity, r_identity], [g_identity, r_identity],
                  api_visibility="private", queue=False)
        gr.api(h["identities"], api_name="identities")
        gr.api(h["status"], api_name="status")
    demo.queue(max_size=queue_size, default_concurrency_limit=4)
    return demo


def main(argv: Optional[List[str]] = None) -> None:  # pragma: no cover - manual entry point
    ap = argparse.ArgumentParser(description="LaDTalk Gradio app")
    ap.add_argument("--host", default=None, help="server name (default: Gradio's, or "
                    "$GRADIO_SERVER_NAME)")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--share", action="store_true")
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    ap.add_argument("--wav2lip", default=None, help="Wav2Lip checkpoint (default: "
                    "$LADTALK_WAV2LIP or the Hub file)")
    ap.add_argument("--max-video-seconds", type=float, default=None)
    ap.add_argument("--max-audio-seconds", type=float, default=None)
    ap.add_argument("--enroll-budget", type=float, default=None,
                    help="default enrollment time budget (s)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo = create_demo(wav2lip=args.wav2lip, device=args.device,
                       max_video_seconds=args.max_video_seconds,
                       max_audio_seconds=args.max_audio_seconds,
                       enroll_budget=args.enroll_budget)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                show_error=True)


if __name__ == "__main__":  # pragma: no cover
    main()
