"""Adapters from the package's progress callbacks to Gradio's progress bar (``None``: off)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

Progress = Optional[Callable[..., Any]]


def generation_reporter(progress: Progress, index: int, n_passes: int, label: str):
    """``report(stage, done, total)`` for pass ``index`` of ``n_passes`` of a generation."""
    def report(stage, done, total):
        if progress is None:
            return
        frac = {"audio": 0.02, "detect": 0.05 + 0.25 * done / max(1, total),
                "load": 0.3}.get(stage, 0.3 + 0.7 * done / max(1, total))
        what = {"audio": "reading audio", "detect": f"finding the face ({done}/{total})",
                "load": "loading models"}.get(stage, f"{label}: frame {done}/{total}")
        progress((index + frac) / n_passes, desc=what)
    return report


def enrollment_reporter(progress: Progress, name: str, seconds: float, offset: float,
                        total: float):
    """``on_progress(info)`` of one enrollment chunk (``offset`` s of ``total`` done before)."""
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
    return on_progress


def crop_reporter(progress: Progress):
    """``report(phase, done, total)`` of the face detection + crops before enrollment."""
    def report(phase, done, total):
        if progress is not None:
            progress(0.0, desc=f"{'finding the face' if phase == 'detect' else 'cropping'}: "
                               f"frame {done}/{total}")
    return report


def robustness_reporter(progress: Progress, certificate: bool):
    """``report(phase, done, total)`` of a robustness evaluation: the restore batches, then
    (when ``certificate``) each step of the certificate's L_enc estimate."""
    restore_share = 0.3 if certificate else 0.85

    def report(phase, done, total):
        if progress is None:
            return
        frac = min(1.0, done / max(1, total))
        if phase == "certificate":
            progress(0.1 + restore_share + 0.55 * frac,
                     desc=f"certificate: estimating L_enc (step {done}/{total})")
        else:
            progress(0.1 + restore_share * frac, desc=f"degrade and restore: {done}/{total}")
    return report
