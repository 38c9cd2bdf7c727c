"""LaDTalk Gradio app (the Hugging Face Spaces entry point): ``python app.py [--port N] ...``.

Builds :func:`ladtalk.app.create_demo` with the real checkpoints and launches it; the app
itself (tabs, endpoints ``/generate``, ``/robustness``, ``/enroll``, ``/identities``,
``/status``, ZeroGPU calls) lives in :mod:`ladtalk.app`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import List, Optional

from ladtalk.app import ZERO_GPU, create_demo, launch_options

__all__ = ["ZERO_GPU", "create_demo", "launch_options", "main", "parse_args"]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
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
    ap.add_argument("--public", action="store_true", default=None,
                    help="public mode: identities belong to the session (or logged-in user) "
                    "that enrolled them (default: on a Space, or with LADTALK_PUBLIC=1)")
    ap.add_argument("--mcp", action="store_true", default=None,
                    help="also serve the endpoints as MCP tools (default: $GRADIO_MCP_SERVER)")
    return ap.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:  # pragma: no cover - manual entry point
    args = parse_args(argv)
    # a stop signal exits like Ctrl-C: the app's temp space is removed on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo = create_demo(wav2lip=args.wav2lip, device=args.device,
                       max_video_seconds=args.max_video_seconds,
                       max_audio_seconds=args.max_audio_seconds,
                       enroll_budget=args.enroll_budget, public=args.public)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                show_error=True, mcp_server=args.mcp, **launch_options(demo))


if __name__ == "__main__":  # pragma: no cover
    main()
