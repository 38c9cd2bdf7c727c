"""``create_demo``: the app with its models, limits and state, ready to ``.launch()``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional

import gradio as gr

from ladtalk.app.limits import ENROLL_OVERHEAD_SECONDS, AppLimits
from ladtalk.app.session import public_mode
from ladtalk.app.state import load_state
from ladtalk.app.ui import APP_CSS, build_ui
from ladtalk.app.zerogpu import ZERO_GPU
from ladtalk.identities.owners import OwnerPolicy


def app_limits(limits: Optional[AppLimits] = None, max_video_seconds: Optional[float] = None,
               max_audio_seconds: Optional[float] = None,
               enroll_budget: Optional[float] = None) -> AppLimits:
    """``limits`` (default: enrollment in GPU-sized chunks on ZeroGPU) with the overrides."""
    if limits is None:
        chunk = (max(30.0, AppLimits().gpu_cap_seconds - ENROLL_OVERHEAD_SECONDS)
                 if ZERO_GPU else None)
        limits = AppLimits(enroll_chunk_seconds=chunk)
    upd: Dict[str, Any] = {}
    if max_video_seconds is not None:
        upd["max_video_seconds"] = float(max_video_seconds)
    if max_audio_seconds is not None:
        upd["max_audio_seconds"] = float(max_audio_seconds)
    if enroll_budget is not None:
        upd["enroll_budget_default"] = float(enroll_budget)
        upd["enroll_budget_max"] = max(limits.enroll_budget_max, float(enroll_budget))
    return replace(limits, **upd)


def create_demo(pipeline: Any = None, wav2lip: Any = None, *, device: Any = None,
                limits: Optional[AppLimits] = None, max_video_seconds: Optional[float] = None,
                max_audio_seconds: Optional[float] = None, enroll_budget: Optional[float] = None,
                load_models: bool = True, enroll_config: Optional[str] = None,
                enroll_kwargs: Optional[Dict[str, Any]] = None,
                robustness_kwargs: Optional[Dict[str, Any]] = None,
                queue_size: int = 16, cache_examples: bool = True,
                public: Optional[bool] = None, policy: Optional[OwnerPolicy] = None
                ) -> gr.Blocks:
    """Build the app (call ``.launch()`` on the result).

    ``pipeline``: a ready :class:`~ladtalk.generation.pipeline.Pipeline`, else one built from
    ``wav2lip`` (a checkpoint reference or a ``Wav2Lip`` module; None: the default) on
    ``device``. ``load_models``: resolve the checkpoints and load Wav2Lip now (a failure
    becomes the status panel, never an exception). ``enroll_kwargs`` / ``robustness_kwargs``
    go to ``enroll`` / ``evaluate_robustness``. ``public``: a public app where identities
    belong to their session or logged-in user (None: on a Space, or ``LADTALK_PUBLIC=1``);
    ``policy``: its storage caps.
    """
    limits = app_limits(limits, max_video_seconds, max_audio_seconds, enroll_budget)
    st = load_state(pipeline, wav2lip, device, limits, load_models, enroll_config,
                    enroll_kwargs, robustness_kwargs, public_mode(public), policy)
    return build_ui(st, queue_size, cache_examples)


def launch_options(demo: gr.Blocks) -> Dict[str, Any]:
    """``launch()`` arguments of the app: its style sheet, and the limits (uploads over the
    size limit are refused by Gradio before they reach its cache)."""
    st = getattr(demo, "ladtalk_state", None)
    if st is None:
        return {}
    return {"max_file_size": int(st.limits.max_upload_mb * 1e6), "css": APP_CSS}
