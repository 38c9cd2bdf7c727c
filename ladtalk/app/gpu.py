"""The model work of each endpoint, as ``@spaces.GPU`` functions with their ``duration``.

Each ``*_duration`` takes exactly the arguments of its GPU function (ZeroGPU calls it so) and
sizes the call from the work, clamped to the per-call cap. Arguments are plain values; the
models come from the app state registered under ``key``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ladtalk.app.limits import enroll_gpu_seconds, generate_gpu_seconds, robustness_gpu_seconds
from ladtalk.app.messages import user_errors
from ladtalk.app.progress import enrollment_reporter, generation_reporter, robustness_reporter
from ladtalk.app.robustness import evaluate_crop
from ladtalk.app.state import get_state, gpu_cap
from ladtalk.app.zerogpu import gpu
from ladtalk.enrollment.enroll import enroll


def generate_duration(key, face, audio, out_dir, options, baseline, n_frames, n_src,
                      progress=None) -> int:
    return generate_gpu_seconds(n_frames, n_src, options.identity is not None, baseline,
                                gpu_cap(key))


@gpu(duration=generate_duration)
def generate_on_gpu(key, face, audio, out_dir, options, baseline, n_frames, n_src,
                    progress=None):
    """One generation (LaDTalk first), then the Wav2Lip-only baseline on the same face track;
    returns ``{"ladtalk": result, "baseline": result}``."""
    st = get_state(key)
    passes = [("ladtalk", options)]
    if baseline:
        passes.append(("baseline", replace(options, identity=None)))
    results = {}
    track = None
    with user_errors():
        for i, (name, opts) in enumerate(passes):
            label = "LaDTalk (Wav2Lip + SOVQAE)" if opts.identity is not None else "Wav2Lip"
            report = generation_reporter(progress, i, len(passes), label)
            out = Path(out_dir) / f"{name}.mp4"
            results[name] = st.pipeline.run(face, audio, out, opts, progress=report,
                                            track=track)
            track = results[name].track
    return results


def enroll_duration(key, video, name, seconds, config, detector, fresh, progress=None,
                    offset=0.0, total=None) -> int:
    return enroll_gpu_seconds(seconds, gpu_cap(key))


@gpu(duration=enroll_duration)
def enroll_on_gpu(key, video, name, seconds, config, detector, fresh, progress=None,
                  offset=0.0, total=None) -> str:
    """One enrollment chunk (``seconds`` of training); resumes ``name`` when it exists."""
    st = get_state(key)
    on_progress = enrollment_reporter(progress, name, seconds, offset, total or seconds)
    with user_errors():
        path = enroll(video, name, seconds=seconds, config=config, detector=detector,
                      device=st.pipeline.device, on_progress=on_progress, fresh=fresh,
                      show_progress=False, **st.enroll_kwargs)
    return str(path)


def robustness_duration(key, crops01, identity, specs, sweep_specs, certificate,
                        progress=None) -> int:
    return robustness_gpu_seconds(certificate, gpu_cap(key))


@gpu(duration=robustness_duration)
def robustness_on_gpu(key, crops01, identity, specs, sweep_specs, certificate,
                      progress=None):
    """Degrade, restore and measure one face crop; returns the report's JSON and the
    pictures to show (same degradations, same noise seed, same restorer)."""
    st = get_state(key)
    with user_errors():
        restorer, _ = st.pipeline.restorer_for(identity)
        return evaluate_crop(restorer, crops01, specs, sweep_specs, certificate,
                             robustness_reporter(progress, certificate), st.robustness_kwargs)
