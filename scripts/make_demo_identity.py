"""Rebuild the demo identity shipped in ``checkpoints/identities/demo``.

The demo identity lets the app's Robustness and Enroll tabs (and ``python -m ladtalk
robustness``) work on a fresh, offline machine. It is trained by LaDTalk's own enrollment code
(:func:`ladtalk.enrollment.enroll.enroll`) on ``examples/astronaut.mp4``, a synthetic clip made
from the public-domain NASA portrait bundled with scikit-image (see
``scripts/make_examples.py``), so the weights may be redistributed.

Model and training: exactly the default CPU enrollment (``cpu`` config: normalisation-free,
f = 4, 1024 x 16 EMA codebook, 0.72 M parameters; the resolution chosen from the measured face
size; patches, the lipsync-path degradations, the fusion calibration and the quality measure
of docs/enrollment.md). The weights are stored in float16 (about 1.5 MB; they load into a
float32 model unchanged in shape). The trainer state (optimiser moments, discriminator) is not
shipped, so enrolling more on top of the demo starts a fresh optimiser.

Usage: ``python scripts/make_demo_identity.py [--seconds 600] [--out DIR]``. Training is
time-budgeted, so the result depends on the machine's speed; ``meta.json`` records the steps,
losses, holdout PSNR and the robustness / certificate numbers of the run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCE_NOTE = ("examples/astronaut.mp4: synthetic head motion over skimage.data.astronaut() "
               "(NASA portrait of Eileen Collins, public domain)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="training budget (s)")
    ap.add_argument("--video", default=str(ROOT / "examples" / "astronaut.mp4"))
    ap.add_argument("--out", default=str(ROOT / "checkpoints" / "identities" / "demo"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import load_file, save_file

    from ladtalk._util.atomic import atomic_dir, write_json
    from ladtalk.enrollment.enroll import enroll

    video = Path(args.video)
    if not video.is_file():
        import subprocess
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_examples.py")], check=True)
    torch.manual_seed(0)

    def show(info):
        if info.get("phase") == "train" and "holdout_psnr" in info:
            print(f"  step {info['step']:5d}  {info['elapsed']:6.0f}s  rec {info['rec']:.4f}  "
                  f"holdout {info['holdout_psnr']:.2f} dB", flush=True)

    with tempfile.TemporaryDirectory(prefix="ladtalk-demo-") as tmp:
        work = enroll(video, "demo", seconds=args.seconds, config="cpu",
                      out=Path(tmp) / "demo", detector="dlib", device=args.device,
                      on_progress=show, show_progress=False)
        meta = json.loads((work / "meta.json").read_text())
        meta.pop("history", None)
        meta["shipped"] = {"weights_dtype": "float16", "source": SOURCE_NOTE,
                           "script": "scripts/make_demo_identity.py",
                           "trainer_state": "not shipped (fresh optimiser when enrolling on top)"}
        state = {k: v.to(torch.float16).contiguous() for k, v in
                 load_file(str(work / "model.safetensors")).items()}
        with atomic_dir(Path(args.out)) as dst:
            shutil.copy2(work / "config.json", dst / "config.json")
            save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
            write_json(dst / "meta.json", meta, sort_keys=True)
    out = Path(args.out)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"demo identity written to {out} ({size / 1e6:.1f} MB); steps {meta['steps']}, "
          f"holdout PSNR {meta.get('holdout_psnr')}")
    for spec, r in (meta.get("restoration") or {}).items():
        print(f"  {spec}: {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
