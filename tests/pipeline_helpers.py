"""Synthetic media and cheap models for the generation-pipeline tests (no downloads).

* Face frames: scikit-image's bundled astronaut portrait (public-domain NASA photo, read from
  the installed wheel), cropped and scaled so dlib's HOG detector finds the face (~80 px),
  with a slow horizontal drift; "no face" frames are a flat grey gradient.
* A second real person (:func:`other_person_photo`): scikit-image's ``camera()`` (CC0).
* Speech: a 16 kHz harmonic tone with a 4 Hz syllable-like envelope and a little noise,
  loud enough for :func:`ladtalk.media.audio.check_has_speech`.
* :class:`StubGenerator`: a Wav2Lip-shaped module (same inputs / output) that costs nothing,
  for tests about file handling and faults; the acceptance tests use a real ``Wav2Lip()``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ladtalk.media.decode import read_frames
from ladtalk.media.encode import VideoWriter
from ladtalk.media.ffmpeg import ffmpeg_exe

FRAME_W, FRAME_H = 240, 180
# astronaut crop (x0, y0, x1, y1) that, scaled to 240x180, puts the face at about x 80-160,
# y 50-140 (dlib finds it with a comfortable score)
_CROP = (60, 0, 380, 240)
FACE_BOX = (45, 140, 75, 165)  # Y1 Y2 X1 X2 around the face in a 240x180 frame (--box order)


def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


#: face box (Y1 Y2 X1 X2, --box order) of :func:`other_person_photo` (where dlib finds it)
OTHER_FACE_BOX = (157, 307, 211, 349)


def other_person_photo() -> np.ndarray:
    """A second real person: scikit-image's ``camera()`` (CC0, photographer Lav Varshney;
    bundled in the wheel), the cameraman's head cropped and upscaled 2x to a 480x440 RGB
    picture (greyscale)."""
    import cv2
    from skimage import data
    img = np.stack([data.camera()] * 3, axis=-1)
    return np.ascontiguousarray(cv2.resize(img[40:260, 100:340], None, fx=2, fy=2,
                                           interpolation=cv2.INTER_CUBIC))


def write_png(path: Path, img: np.ndarray) -> Path:
    import cv2
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return Path(path)


def face_frame(i: int, size: Tuple[int, int] = (FRAME_W, FRAME_H)) -> np.ndarray:
    """Frame ``i`` of the synthetic talking-head clip (the face drifts 1 px per frame)."""
    import cv2
    x0, y0, x1, y1 = _CROP
    dx = int(i) % 12
    img = astronaut()[y0:y1, x0 + dx:x1 + dx]
    return np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA))


def blank_frame(i: int, size: Tuple[int, int] = (FRAME_W, FRAME_H)) -> np.ndarray:
    """A frame without any face (a smooth grey gradient that changes a little over time)."""
    w, h = size
    x = np.linspace(60, 180, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 40, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(x + y + (i % 7), (h, w, 3)).astype(np.uint8).copy()


def write_wav2lip_checkpoint(path: Path, seed: int = 0) -> Path:
    """A real-architecture Wav2Lip with seeded random weights, saved as safetensors."""
    from safetensors.torch import save_file

    from ladtalk.models.wav2lip import Wav2Lip
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in Wav2Lip().state_dict().items()}, str(path))
    return Path(path)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float,
                audio: Optional[Path] = None) -> Path:
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with VideoWriter(path, fps, (w, h), audio=audio, preset="ultrafast", crf=12) as wr:
        for f in frames:
            wr.write(f)
    return Path(path)


def make_face_video(path: Path, n: int, fps: float = 10.0, no_face: Sequence[int] = (),
                    size: Tuple[int, int] = (FRAME_W, FRAME_H)) -> Path:
    frames = [blank_frame(i, size) if i in set(no_face) else face_frame(i, size)
              for i in range(n)]
    return write_video(path, frames, fps)


def speech(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))
    x = 0.25 * env * voice + 0.003 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def write_wav(path: Path, wav: np.ndarray, sr: int = 16000) -> Path:
    import soundfile as sf
    sf.write(str(path), wav, sr, subtype="PCM_16")
    return Path(path)


def make_speech(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> Path:
    return write_wav(path, speech(seconds, sr, seed), sr)


def make_aac(path: Path, seconds: float, seed: int = 0) -> Path:
    """Speech encoded as AAC in an .m4a (a codec MP4 can stream-copy)."""
    wav = Path(str(path) + ".src.wav")
    make_speech(wav, seconds, seed=seed)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-i", str(wav), "-c:a", "aac", "-b:a", "96k", str(path)], check=True)
    wav.unlink()
    return Path(path)


def decode(path: Path, fps: Optional[float] = None) -> np.ndarray:
    return read_frames(path, fps=fps)


class StubGenerator(nn.Module):
    """Wav2Lip-shaped stand-in: ``forward(mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96)``
    in [0, 1]. The output is the reference crop darkened by an audio-dependent amount, so
    the mouth region really changes and depends on the audio."""

    def __init__(self, fail_after: Optional[int] = None):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.6))
        self.calls = 0
        self.fail_after = fail_after

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("stub generator failure (injected)")
        level = (mel.mean(dim=(1, 2, 3)) + 4.0) / 8.0  # [0, 1]
        return (face[:, 3:] * (self.scale + 0.3 * level)[:, None, None, None]).clamp(0, 1)


def tiny_sovqae(resolution: int = 64, seed: int = 0):
    from ladtalk.models.sovqae import SOVQAE, get_config
    torch.manual_seed(seed)
    cfg = get_config("tiny", resolution=resolution, attn_resolutions=())
    return SOVQAE(cfg).eval()


def mask_of_changes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=-1)


def region_mask(shape: Tuple[int, int], rects: List[Tuple[int, int, int, int]],
                grow: int = 0) -> np.ndarray:
    """Boolean (H, W) mask that is True inside any of the (x1, y1, x2, y2) rectangles."""
    h, w = shape
    m = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in rects:
        m[max(0, y1 - grow):min(h, y2 + grow), max(0, x1 - grow):min(w, x2 + grow)] = True
    return m


class CountingDetector:
    """dlib, counting the frames it is asked to look at."""

    name = "dlib"

    def __init__(self):
        from ladtalk.face.detect import make_detector
        self.inner = make_detector("dlib")
        self.frames = 0

    def detect(self, frames):
        self.frames += len(frames)
        return self.inner.detect(frames)
