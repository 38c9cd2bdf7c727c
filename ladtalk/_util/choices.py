"""Choices and defaults shared by the CLI flags, the app's controls and the library."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Tuple, Union

from ladtalk.errors import InputError

# Face detectors a user may pick ("auto": S3FD when its weights resolve, else dlib).
DETECTORS: Tuple[str, ...] = ("auto", "s3fd", "dlib")
DEFAULT_DETECTOR = "auto"

# Extra pixels around the detected face box: top, bottom, left, right (a little more chin).
DEFAULT_PADS: Tuple[int, int, int, int] = (0, 10, 0, 0)

# Which source frame each output frame shows when the audio outlasts the video.
LOOP_POLICIES: Tuple[str, ...] = ("pingpong", "loop", "hold")
DEFAULT_LOOP = "pingpong"

# SOVQAE configs offered for a new identity ("auto": cpu on a CPU, base on CUDA).
ENROLL_CONFIGS: Tuple[str, ...] = ("auto", "cpu", "base", "tiny")

# Precision of the models' arithmetic ("auto": the fastest measured, never slower than fp32).
PRECISIONS: Tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

# What runs the models' forward passes ("auto": the fastest measured of eager torch and, when
# the optional extra is installed and the device is a CPU, OpenVINO).
BACKENDS: Tuple[str, ...] = ("auto", "torch", "openvino")
DEFAULT_BACKEND = "auto"


@dataclass(frozen=True)
class CertificateCost:
    """How much work the certificate's Lipschitz estimate does (docs/robustness.md).

    Field names are the keyword arguments of ``evaluate_robustness`` and the keys of its
    ``settings`` record.
    """

    cert_faces: int = 4      # faces the estimate runs on
    power_iters: int = 6     # power iterations per Jacobian
    n_random: int = 4        # random perturbations per face
    eps: float = 1e-2        # their per-pixel std on the [0, 1] scale
    max_positions: int = 4   # most sensitive latent positions per face
    layerwise: bool = True   # also walk the encoder for the layer-wise bound
    global_map: bool = True  # also a power chain on the whole latent map (L_enc_global only)

    @classmethod
    def resolve(cls, cost: Union[str, "CertificateCost"] = "full",
                **overrides: Any) -> "CertificateCost":
        """A preset name (or a cost), with some fields replaced (TypeError for unknown ones)."""
        if isinstance(cost, str):
            if cost not in CERTIFICATE_COSTS:
                raise ValueError(f"unknown certificate cost preset {cost!r}; use one of "
                                 f"{', '.join(CERTIFICATE_COSTS)}")
            cost = CERTIFICATE_COSTS[cost]
        return replace(cost, **overrides) if overrides else cost


# Certificate cost presets: the CLI's defaults ("full"), enrollment's meta.json ("enroll") and
# the app's about-a-second version ("app": one face, power chains of 2 iterations on its 2 most
# sensitive positions, no whole-map chain, no layer-wise walk). Against the app's former preset
# (power_iters=4, max_positions=4, global_map=True) on the demo identity: L_enc 1.4-2.7 % lower,
# the same codes preserved / certified, about 4x less time (scripts/bench_certificate.py,
# docs/robustness.md).
CERTIFICATE_COSTS: Dict[str, CertificateCost] = {
    "full": CertificateCost(),
    "enroll": CertificateCost(cert_faces=2, power_iters=4, n_random=2),
    "app": CertificateCost(cert_faces=1, power_iters=2, n_random=2, max_positions=2,
                           layerwise=False, global_map=False),
}

# What generation does when the identity does not match the input's face.
IDENTITY_CHECKS: Tuple[str, ...] = ("refuse", "warn", "off")


def check_mode(mode: Any) -> str:
    """Validate an ``identity_check`` mode (one of :data:`IDENTITY_CHECKS`)."""
    m = str(mode or "").strip().lower()
    if m not in IDENTITY_CHECKS:
        raise InputError(f"--identity-check must be one of {', '.join(IDENTITY_CHECKS)}, got "
                         f"{mode!r}")
    return m


# The CLI's and the benchmark's identity check: warn and restore anyway (the library's
# GenerateOptions default is "refuse").
CLI_IDENTITY_CHECK = "warn"

# Precision the CLI, the benchmark and the pipeline use unless told otherwise.
DEFAULT_PRECISION = "auto"
