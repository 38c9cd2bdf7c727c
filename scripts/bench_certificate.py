"""The app's certificate preset against the one it replaced, alternating, median of 3.

    python scripts/bench_certificate.py [--identity demo] [--image examples/astronaut.png]

Prints, per preset, the certificate's seconds, L_enc and the codes preserved / certified
on the face of ``--image`` (found as the Robustness tab finds it) for the tab's default
degradations. Runs on CPU with 2 threads (a free CPU Space).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--identity", default="demo")
    ap.add_argument("--image", type=Path, default=ROOT / "examples" / "astronaut.png")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import torch

    from ladtalk._util.choices import CertificateCost
    from ladtalk.analysis.robustness import evaluate_robustness
    from ladtalk.app.robustness import face_crop, identity_resolution
    from ladtalk.generation.pipeline import Pipeline
    from ladtalk.media.decode import read_image
    from ladtalk.models.wav2lip import Wav2Lip  # the pipeline's lipsync model: unused here

    torch.set_num_threads(2)
    pipe = Pipeline(Wav2Lip(), device="cpu")
    restorer, _ = pipe.restorer_for(args.identity)
    res = identity_resolution(args.identity)
    crop, _ = face_crop(pipe, read_image(args.image), args.image.name, res, False, "auto")
    presets = {"app": "app",
               "former app": CertificateCost(cert_faces=1, power_iters=4, n_random=2,
                                             max_positions=4, layerwise=False,
                                             global_map=True)}
    specs = ["blur:2.0", "noise:0.1", "down:96"]
    secs = {k: [] for k in presets}
    cert = {}
    for _ in range(args.rounds):
        for name, cost in presets.items():
            r = evaluate_robustness(restorer.model, crop[None], specs, device="cpu",
                                    cost=cost).to_json()
            secs[name].append(r["settings"]["certificate_seconds"])
            cert[name] = r["certificate"]
    for name in presets:
        c = cert[name]
        kept = ", ".join(f"{s} {c['codes_preserved'][s]:.1%}" for s in specs)
        certf = ", ".join(f"{c['certified_fraction'][s]:.1%}" for s in specs)
        print(f"{name:10s} {statistics.median(secs[name]):6.2f} s (runs "
              f"{', '.join(f'{v:.2f}' for v in secs[name])})  L_enc {c['L_enc']:.3f}  "
              f"codes preserved {kept}  certified {certf}")
    ratio = statistics.median(secs["former app"]) / statistics.median(secs["app"])
    print(f"former / app: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
