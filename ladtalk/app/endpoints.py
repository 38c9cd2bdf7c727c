"""What each endpoint does: check every input first, then call the package (GPU work through
:mod:`ladtalk.app.gpu`), then present the result."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from ladtalk._util.choices import DETECTORS, ENROLL_CONFIGS, LOOP_POLICIES
from ladtalk.app.gpu import enroll_on_gpu, generate_on_gpu, robustness_on_gpu
from ladtalk.app.limits import (
    check_audio_input,
    check_budget,
    check_choice,
    check_enroll_video,
    check_face_input,
    check_generate_fits,
    enroll_chunks,
    generate_gpu_seconds,
    parse_box,
    parse_pads,
    parse_resize_factor,
)
from ladtalk.app.messages import user_message
from ladtalk.app.pickers import check_identity, default_session_identity
from ladtalk.app.presenters import (
    certificate_md,
    generate_outputs,
    identity_summary_md,
    robustness_gallery,
    robustness_plot,
    robustness_raw,
    robustness_table,
)
from ladtalk.app.progress import crop_reporter
from ladtalk.app.robustness import (
    degradation_specs,
    face_crop,
    frame_from_inputs,
    identity_resolution,
    plot_sweep,
)
from ladtalk.app.state import AppState
from ladtalk.enrollment import prepare_crops
from ladtalk.errors import CheckpointError, InputError
from ladtalk.generation.options import GenerateOptions
from ladtalk.identities.meta import load_meta
from ladtalk.identities.owners import Access, claim, release, touch
from ladtalk.identities.publish import publish_identity
from ladtalk.identities.store import validate_name
from ladtalk.media.resample import to_tensor01
from ladtalk.models.sovqae import default_config_name

#: the ``enroll_kwargs`` of ``create_demo`` that also decide which crops enroll uses
PREPARE_KWARGS = ("out", "resolution", "init", "train_overrides")


@dataclass(frozen=True)
class Caller:
    """Who is calling: what they may do with identities, and their temp-space session."""

    access: Access
    session: str = "local"


def _use(name: Optional[str]) -> Optional[str]:
    if name is not None:
        touch(name)
    return name


# ---------------------------------------------------------------------------- generate
def generate_options(detector, loop, box, pads, smooth, resize_factor,
                     restore_strength) -> GenerateOptions:
    """The checked :class:`GenerateOptions` of the Generate tab's settings."""
    check_choice(detector, DETECTORS, "face detector")
    check_choice(loop, LOOP_POLICIES, "loop policy")
    rf = parse_resize_factor(resize_factor)
    return GenerateOptions(detector=detector, box=parse_box(box), pads=parse_pads(*pads),
                           smooth=bool(smooth), loop=loop, resize_factor=rf,
                           restore_strength=restore_strength).validate()


def generate_request(st: AppState, who: Caller, face, audio, identity, enroll_first,
                     enroll_seconds, compare, opts: Dict[str, Any], progress):
    """Lip-sync ``face`` to ``audio`` (optionally enrolling from ``face`` first) and render
    the Wav2Lip-only baseline beside it; ``opts``: :func:`generate_options` arguments."""
    limits = st.limits
    if st.wav2lip_error:
        raise CheckpointError("Generate needs the Wav2Lip checkpoint, which is not "
                              f"available: {st.wav2lip_error}")
    info = check_face_input(face, limits)
    audio_s = check_audio_input(audio, limits)
    options = generate_options(**opts)
    if enroll_first:
        if info.is_image:
            raise InputError("'enroll from this video first' needs a video of the "
                             "person, but the face input is a photo; untick it or "
                             "upload a video")
        budget = check_budget(enroll_seconds or limits.enroll_budget_default, limits)
        check_enroll_video(face, limits, info)
        ident = default_session_identity(face, who.access.owner)
    else:
        ident = _use(check_identity(identity, access=who.access))
    fps = 25.0 if info.is_image else float(info.fps or 25.0)
    n_frames = max(1, int(math.floor(audio_s * fps + 0.5)))
    n_src = 1 if info.is_image else max(1, int(round(info.duration * fps)))
    baseline = bool(compare) and ident is not None
    check_generate_fits(n_frames, n_src, ident is not None, baseline, fps,
                        limits.gpu_cap_seconds)
    if enroll_first:
        progress(0.0, desc=f"enrolling identity '{ident}' from this video")
        run_enrollment(st, who, face, ident, budget, None, options.detector, False, progress)
    options.identity = ident
    gpu_s = generate_gpu_seconds(n_frames, n_src, ident is not None, baseline,
                                 limits.gpu_cap_seconds)
    with st.space.call_dir(who.session, "gen-") as out_dir:
        results = generate_on_gpu(st.key, str(face), str(audio), str(out_dir), options,
                                  baseline, n_frames, n_src, progress)
        return generate_outputs(results, gpu_s, ident)


# ---------------------------------------------------------------------------- robustness
def robustness_request(st: AppState, who: Caller, image, video, frame_time, identity,
                       strengths, sweep, certificate, is_crop, detector, progress):
    """Degrade the face of a picture (or a video frame), restore it with an identity, and
    measure; ``strengths``: ``(blur, noise, down)``."""
    ident = _use(check_identity(identity, allow_none=False, access=who.access))
    res_px = identity_resolution(ident)
    specs = degradation_specs(*strengths, res_px)
    sweep_vals, sweep_specs = plot_sweep(sweep, res_px)
    progress(0.05, desc="finding the face")
    frame, label = frame_from_inputs(st.limits, image, video, frame_time)
    crop, box = face_crop(st.pipeline, frame, label, res_px, bool(is_crop), detector or "auto")
    res, images = robustness_on_gpu(st.key, to_tensor01(crop[None]), ident, specs, sweep_specs,
                                    bool(certificate), progress)
    raw = robustness_raw(res, identity=ident, label=label, box=box, resolution=res_px,
                         specs=specs, sweep=sweep, sweep_specs=sweep_specs)
    with st.space.call_dir(who.session, "rob-") as out_dir:
        gallery = robustness_gallery(res, images, out_dir)
    return (gallery, robustness_table(res, specs),
            robustness_plot(res, sweep, sweep_vals, sweep_specs, res_px),
            certificate_md(res.get("certificate"), specs), raw)


# ---------------------------------------------------------------------------- enroll
def prepare_enroll_crops(st: AppState, video: str, name: str, config: Optional[str],
                         detector: str, fresh: bool, progress) -> None:
    """Face detection + crops on the CPU, before any GPU call (cached; enroll reuses them).
    The config default follows the pipeline's device, as ``enroll`` will on the GPU."""
    extra = {k: st.enroll_kwargs[k] for k in PREPARE_KWARGS if k in st.enroll_kwargs}
    prepare_crops(video, name, config or default_config_name(st.pipeline.device), detector,
                  fresh, device="cpu", progress=crop_reporter(progress), **extra)


def run_enrollment(st: AppState, who: Caller, video: str, name: str, budget: float,
                   config: Optional[str], detector: str, fresh: bool, progress) -> Path:
    """Validate, claim the name (public mode), crop on CPU, then train in GPU-sized chunks
    (one chunk off ZeroGPU). A new claim whose enrollment fails is released."""
    config = None if config in (None, "", "auto") else config
    if config is not None:
        check_choice(config, ENROLL_CONFIGS, "model config", "choose")
    check_choice(detector, DETECTORS, "face detector", "choose")
    who.access.check_enroll(name)
    config = config or st.enroll_config
    with st.enroll_lock:  # two enrollments of the same store never interleave
        prev = claim(who.access, name, st.policy)
        try:
            prepare_enroll_crops(st, video, name, config, detector, fresh, progress)
            offset, path = 0.0, None
            for i, secs in enumerate(enroll_chunks(budget, st.limits.enroll_chunk_seconds)):
                path = enroll_on_gpu(st.key, video, name, secs, config, detector,
                                     fresh and i == 0, progress, offset, budget)
                offset += secs
        finally:
            release(name, prev)
    return Path(path)


def _check_hub_args(repo: str, token: str) -> None:
    if repo and not token:
        raise InputError("to push to the Hub, also give a write token for your account "
                         "(it is used once and never stored)")
    if token and not repo:
        raise InputError("a Hub token was given but no repository: enter "
                         "'your-user/your-repo' (or clear the token)")


def _publish_md(path: Path, repo: str, token: str, private: bool) -> str:
    try:
        return f"\n\nPushed to the Hub: {publish_identity(path, repo, token, private)}"
    except Exception as exc:  # noqa: BLE001 - enrollment itself succeeded
        return ("\n\n**Push to the Hub failed** (the identity is saved here): "
                + user_message(exc, [token]))


def enroll_request(st: AppState, who: Caller, video, name, seconds, config, detector, fresh,
                   hub_repo, token, hub_private, progress):
    """Enroll (or continue) an identity, optionally push it to the user's Hub repo; returns
    (summary Markdown, meta.json without its history, the weights to download)."""
    name = (name or "").strip()
    if not name:
        raise InputError("give the identity a name (letters, digits, '_', '-', '.')")
    validate_name(name)
    who.access.check_enroll(name)
    budget = check_budget(seconds if seconds not in (None, "") else
                          st.limits.enroll_budget_default, st.limits)
    check_enroll_video(video, st.limits)
    repo = (hub_repo or "").strip()
    _check_hub_args(repo, token)
    path = run_enrollment(st, who, str(video), name, budget, config, detector or "auto",
                          bool(fresh), progress)
    meta = load_meta(path)
    md = identity_summary_md(meta, name)
    if repo:
        progress(0.99, desc=f"pushing to the Hub repo {repo}")
        md += _publish_md(path, repo, token, bool(hub_private))
    who.access.check_download(name)
    with st.space.call_dir(who.session, "enroll-") as out_dir:  # served to this caller only
        weights = out_dir / f"{name}.safetensors"
        shutil.copy2(path / "model.safetensors", weights)
        shutil.copy2(path / "config.json", out_dir / f"{name}.config.json")
    return md, {k: v for k, v in meta.to_json().items() if k != "history"}, str(weights)

