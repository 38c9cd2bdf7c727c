"""Where a Wav2Lip crop pasted as it is should have its colours measured: PSNR of the pasted
region against the true frame, for the reference band (rows 0.12-0.45, which needs every row
drawn) and for ``BlendConfig.lipsync_band`` (rows 1/3-1/2, which lets Wav2Lip skip its upper
rows: docs/generation.md), on real frames.

Wav2Lip's output is stood in for by the true 96 px crop softened (the evaluation's proxy,
``ladtalk.evaluation.proxy``): softened whole ("uniform"), or only its masked lower half with
the upper half, which the generator sees, lightly softened ("lower"); with and without a
colour cast (+12 grey levels red, x0.9 blue) that the colour match must take out.

    python scripts/colour_band.py [--data ../shared/data] [--frames 12]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from ladtalk.evaluation.proxy import prepare_case, soften96
from ladtalk.face.detect import make_detector
from ladtalk.generation.blend import BlendConfig, blend_face
from ladtalk.media.decode import read_frames

CLIPS = ("retalking_face2.mp4", "mimictalk_May_5s_25fps.mp4", "dfrf_cnn2_25fps.mp4",
         "sadtalker_WDA_EdMarkey0_000_25fps.mp4")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def proxy(true96: np.ndarray, sigma: float, mode: str, cast: bool) -> np.ndarray:
    w = soften96(true96, sigma)
    if mode == "lower":
        w = np.concatenate([soften96(true96, 0.5)[:48], w[48:]])
    if cast:
        w = w.astype(np.float32)
        w[..., 0] += 12.0
        w[..., 2] *= 0.9
        w = np.clip(np.rint(w), 0, 255).astype(np.uint8)
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--frames", type=int, default=12, help="frames per clip, spread evenly")
    args = ap.parse_args()
    cfg = BlendConfig()
    bands = {"reference band 0.12-0.45": replace(cfg, lipsync_band=None).direct(),
             "lipsync_band 1/3-1/2": cfg.direct()}
    detector = make_detector("dlib")
    cases = []
    for clip in CLIPS:
        frames = read_frames(args.data / clip)
        for f in frames[np.linspace(0, len(frames) - 1, args.frames).astype(int)]:
            boxes = detector.detect(f[None])[0]
            if len(boxes):
                cases.append(prepare_case(f, boxes[0][:4], 256))
    print(f"{len(cases)} frames of {len(CLIPS)} clips")
    print("| proxy | cast | sigma | " + " | ".join(bands) + " | change |")
    print("|---|---|---|" + "---|" * (len(bands) + 1))
    for mode in ("uniform", "lower"):
        for cast in (False, True):
            for sigma in (1.0, 2.0, 3.0):
                means = []
                for band in bands.values():
                    vals = [psnr(blend_face(c.frame.copy(), proxy(c.true96, sigma, mode, cast),
                                            c.region, c.true96, band)[c.mask], c.frame[c.mask])
                            for c in cases]
                    means.append(float(np.mean(vals)))
                print(f"| {mode} | {'yes' if cast else 'no'} | {sigma:g} | "
                      + " | ".join(f"{m:.2f} dB" for m in means)
                      + f" | {means[1] - means[0]:+.2f} dB |")


if __name__ == "__main__":
    main()
