"""Typed results -> what the UI shows: JSON reports, Markdown summaries, tables, plot data,
gallery pictures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from PIL import Image

from ladtalk._util.jsonsafe import to_jsonable
from ladtalk.app.messages import ui_text
from ladtalk.evaluation.quality_report import QualityReport
from ladtalk.identities.meta import IdentityMeta


# ---------------------------------------------------------------------------- generate
def result_report(res, gpu_s: int) -> Dict[str, Any]:
    """The Report panel of one generation pass."""
    match = getattr(res, "identity_match", None)
    return {"video_seconds": round(res.duration, 3), "audio_seconds": round(res.audio_duration, 3),
            "frames": res.n_frames, "fps": res.fps, "size": list(res.size),
            "enhanced": res.enhanced, "identity": Path(res.identity).name if res.identity else None,
            "frames_without_face": res.passthrough_frames,
            "missing_face_timestamps": res.missing_face_timestamps[:50],
            "audio_copied": res.audio_copied, "precision": res.precision,
            "warnings": [ui_text(w) for w in res.warnings],
            "timings_s": {k: round(v, 2) for k, v in res.timings.items()},
            "identity_match": match.to_json() if match is not None else None,
            "fusion": getattr(res, "fusion", None),
            "gpu_seconds_requested": gpu_s}


def generate_outputs(results: Dict[str, Any], gpu_s: int, ident: Optional[str]):
    """``(LaDTalk video, baseline video or None, report)`` of the Generate endpoint."""
    main = results["ladtalk"]
    report = result_report(main, gpu_s)
    base = results.get("baseline")
    if base is not None:
        report["baseline"] = result_report(base, gpu_s)
    if ident is not None:
        report["identity"] = ident
    return str(main.out), (str(base.out) if base is not None else None), report


# ---------------------------------------------------------------------------- enroll
def identity_summary_md(meta: IdentityMeta, name: str) -> str:
    """Markdown summary of an identity's ``meta.json``."""
    lines = [f"### Identity `{name}`", ""]
    psnr, ssim = meta.holdout_psnr, meta.holdout_ssim
    lines.append(f"- training: {meta.steps} steps, {meta.training_seconds} s "
                 f"(config `{meta.config_name}`)")
    if psnr is not None:
        lines.append(f"- holdout reconstruction: PSNR {psnr:.2f} dB"
                     + (f", SSIM {ssim:.3f}" if ssim is not None else "")
                     + " (frames at the end of the video, never trained on)")
    rest = meta.restoration
    if rest:
        lines += ["", "| degraded by | PSNR (dB) degraded → restored | gain (dB) |",
                  "|---|---|---|"]
        for spec, r in rest.items():
            pd_, pr = r.get("psnr_degraded"), r.get("psnr_restored")
            if pd_ is not None and pr is not None:
                lines.append(f"| {robustness_header(spec)} | {pd_:.2f} → {pr:.2f} | "
                             f"{pr - pd_:+.2f} |")
    lines += quality_md(meta)
    return "\n".join(lines)


def quality_md(meta: IdentityMeta) -> List[str]:
    """Markdown lines: LaDTalk (L) against the Wav2Lip proxy (W) on held-out frames."""
    if not meta.quality:
        return []
    q = QualityReport.from_json(meta.quality)
    fusion = meta.fusion or {}
    lines = ["", f"**LaDTalk vs Wav2Lip** on {q.frames} held-out frames (face "
             f"{q.face_px:.0f} px, identity {q.resolution} px). W: the true "
             "face reduced to 96 px (the best a Wav2Lip output can be), optionally softened "
             "like a real Wav2Lip output (σ: the blur sigma in px at 96 px); L: that face "
             "restored by this identity. Scores against the real frame, in the pasted "
             "lower-face region.", "",
             # short headers, no unit in the cells: four columns fit a phone
             "| σ (px) | PSNR W → L (dB) | gain (dB) | detail W → L |", "|---|---|---|---|"]
    for r in q.summary_rows():
        lines.append(f"| {r.sigma} | {r.w_psnr:.2f} → {r.l_psnr:.2f} | {r.gain_db:+.2f} | "
                     f"{r.w_sharpness:.2f} → {r.l_sharpness:.2f} |")
    if fusion:
        lines += ["", f"Restore strength calibrated on the holdout: low band "
                  f"{fusion.get('low_strength'):g}, high band {fusion.get('high_strength'):g} "
                  "(1 = the identity's decode, 0 = Wav2Lip's face). Detail: the sharpness of "
                  "the face relative to the real frame (1.0 = as sharp as the truth)."]
    return lines


# ---------------------------------------------------------------------------- robustness
CERT_EXPLAIN = [
    ("d_C", "d_C", "minimum distance between two codebook vectors: how far apart the "
     "identity's codes are"),
    ("gamma", "gamma", "largest distance from a clean latent vector to its nearest code "
     "(quantisation error on this picture)"),
    ("L_enc", "L_enc", "estimated Lipschitz constant of the encoder per latent position: how "
     "much a pixel change can move a latent vector (an empirical lower bound)"),
    ("radius", "certified radius", "(d_C - 2 gamma) / (2 L_enc): any perturbation with a "
     "smaller L2 norm (whole crop, [0,1] pixels) provably keeps every code; negative = no "
     "guarantee"),
    ("radius_rms", "radius per pixel (RMS)", "the certified radius divided by sqrt(pixels): "
     "comparable to a noise sigma"),
]


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    return str(v)


def certificate_md(cert: Optional[Dict[str, Any]], specs: Sequence[str]) -> str:
    """The certificate panel: values, what they mean, and codes preserved per degradation."""
    if not cert:
        return "*Certificate not computed (tick 'compute the Theorem 3.3 certificate').*"
    lines = ["### Theorem 3.3 certificate", "", "| quantity | value |", "|---|---|"]
    lines += [f"| {label} | {_fmt(cert.get(key))} |" for key, label, _ in CERT_EXPLAIN]
    lines += [""] + [f"- **{label}**: {text}" for _, label, text in CERT_EXPLAIN]
    pres = cert.get("codes_preserved") or {}
    certf = cert.get("certified_fraction") or {}
    norms = cert.get("degradation_norms") or {}
    # short headers (explained below): four columns fit a phone
    lines += ["", "| degraded by | ‖N‖ | codes kept | certified |", "|---|---|---|---|"]
    for spec in specs:
        if spec in pres:
            nrm = (norms.get(spec) or {}).get("mean")
            lines.append(f"| {robustness_header(spec)} | {_fmt(nrm, 3)} | "
                         f"{100 * pres[spec]:.1f} % | {100 * certf.get(spec, 0.0):.1f} % |")
    lines += ["", "*‖N‖*: the L2 norm of the degradation (degraded minus clean crop, [0, 1] "
              "pixels). *Codes kept*: fraction of latent positions whose code is unchanged by "
              "the degradation (measured; what makes restoration work). *Certified*: fraction "
              "whose own margin (d2 - d1) / (2 L_enc) exceeds ‖N‖, so the theorem guarantees "
              "it."]
    for note in cert.get("notes") or []:
        lines.append(f"\n> {note}")
    return "\n".join(lines)


#: the rows of the Robustness table (one column per degradation: 4 columns fit a phone)
ROBUSTNESS_MEASURES = ("PSNR degraded (dB)", "PSNR restored (dB)", "PSNR gain (dB)",
                       "SSIM degraded", "SSIM restored", "codes preserved")


def empty_robustness_table() -> pd.DataFrame:
    """The table before a run: the measures to come, no degradation yet."""
    return pd.DataFrame({"measure": list(ROBUSTNESS_MEASURES)})


def robustness_header(spec: str) -> str:
    """A degradation's column header: "blur 2.0" for "blur:2.0" (breaks between the words on
    a narrow screen, not inside the number)."""
    return spec.replace(":", " ")


def robustness_column_widths(n_specs: int) -> List[str]:
    """Column widths for ``n_specs`` degradations that fit a 390 px phone: a third for the
    measures (which wrap), the rest shared by the degradations."""
    return ["34%"] + [f"{66 / max(n_specs, 1):.0f}%"] * n_specs


def robustness_table(res: Dict[str, Any], specs: Sequence[str]) -> pd.DataFrame:
    """One column per degradation (headed by :func:`robustness_header`): PSNR / SSIM degraded
    and restored, the PSNR gain and the fraction of codes preserved (empty without the
    certificate)."""
    degs, cert = res.get("degradations", {}), res.get("certificate")
    kept = (cert or {}).get("codes_preserved", {})
    table = empty_robustness_table()
    for spec in specs:
        r = degs[spec]
        gain = r["psnr_restored"] - r["psnr_degraded"]
        table[robustness_header(spec)] = [
            f"{r['psnr_degraded']:.2f}", f"{r['psnr_restored']:.2f}", f"{gain:+.2f}",
            f"{r['ssim_degraded']:.4f}", f"{r['ssim_restored']:.4f}",
            f"{kept[spec]:.1%}" if spec in kept else ""]
    return table


def robustness_plot(res: Dict[str, Any], sweep: str, values: Sequence[float],
                    specs: Sequence[str], resolution: int) -> pd.DataFrame:
    """PSNR of the degraded and the restored crop against the sweep's strength."""
    points = []
    for v, spec in zip(values, specs):
        r = res["degradations"][spec]
        strength = float((resolution / v) if sweep == "down" else v)
        points.append({"strength": strength, "PSNR": r["psnr_degraded"], "face": "degraded"})
        points.append({"strength": strength, "PSNR": r["psnr_restored"], "face": "restored"})
    return pd.DataFrame(points)


def robustness_gallery(res: Dict[str, Any], images: Dict[str, np.ndarray],
                       out_dir: Path) -> List[Tuple[str, str]]:
    """Save the pictures as PNGs in ``out_dir``; ``(path, caption with its scores)`` each."""
    degs = res.get("degradations", {})
    gallery = []
    for i, (cap, img) in enumerate(images.items()):
        if cap.endswith("degraded") or cap.endswith("restored"):
            spec, kind = cap.rsplit(" ", 1)
            r = degs[spec]
            cap = f"{cap}: PSNR {r[f'psnr_{kind}']:.2f} dB, SSIM {r[f'ssim_{kind}']:.3f}"
        elif cap == "reconstructed" and "reconstruction" in res:
            cap = f"reconstructed (no degradation): PSNR {res['reconstruction']['psnr']:.2f} dB"
        path = out_dir / f"{i:02d}.png"
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(path)
        gallery.append((str(path), cap))
    return gallery


def robustness_raw(res: Dict[str, Any], *, identity: str, label: str, box, resolution: int,
                   specs: Sequence[str], sweep: str, sweep_specs: Sequence[str]) -> Dict:
    """The Raw numbers panel (plain JSON)."""
    degs = res.get("degradations", {})
    raw = {"identity": identity, "input": label, "face_box_xyxy": box,
           "resolution": resolution, "degradations": {s: degs[s] for s in specs},
           "sweep": {"kind": sweep, "specs": list(sweep_specs),
                     "results": {s: degs[s] for s in sweep_specs}},
           "reconstruction": res.get("reconstruction"), "certificate": res.get("certificate")}
    return to_jsonable(raw)
