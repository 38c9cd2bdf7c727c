"""Measure the identity-match PSNRs behind the margin of ``ladtalk/generation/identity_match.py``.

For an identity (default: the shipped ``demo``, trained on the astronaut example) print the
clean reconstruction PSNR on 8 face crops of each input (generation framing, dlib detector;
per-channel gains as in :func:`ladtalk.generation.identity_match.check_identity`, and without):
its own person (the example video and photo, and "new recording" variants of a photo of the
person: brighter / darker, gamma, white balance, mirrored, JPEG, noise, blur, half
resolution), another real person bundled with scikit-image (``camera()``, CC0), and, when
``../shared/data`` exists, the real third-party videos there (other people).

    python scripts/measure_identity_match.py [--identity demo] [--json out.json]
    # an identity enrolled on one of the shared videos, e.g. mimictalk_Trump_10s.mp4:
    LADTALK_HOME=/tmp/idmhome python scripts/measure_identity_match.py --identity trump \
        --own Trump --own-face ../shared/data/mimictalk_Trump_10s.mp4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def other_person_photo() -> np.ndarray:
    """scikit-image's ``camera()`` (CC0, Lav Varshney): the cameraman's face, cropped and
    upscaled 2x so that dlib's frontal detector finds the (three-quarter profile) face."""
    import cv2
    from skimage import data
    img = np.stack([data.camera()] * 3, axis=-1)
    return np.ascontiguousarray(cv2.resize(img[40:260, 100:340], None, fx=2, fy=2,
                                           interpolation=cv2.INTER_CUBIC))


def variants(photo: np.ndarray, box):
    """"New recordings" of the astronaut photo: ``(name, image, box (y1, y2, x1, x2))``, the
    face box moved with the picture (dlib misses the half-size face)."""
    import cv2
    f = photo.astype(np.float32) / 255.0
    u8 = lambda a: np.clip(a * 255.0, 0, 255).round().astype(np.uint8)  # noqa: E731
    y1, y2, x1, x2 = box
    w = photo.shape[1]
    yield "astronaut.png brightness x0.8", u8(f * 0.8), box
    yield "astronaut.png brightness x1.15", u8(f * 1.15), box
    yield "astronaut.png gamma 1.3", u8(f ** 1.3), box
    yield "astronaut.png white balance (R x1.1, B x0.9)", u8(f * [1.1, 1.0, 0.9]), box
    yield "astronaut.png mirrored", np.ascontiguousarray(photo[:, ::-1]), (y1, y2, w - x2, w - x1)
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 30])
    yield "astronaut.png JPEG q30", cv2.cvtColor(cv2.imdecode(enc, 1), cv2.COLOR_BGR2RGB), box
    rng = np.random.default_rng(0)
    yield "astronaut.png sensor noise 0.03", u8(f + rng.normal(0, 0.03, f.shape)), box
    yield "astronaut.png blur sigma 1.5", cv2.GaussianBlur(photo, (0, 0), 1.5), box
    h = photo.shape[0]
    small = cv2.resize(photo, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    yield "astronaut.png 0.5x resolution", small, tuple(v / 2 for v in box)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--identity", default="demo")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--own-face", default=str(ROOT / "examples" / "astronaut.png"),
                    help="a photo (or a video: its frame at 95 %% of the duration, i.e. in the "
                         "enrollment holdout) of the identity's own person for the 'new "
                         "recording' variants (default: the astronaut photo)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--own", default=None, metavar="SUBSTRING",
                    help="../shared/data videos whose name contains this are the identity's own "
                         "person (e.g. Trump for an identity enrolled on mimictalk_Trump_10s)")
    args = ap.parse_args()

    import cv2
    import torch
    torch.set_num_threads(1)
    from ladtalk.generation.identity_crops import video_face_crops
    from ladtalk.generation.identity_match import check_identity
    from ladtalk.generation.restore import Restorer
    from ladtalk.identities.meta import read_meta
    from ladtalk.identities.store import resolve_identity
    from ladtalk.media.decode import read_image

    path = resolve_identity(args.identity)
    meta = read_meta(path)
    restorer = Restorer.from_identity(path, device="cpu", precision="fp32")
    res = restorer.resolution
    print(f"identity {args.identity}: {res} px, holdout PSNR {meta.get('holdout_psnr')}")

    tmp = Path(tempfile.mkdtemp(prefix="ladtalk-idm-"))
    inputs = [("examples/astronaut.mp4 (the demo's person)", ROOT / "examples" / "astronaut.mp4"),
              ("examples/astronaut.png (the demo's person)", ROOT / "examples" / "astronaut.png")]
    own = Path(args.own_face)
    from ladtalk.media.decode import iter_frames
    from ladtalk.media.probe import probe
    info = probe(own)
    if info.is_image:
        photo = read_image(own)
    else:
        want = int(0.95 * info.duration * (info.fps or 25.0))
        frames = [c for c in iter_frames(own, max_frames=want + 1)]
        photo = np.ascontiguousarray(np.concatenate(frames)[-1])
    label = own.stem
    from ladtalk.face.detect import make_detector
    from ladtalk.face.track import select_largest
    b, _ = select_largest(make_detector("dlib").detect(photo[None]))
    x1, y1, x2, y2 = (float(v) for v in b[0])
    boxes = {}
    for i, (name, img, box) in enumerate(variants(photo, (y1, y2, x1, x2))):
        name = name.replace("astronaut.png", label)
        p = tmp / f"variant{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        inputs.append((name, p))
        boxes[name] = box
    p = tmp / "camera.png"
    cv2.imwrite(str(p), cv2.cvtColor(other_person_photo(), cv2.COLOR_RGB2BGR))
    inputs.append(("skimage camera() (other person)", p))
    data = Path(args.data)
    if data.is_dir():
        for v in sorted(data.glob("*.mp4")):
            if not v.stem.endswith("_25fps"):
                own = bool(args.own) and args.own.lower() in v.name.lower()
                inputs.append((f"shared/data/{v.name} ({'own' if own else 'other'} person)", v))

    rows = []
    for name, p in inputs:
        try:
            crops = video_face_crops(p, res, detector="dlib", n=args.frames,
                                     box=boxes.get(name))
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"{name:50s} skipped: {exc}")
            continue
        m = check_identity(restorer, crops, meta, identity=args.identity, source=p.name)
        gap = m.psnr_input - (m.psnr_holdout or 0.0)
        rows.append({"input": name, "frames": m.frames, "psnr": round(m.psnr_input, 2),
                     "psnr_raw": round(m.psnr_raw, 2),
                     "min": round(min(m.psnr_frames), 2), "max": round(max(m.psnr_frames), 2),
                     "vs_holdout": round(gap, 2), "gain": m.gain_input,
                     "gain_reference": m.gain_reference, "matches_default": m.matches})
        gain = ("" if m.gain_input is None else
                f"  gain {m.gain_input:+6.2f} dB (own {m.gain_reference:+.2f}: "
                f"{m.gain_input - m.gain_reference:+6.2f})")
        print(f"{name:44s} {m.frames} crops  PSNR {m.psnr_input:6.2f} dB "
              f"vs holdout {gap:+6.2f} dB{gain}  {'match' if m.matches else 'MISMATCH'}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"identity": args.identity,
                                               "holdout_psnr": meta.get("holdout_psnr"),
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
