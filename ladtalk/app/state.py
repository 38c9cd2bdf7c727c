"""What the handlers of one app instance share: models (loaded once), limits, startup status.

States live in a module-level registry addressed by ``key``, so the ``@spaces.GPU`` functions
(which ZeroGPU runs in a forked worker with pickled arguments) receive only plain values.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import gradio as gr

from ladtalk.app.limits import AppLimits
from ladtalk.app.status import CheckpointStatus, checkpoint_status
from ladtalk.app.tempspace import TempSpace, sweep_stale_temp
from ladtalk.errors import LadTalkError
from ladtalk.generation.pipeline import Pipeline
from ladtalk.identities.owners import OwnerPolicy, expire_identities
from ladtalk.identities.store import sweep_store

log = logging.getLogger("ladtalk.app")

#: ``evaluate_robustness`` arguments of the app: the few-seconds "app" certificate cost.
APP_ROBUSTNESS_KWARGS = {"cost": "app"}


@dataclass
class AppState:
    """Everything the handlers of one app share."""

    key: int
    pipeline: Any
    limits: AppLimits
    device: str
    statuses: List[CheckpointStatus]
    wav2lip_error: Optional[str]
    enroll_config: Optional[str] = None
    enroll_kwargs: Dict[str, Any] = field(default_factory=dict)
    robustness_kwargs: Dict[str, Any] = field(default_factory=dict)
    enroll_lock: threading.Lock = field(default_factory=threading.Lock)
    #: a public app (a Space): identities belong to their session or user
    public: bool = False
    policy: OwnerPolicy = field(default_factory=OwnerPolicy)
    #: per-session temp folders for the files handed to Gradio
    space: TempSpace = field(default_factory=TempSpace)


_STATES: Dict[int, AppState] = {}
_KEYS = itertools.count(1)


def get_state(key: int) -> AppState:
    try:
        return _STATES[key]
    except KeyError:  # pragma: no cover - only if a demo object outlives its state
        raise gr.Error("the app state was lost; reload the page") from None


def gpu_cap(key: int) -> float:
    """The per-call GPU cap of a state (120 s for an unknown key)."""
    st = _STATES.get(key)
    return st.limits.gpu_cap_seconds if st else 120.0


def startup_sweep(policy: Optional[OwnerPolicy], public: bool) -> None:
    """Remove what killed runs left behind: stale temp folders, ``.tmp-*`` / ``.old-*`` in the
    identity store, and (public mode) expired session identities."""
    gone = [str(p) for p in sweep_stale_temp()] + [str(p) for p in sweep_store()]
    if public and policy is not None:
        gone += expire_identities(policy)
    if gone:
        log.info("startup sweep removed %d leftovers: %s", len(gone), ", ".join(gone[:8]))


def load_state(pipeline, wav2lip, device, limits: AppLimits, load_models: bool,
               enroll_config, enroll_kwargs, robustness_kwargs, public: bool = False,
               policy: Optional[OwnerPolicy] = None) -> AppState:
    """Build the pipeline (unless given), resolve the checkpoints and load Wav2Lip once; a
    failure is recorded for the status panel, never raised."""
    policy = policy or OwnerPolicy()
    startup_sweep(policy, public)
    given_ref = isinstance(wav2lip, (str, os.PathLike))
    injected = pipeline is not None or (wav2lip is not None and not given_ref)
    if pipeline is None:
        pipeline = Pipeline(wav2lip, device=device)
    statuses = checkpoint_status(overrides={"wav2lip": wav2lip} if given_ref else None) \
        if load_models else []
    if injected:  # a test / custom model stands in for the default checkpoint
        statuses = [s if s.name != "wav2lip" else
                    CheckpointStatus("wav2lip", s.purpose, True, "model given to create_demo")
                    for s in statuses]
    wav2lip_error = None
    if load_models or injected:
        try:
            _ = pipeline.lipsyncer  # load once, at startup
        except LadTalkError as exc:
            wav2lip_error = str(exc)
    st = AppState(key=next(_KEYS), pipeline=pipeline, limits=limits,
                  device=str(pipeline.device), statuses=statuses, wav2lip_error=wav2lip_error,
                  enroll_config=enroll_config, enroll_kwargs=dict(enroll_kwargs or {}),
                  robustness_kwargs=dict(APP_ROBUSTNESS_KWARGS if robustness_kwargs is None
                                         else robustness_kwargs),
                  public=bool(public), policy=policy)
    _STATES[st.key] = st
    return st
