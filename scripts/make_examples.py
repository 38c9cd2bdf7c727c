"""Rebuild the small, redistributable example media in ``examples/``.

Everything here is made from scratch on the machine that runs the script:

* ``astronaut.png`` / ``astronaut.mp4``: the portrait of astronaut Eileen Collins that
  scikit-image bundles as ``skimage.data.astronaut()`` (a NASA photograph, public domain).
  The video is a 4 s, 25 fps, 256x256 crop around the face with a gentle synthetic head motion
  (slow sway, nod and breathing zoom, a smooth affine warp of the still photo) and a quiet tone
  as its audio track, so it can stand in for a short "talking head" clip.
* ``hello.wav`` / ``demo_sentence.wav``: speech synthesised with ``espeak-ng`` (GPL program;
  its output audio is not covered by the GPL), 16 kHz mono.

Needs ``espeak-ng`` on PATH (``apt-get install espeak-ng``), scikit-image and ffmpeg (the one
bundled with imageio-ffmpeg is used). Usage: ``python scripts/make_examples.py [OUT_DIR]``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = {
    "hello.wav": "Hello! This is a short LaDTalk demo.",
    "demo_sentence.wav": "The quick brown fox jumps over the lazy dog, and then it takes a nap.",
}
FPS = 25
SECONDS = 4.0
SIZE = 256
# Square crop (x1, y1, side) of the 512x512 astronaut photo around the face (dlib finds the
# face at about x 177-279, y 65-176).
CROP = (100, 0, 280)


def astronaut() -> np.ndarray:
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[..., :3])


def motion_frames(img: np.ndarray, n: int, fps: float = FPS) -> np.ndarray:
    """``n`` frames of gentle synthetic head motion over a crop of ``img`` (uint8 RGB)."""
    import cv2
    x0, y0, side = CROP
    cx, cy = x0 + side / 2, y0 + side / 2
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        t = i / fps
        angle = 2.0 * math.sin(2 * math.pi * 0.35 * t)          # degrees of sway
        scale = 1.0 + 0.02 * math.sin(2 * math.pi * 0.25 * t)   # breathing zoom
        dx = 3.0 * math.sin(2 * math.pi * 0.2 * t)              # px in the source photo
        dy = 2.0 * math.sin(2 * math.pi * 0.5 * t + 0.7)        # nod
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[:, 2] += (dx, dy)
        # then map the crop window to SIZE x SIZE
        k = SIZE / side
        crop = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]])
        full = np.vstack([m, [0, 0, 1]])
        out[i] = cv2.warpAffine(img, crop @ full, (SIZE, SIZE), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT101)
    return out


def espeak(text: str, dst: Path) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found: apt-get install espeak-ng")
    from ladtalk.media.ffmpeg import ffmpeg_exe
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                        "-y", "-i", str(raw), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le",
                        "-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
                        str(dst)], check=True)


def main(out_dir: Path) -> None:
    import cv2

    from ladtalk.media.encode import VideoWriter
    from ladtalk.media.ffmpeg import ffmpeg_exe

    out_dir.mkdir(parents=True, exist_ok=True)
    img = astronaut()
    x0, y0, side = CROP
    still = cv2.resize(img[y0:y0 + side, x0:x0 + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out_dir / "astronaut.png"), cv2.cvtColor(still, cv2.COLOR_RGB2BGR))
    for name, text in SENTENCES.items():
        espeak(text, out_dir / name)
    frames = motion_frames(img, int(round(SECONDS * FPS)))
    with tempfile.TemporaryDirectory() as tmp:
        tone = Path(tmp) / "tone.wav"  # quiet 220 Hz hum so the clip has an audio stream
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                        "-y", "-f", "lavfi", "-i",
                        f"sine=frequency=220:sample_rate=16000:duration={SECONDS}",
                        "-af", "volume=0.05", "-c:a", "pcm_s16le", str(tone)], check=True)
        with VideoWriter(out_dir / "astronaut.mp4", FPS, (SIZE, SIZE), audio=tone,
                         audio_mode="aac", crf=23, preset="slow",
                         audio_bitrate="32k") as writer:
            writer.write(frames)
    for p in sorted(out_dir.iterdir()):
        print(f"{p.name:24s} {p.stat().st_size:>9,d} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples")
