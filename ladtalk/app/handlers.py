"""The request handlers of one app instance: the UI, the API and MCP call the same functions.

Their parameter names, defaults, order and docstrings are the public API of the endpoints
(the docstrings are also the MCP tool descriptions: one ``name: description`` line per
argument). Every handler works out who is calling (:mod:`ladtalk.app.session`): on a public
app, identities belong to their session or logged-in user.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import gradio as gr

from ladtalk._util.choices import DEFAULT_DETECTOR, DEFAULT_LOOP, DEFAULT_PADS
from ladtalk.app.endpoints import Caller, enroll_request, generate_request, robustness_request
from ladtalk.app.messages import user_errors
from ladtalk.app.pickers import (
    DEMO_IDENTITY,
    NONE_IDENTITY,
    default_identity,
    identities_summary,
    identity_choices,
    keep_or_default,
)
from ladtalk.app.robustness import SWEEP_AXES
from ladtalk.app.session import caller_access, session_key
from ladtalk.app.state import AppState
from ladtalk.app.status import status_dict
from ladtalk.identities.owners import end_session

PAD_TOP, PAD_BOTTOM, PAD_LEFT, PAD_RIGHT = DEFAULT_PADS


class Handlers:
    """The handlers of one app state; each public method is one endpoint (its name is the
    endpoint's and MCP tool's name)."""

    def __init__(self, st: AppState):
        self.st = st

    def caller(self, request, profile) -> Caller:
        return Caller(caller_access(self.st.public, request, profile), session_key(request))

    def generate(self, face, audio, identity=NONE_IDENTITY, enroll_first=False,
                 enroll_seconds=None, compare=True, pad_top=PAD_TOP, pad_bottom=PAD_BOTTOM,
                 pad_left=PAD_LEFT, pad_right=PAD_RIGHT, smooth=True,
                 detector=DEFAULT_DETECTOR, loop=DEFAULT_LOOP, box="", resize_factor=1,
                 restore_strength="", progress=gr.Progress(),
                 request: Optional[gr.Request] = None,
                 profile: Optional[gr.OAuthProfile] = None):
        """Lip-sync a face video or photo to a speech track (Wav2Lip), optionally restoring
        the face with an identity's SOVQAE (LaDTalk). An identity that does not match the
        face is refused.

        Args:
            face: the face video (mp4, mov, ...) or photo (png, jpg) to animate.
            audio: the speech track (wav, mp3, ...; at most the app's audio limit).
            identity: an identity name from the identities tool, or "none (Wav2Lip only)".
            enroll_first: fine-tune an identity on the face video itself first, then use it.
            enroll_seconds: training time budget in seconds for enroll_first.
            compare: also render the Wav2Lip-only video beside the LaDTalk one.
            pad_top: extra pixels above the detected face box.
            pad_bottom: extra pixels below the detected face box (include the chin).
            pad_left: extra pixels left of the detected face box.
            pad_right: extra pixels right of the detected face box.
            smooth: smooth the face box over time.
            detector: face detector, auto, s3fd or dlib.
            loop: what to do when the audio is longer than the video, loop, pingpong or hold.
            box: a fixed face box "Y1 Y2 X1 X2" in pixels instead of detection (empty: detect).
            resize_factor: shrink the input frames by this integer factor first.
            restore_strength: "S" or "LOW,HIGH" in [0, 2]; empty: the identity's calibration.

        Returns:
            the LaDTalk video, the Wav2Lip-only video (or None), and a report with timings.
        """
        opts = dict(detector=detector, loop=loop, box=box,
                    pads=(pad_top, pad_bottom, pad_left, pad_right), smooth=smooth,
                    resize_factor=resize_factor, restore_strength=restore_strength)
        with user_errors():
            who = self.caller(request, profile)
            return generate_request(self.st, who, face, audio, identity, enroll_first,
                                    enroll_seconds, compare, opts, progress)

    def robustness(self, image=None, video=None, frame_time=0.0, identity=DEMO_IDENTITY,
                   blur=2.0, noise=0.1, down=96, sweep="blur", certificate=True,
                   is_crop=False, detector=DEFAULT_DETECTOR, progress=gr.Progress(),
                   request: Optional[gr.Request] = None,
                   profile: Optional[gr.OAuthProfile] = None):
        """Degrade a face (blur, noise, down-up) and restore it with an identity's SOVQAE;
        measures PSNR / SSIM against the clean face and the paper's Theorem 3.3 certificate.

        Args:
            image: a picture of the identity's person (or give video and frame_time).
            video: a video of the person; the frame at frame_time is used.
            frame_time: seconds into the video for the frame to use.
            identity: the identity name (see the identities tool); "demo" is the shipped one.
            blur: Gaussian blur sigma in pixels (0: none).
            noise: Gaussian noise standard deviation on [0, 1] pixels (0: none).
            down: reduce the face to this many pixels and back up (0: none).
            sweep: the degradation of the PSNR-vs-strength plot, blur, noise or down.
            certificate: also compute the Theorem 3.3 certificate (a few seconds more).
            is_crop: the picture is already a face crop (skip face detection).
            detector: face detector, auto, s3fd or dlib.

        Returns:
            pictures, a metrics table, the plot data, the certificate and the raw numbers.
        """
        with user_errors():
            who = self.caller(request, profile)
            out = list(robustness_request(self.st, who, image, video, frame_time, identity,
                                          (blur, noise, down), sweep, certificate, is_crop,
                                          detector, progress))
            out[2] = gr.LinePlot(value=out[2], x_title=SWEEP_AXES[sweep])  # sweep checked
            return tuple(out)

    def enroll(self, video, name, seconds=None, config="auto", detector=DEFAULT_DETECTOR,
               fresh=False, hub_repo="", hub_token="", hub_private=True,
               progress=gr.Progress(), request: Optional[gr.Request] = None,
               profile: Optional[gr.OAuthProfile] = None):
        """Enroll a new identity (train an SOVQAE on one person's video) within a time
        budget, or continue your own identity of that name. On a public app it is private
        to you.

        Args:
            video: a video of one person (frontal, well lit; 10 s to a few minutes).
            name: the identity name: letters, digits, "_", "-" or ".".
            seconds: the training time budget in seconds (empty: the app's default).
            config: the model config, auto, cpu or base.
            detector: face detector, auto, s3fd or dlib.
            fresh: start over instead of continuing an existing identity of yours.
            hub_repo: optional Hub repo "user/name" to push the identity to.
            hub_token: a write token for hub_repo, used once and never stored.
            hub_private: make the pushed repo private.

        Returns:
            a summary, the identity's metrics, and its weights (NAME.safetensors).
        """
        token = (hub_token or "").strip()
        with user_errors(token):
            who = self.caller(request, profile)
            return enroll_request(self.st, who, video, name, seconds, config, detector, fresh,
                                  hub_repo, token, hub_private, progress)

    def identities(self, request: Optional[gr.Request] = None,
                   profile: Optional[gr.OAuthProfile] = None) -> List[Dict[str, Any]]:
        """List the identities you can use: the shipped demo, the app's own, and the ones
        you enrolled, with their training metrics.

        Returns:
            one entry per identity: name, shipped, config, steps, holdout PSNR / SSIM.
        """
        return identities_summary(self.caller(request, profile).access)

    def status(self, request: Optional[gr.Request] = None,
               profile: Optional[gr.OAuthProfile] = None) -> Dict[str, Any]:
        """Device, checkpoint availability (and how to supply missing ones), limits, storage."""
        return status_dict(self.st, self.caller(request, profile).access)

    def pickers(self, g_value, r_value, request: Optional[gr.Request] = None,
                profile: Optional[gr.OAuthProfile] = None):
        """Fresh choices for the Generate and Robustness pickers, keeping valid picks."""
        access = self.caller(request, profile).access
        c = identity_choices(access=access)
        rc = identity_choices(include_none=False, access=access)
        return (gr.update(choices=c, value=keep_or_default(g_value, c, NONE_IDENTITY)),
                gr.update(choices=rc, value=keep_or_default(r_value, rc, default_identity(rc))))

    def unload(self, request: Optional[gr.Request] = None) -> None:
        """A session ended: its temp files go, and (public mode) its session identities."""
        key = session_key(request)
        self.st.space.end_session(key)
        if self.st.public and key != "local":
            end_session(key)


#: the endpoints, by name
ENDPOINTS = ("generate", "robustness", "enroll", "identities", "status", "pickers", "unload")


def make_handlers(st: AppState) -> Dict[str, Callable]:
    """``{endpoint name: handler}`` bound to ``st``."""
    h = Handlers(st)
    return {name: getattr(h, name) for name in ENDPOINTS}
