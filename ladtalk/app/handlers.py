"""The request handlers of one app instance: the UI and the API call the same functions.

Their parameter names, defaults and order are the public API of the endpoints.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import gradio as gr

from ladtalk._util.choices import DEFAULT_DETECTOR, DEFAULT_LOOP, DEFAULT_PADS
from ladtalk.app.endpoints import enroll_request, generate_request, robustness_request
from ladtalk.app.messages import user_errors
from ladtalk.app.pickers import DEMO_IDENTITY, NONE_IDENTITY, identities_summary
from ladtalk.app.state import AppState
from ladtalk.app.status import status_dict

PAD_TOP, PAD_BOTTOM, PAD_LEFT, PAD_RIGHT = DEFAULT_PADS


def make_handlers(st: AppState) -> Dict[str, Callable]:
    """``{endpoint name: handler}`` bound to ``st``."""

    def generate(face, audio, identity=NONE_IDENTITY, enroll_first=False,
                 enroll_seconds=None, compare=True, pad_top=PAD_TOP, pad_bottom=PAD_BOTTOM,
                 pad_left=PAD_LEFT, pad_right=PAD_RIGHT, smooth=True,
                 detector=DEFAULT_DETECTOR, loop=DEFAULT_LOOP, box="", resize_factor=1,
                 restore_strength="", progress=gr.Progress()):
        """Lip-sync a face video or photo to speech; returns (LaDTalk video, Wav2Lip-only
        video or None, report). Default identity: none (Wav2Lip only); an identity that does
        not match the uploaded face is refused with the measured PSNRs and the fix."""
        opts = dict(detector=detector, loop=loop, box=box,
                    pads=(pad_top, pad_bottom, pad_left, pad_right), smooth=smooth,
                    resize_factor=resize_factor, restore_strength=restore_strength)
        with user_errors():
            return generate_request(st, face, audio, identity, enroll_first, enroll_seconds,
                                    compare, opts, progress)

    def robustness(image=None, video=None, frame_time=0.0, identity=DEMO_IDENTITY,
                   blur=2.0, noise=0.1, down=96, sweep="blur", certificate=True,
                   is_crop=False, detector=DEFAULT_DETECTOR, progress=gr.Progress()):
        """Degrade a face crop (blur / noise / down-up), restore it with an identity's SOVQAE;
        returns (gallery, metrics table, PSNR-vs-strength plot data, certificate, raw JSON)."""
        with user_errors():
            return robustness_request(st, image, video, frame_time, identity,
                                      (blur, noise, down), sweep, certificate, is_crop,
                                      detector, progress)

    def enroll(video, name, seconds=None, config="auto", detector=DEFAULT_DETECTOR,
               fresh=False, hub_repo="", hub_token="", hub_private=True,
               progress=gr.Progress()):
        """Enroll (or continue) an identity from a video within a time budget; returns
        (summary markdown, metrics JSON, the identity's model.safetensors)."""
        token = (hub_token or "").strip()
        with user_errors(token):
            return enroll_request(st, video, name, seconds, config, detector, fresh,
                                  hub_repo, token, hub_private, progress)

    def identities() -> List[Dict[str, Any]]:
        """Enrolled and shipped identities with their training metrics."""
        return identities_summary()

    def status() -> Dict[str, Any]:
        """Device, checkpoint availability (and how to supply missing ones), limits."""
        return status_dict(st)

    return {"generate": generate, "robustness": robustness, "enroll": enroll,
            "identities": identities, "status": status}
