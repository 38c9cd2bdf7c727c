"""Choices and defaults shared by the CLI flags, the app's controls and the library."""

from __future__ import annotations

from typing import Tuple

# Face detectors a user may pick ("auto": S3FD when its weights resolve, else dlib).
DETECTORS: Tuple[str, ...] = ("auto", "s3fd", "dlib")
DEFAULT_DETECTOR = "auto"

# Extra pixels around the detected face box: top, bottom, left, right (a little more chin).
DEFAULT_PADS: Tuple[int, int, int, int] = (0, 10, 0, 0)

# Which source frame each output frame shows when the audio outlasts the video.
LOOP_POLICIES: Tuple[str, ...] = ("pingpong", "loop", "hold")
DEFAULT_LOOP = "pingpong"

# Precision of the models' arithmetic.
PRECISIONS: Tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
