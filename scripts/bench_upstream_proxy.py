"""A stand-in for upstream Wav2Lip ``inference.py --box`` to time against on the same machine.

The upstream script cannot run here (it needs librosa 0.7 and its own package layout), so
this script repeats its *data flow* with LaDTalk's bit-compatible parts, to measure both
under the same CPU load:

1. every frame of the video is read into memory (``cv2.VideoCapture``);
2. the fixed box ``Y1 Y2 X1 X2`` is cut from each frame and resized to 96x96 (no smoothing);
3. mel windows as upstream (:func:`ladtalk.audio.mel_chunk_starts` without ``n_frames``);
   frames are truncated to the number of windows;
4. Wav2Lip in batches of 128 (upstream's ``--wav2lip_batch_size``), default NCHW layout,
   BatchNorm not folded;
5. each output is resized to the box and pasted back as a hard rectangle, frames go to an
   XVID/DIVX ``.avi`` through ``cv2.VideoWriter``;
6. ``ffmpeg -i AUDIO -i result.avi -strict -2 -q:v 1 OUT.mp4`` encodes a second time
   (libx264 defaults + AAC), like upstream.

Weights are random (speed does not depend on them). Prints wall time, frames/s and peak RSS
(self + largest child) as JSON. Example::

    python scripts/bench_upstream_proxy.py --face face.mp4 --audio speech.wav \\
        --box 223 603 220 568 --seconds 4.88
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ladtalk.audio import load_audio, mel_chunk_starts, melspectrogram  # noqa: E402
from ladtalk.models.wav2lip import Wav2Lip  # noqa: E402
from ladtalk.video import ffmpeg_exe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--face", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--box", type=int, nargs=4, required=True, metavar=("Y1", "Y2", "X1", "X2"))
    ap.add_argument("--seconds", type=float, default=None, help="cut the audio to this length")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="upstream-proxy-") as tmp:
        tmp = Path(tmp)
        cap = cv2.VideoCapture(str(args.face))
        fps = cap.get(cv2.CAP_PROP_FPS)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()

        wav = load_audio(args.audio)
        if args.seconds:
            wav = np.resize(wav, int(round(args.seconds * 16000)))
        import soundfile as sf
        audio_path = tmp / "audio.wav"
        sf.write(str(audio_path), wav, 16000)
        mel = melspectrogram(wav)
        starts = mel_chunk_starts(mel.shape[1], fps)
        chunks = [mel[:, s:s + 16] for s in starts]
        frames = frames[:len(chunks)]
        n = len(chunks)

        torch.manual_seed(0)
        model = Wav2Lip().eval()
        y1, y2, x1, x2 = args.box
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(tmp / "result.avi"), cv2.VideoWriter_fourcc(*"DIVX"),
                                 fps, (w, h))
        t_model = 0.0
        for b in range(0, n, args.batch_size):
            idx = range(b, min(n, b + args.batch_size))
            fr = [frames[i % len(frames)].copy() for i in idx]
            faces = np.stack([cv2.resize(f[y1:y2, x1:x2], (96, 96)) for f in fr])
            masked = faces.copy()
            masked[:, 48:] = 0
            img = np.concatenate((masked, faces), axis=3) / 255.0
            mels = np.stack([chunks[i] for i in idx])[:, None]
            ta = time.perf_counter()
            with torch.no_grad():
                pred = model(torch.FloatTensor(mels),
                             torch.FloatTensor(np.transpose(img, (0, 3, 1, 2))))
            t_model += time.perf_counter() - ta
            pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0
            for p, f in zip(pred, fr):
                f[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
                writer.write(f)
        writer.release()
        out = args.out or str(tmp / "out.mp4")
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(audio_path),
                        "-i", str(tmp / "result.avi"), "-strict", "-2", "-q:v", "1", out],
                       check=True)
    wall = time.perf_counter() - T0
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "frames": n, "wall_s_after_interpreter_start": round(wall, 2),
        "model_s": round(t_model, 2), "fps": round(n / wall, 2),
        "peak_rss_mb": {"self": round(self_ru.ru_maxrss / 1024),
                        "children": round(kids.ru_maxrss / 1024)},
        "cpu_s": {"self": round(self_ru.ru_utime + self_ru.ru_stime, 1),
                  "children": round(kids.ru_utime + kids.ru_stime, 1)},
    }))


if __name__ == "__main__":
    main()
