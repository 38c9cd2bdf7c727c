"""LSE-C / LSE-D lip-sync scores, computed as syncnet_python's ``SyncNetInstance.evaluate``.

Wav2Lip's ``evaluation/scores_LSE`` scripts run the same code, so the numbers are comparable
with the Wav2Lip paper and with every paper that reuses its scripts (LaDTalk's Tables 1-3).

Conventions (each one changes the numbers if done differently):

* **Input video**: face crops of 224x224 in **BGR** order with raw 0..255 values (upstream
  reads frames with ``cv2.imread``), 25 fps. Crops come from :func:`syncnet_crops`
  (syncnet_python's ``run_pipeline.py`` framing) applied to our own face boxes.
* **Audio**: 16 kHz mono; MFCCs from the raw int16 values (:mod:`ladtalk.metrics.mfcc`), 100
  MFCC frames per second, i.e. 4 MFCC columns per video frame.
* **Windows**: ``min_length = min(n_frames, floor(n_samples / 640))`` and ``N = min_length - 5``
  (one window fewer than exist - upstream's choice, kept). Video window i = frames i..i+4 as
  (3, 5, 224, 224); audio window i = MFCC columns 4i..4i+19 as (1, 13, 20).
* **Distances**: the N audio embeddings are padded with ``vshift`` zero rows on both sides;
  ``d[i, j] = ||v_i - a_{i+j-vshift} + 1e-6||_2`` (torch ``pairwise_distance``), j = 0..2 vshift,
  and ``mdist[j] = mean_i d[i, j]`` including the zero-padded pairs.
* **Scores**: ``j* = argmin mdist``; **LSE-D** = ``mdist[j*]``; **LSE-C** = ``median(mdist) -
  mdist[j*]``; **offset** = ``vshift - j*`` (positive: the audio leads the video).
  Embeddings are not normalised.

The JPEG round trip of upstream's ffmpeg frame dump is not reproduced (frames are used as
given), and neither is the XVID re-encode of ``run_pipeline.py``'s crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ladtalk._util.device import DeviceLike, resolve_device
from ladtalk.checkpoints import load_state_dict, resolve_checkpoint
from ladtalk.errors import InputError
from ladtalk.metrics.mfcc import SAMPLE_RATE, syncnet_mfcc
from ladtalk.models.syncnet_lse import (
    CLIP_FRAMES,
    CROP_SIZE,
    MFCC_WINDOW,
    SyncNetS,
    adapt_state_dict,
)

VIDEO_FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS      # 640
MFCC_PER_FRAME = 4                                  # 100 MFCC frames/s over 25 video frames/s
DEFAULT_VSHIFT = 15                                 # run_syncnet.py / Wav2Lip scripts default
DEFAULT_BATCH = 20


def window_count(n_frames: int, n_samples: int) -> int:
    """Number of windows upstream embeds: ``min(n_frames, floor(n_samples/640)) - 5``."""
    return min(n_frames, n_samples // SAMPLES_PER_FRAME) - CLIP_FRAMES


@torch.no_grad()
def embed_windows(frames_bgr: np.ndarray, mfcc: np.ndarray, model: SyncNetS, n_windows: int,
                  batch_size: int = DEFAULT_BATCH):
    """Lip and audio embeddings ``(N, 1024)`` each, as float32 CPU tensors.

    Runs on the model's device and in its parameter dtype (float32 normally; a ``.double()``
    model reproduces upstream's float32 numbers within the golden tolerances too).
    """
    param = next(model.parameters())
    dev, dtype = param.device, param.dtype
    video = torch.from_numpy(np.ascontiguousarray(frames_bgr))            # (T, H, W, C) uint8
    cc = torch.from_numpy(mfcc.astype(np.float32))                       # (13, n_mfcc)
    lip, aud = [], []
    for start in range(0, n_windows, batch_size):
        idx = range(start, min(n_windows, start + batch_size))
        clips = torch.stack([video[i:i + CLIP_FRAMES] for i in idx])     # (B, 5, H, W, C)
        clips = clips.permute(0, 4, 1, 2, 3).to(device=dev, dtype=dtype)  # (B, C, 5, H, W)
        lip.append(model.forward_lip(clips).float().cpu())
        wins = torch.stack([cc[:, MFCC_PER_FRAME * i:MFCC_PER_FRAME * i + MFCC_WINDOW]
                            for i in idx]).unsqueeze(1)                   # (B, 1, 13, 20)
        aud.append(model.forward_aud(wins.to(device=dev, dtype=dtype)).float().cpu())
    return torch.cat(lip), torch.cat(aud)


def offset_distances(lip: torch.Tensor, aud: torch.Tensor, vshift: int = DEFAULT_VSHIFT
                     ) -> torch.Tensor:
    """``(N, 2 vshift + 1)`` distances between lip window i and audio window i + j - vshift.

    Audio windows outside 0..N-1 are zero vectors (upstream's padding), not real audio.
    """
    padded = F.pad(aud, (0, 0, vshift, vshift))                          # (N + 2 vshift, D)
    shifted = padded.unfold(0, 2 * vshift + 1, 1).permute(0, 2, 1)       # (N, 2 vshift + 1, D)
    return F.pairwise_distance(lip.unsqueeze(1).expand_as(shifted), shifted)


def scores_from_distances(dists: torch.Tensor, vshift: int = DEFAULT_VSHIFT) -> Dict[str, float]:
    """LSE-D, LSE-C and offset from the ``(N, 2 vshift + 1)`` distance matrix."""
    mdist = dists.mean(dim=0)
    min_val, min_idx = torch.min(mdist, 0)
    median = torch.median(mdist)            # odd count: the middle value, like upstream
    return {"lse_d": float(min_val), "lse_c": float(median - min_val),
            "offset": int(vshift - int(min_idx)), "median_dist": float(median),
            "mdist": mdist}


def lse_scores(frames_bgr_224: np.ndarray, wav_16k: np.ndarray, model: SyncNetS,
               batch_size: int = DEFAULT_BATCH, vshift: int = DEFAULT_VSHIFT,
               device: DeviceLike = None, channel_order: str = "bgr",
               return_features: bool = False) -> Dict[str, object]:
    """LSE-C / LSE-D of one face track, exactly as syncnet_python scores it.

    Args:
        frames_bgr_224: ``(T, 224, 224, 3)`` uint8 face crops at 25 fps (see :func:`syncnet_crops`).
        wav_16k: mono 16 kHz samples, int16 or float in [-1, 1] (scaled by 32768).
        model: a :class:`SyncNetS` (eval mode is set here); its parameter dtype is used.
        device: move the model there first (default: leave it where it is).
        channel_order: ``"bgr"`` (upstream) or ``"rgb"`` (flipped to BGR here).
        return_features: also return ``mfcc``, ``lip_embeddings`` and ``audio_embeddings``.

    Returns a dict with ``lse_c``, ``lse_d``, ``offset`` (frames; positive = audio leads),
    ``median_dist``, ``n_windows``, ``mdist`` (2 vshift + 1,) and ``dists`` (N, 2 vshift + 1)
    as numpy float32 arrays.
    """
    frames = np.asarray(frames_bgr_224)
    if frames.ndim != 4 or frames.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise InputError(f"SyncNet scoring needs (T, {CROP_SIZE}, {CROP_SIZE}, 3) face crops, "
                         f"got shape {frames.shape}; crop with syncnet_crops() first")
    if channel_order.lower() == "rgb":
        frames = frames[..., ::-1]
    elif channel_order.lower() != "bgr":
        raise InputError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    audio = np.asarray(wav_16k)
    if audio.ndim != 1:
        raise InputError(f"SyncNet scoring needs mono audio, got samples shaped {audio.shape}")
    if vshift < 0:
        raise InputError(f"vshift must be >= 0, got {vshift}")
    n = window_count(len(frames), len(audio))
    if n < 1:
        raise InputError(
            f"too short for SyncNet scoring: {len(frames)} frames and {len(audio)} samples "
            f"({len(audio) / SAMPLE_RATE:.2f} s) give {n} windows; need at least "
            f"{CLIP_FRAMES + 1} frames (0.24 s) of both video and audio")

    mfcc = syncnet_mfcc(audio)
    need = MFCC_PER_FRAME * (n - 1) + MFCC_WINDOW
    if mfcc.shape[1] < need:   # cannot happen for 16 kHz audio; guards odd inputs
        raise InputError(f"audio gives {mfcc.shape[1]} MFCC frames, {need} needed")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None:
        model = model.to(resolve_device(device))
    model.eval()
    lip, aud = embed_windows(frames, mfcc, model, n, batch_size)
    dists = offset_distances(lip, aud, vshift)
    out = scores_from_distances(dists, vshift)
    out["mdist"] = out["mdist"].numpy()
    out.update(n_windows=n, vshift=vshift, dists=dists.numpy())
    if return_features:
        out.update(mfcc=mfcc, lip_embeddings=lip.numpy(), audio_embeddings=aud.numpy())
    return out


# ----------------------------------------------------------------------------------------------
# Face crops (syncnet_python run_pipeline.py ``crop_video`` framing)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncNetCropConfig:
    """Crop framing of syncnet_python's ``run_pipeline.py``.

    For a box (x1, y1, x2, y2): half size ``bs = max(w, h) / 2``, centre (cx, cy); ``bs``, cx
    and cy are median-filtered over the track (``scipy.signal.medfilt``, kernel 13, which zero
    pads at the ends as upstream does). The frame is padded by ``int(bs (1 + 2 cs))`` pixels of
    value 110 and the crop is rows ``[cy - bs, cy + bs (1 + 2 cs))`` and columns
    ``[cx - bs (1 + cs), cx + bs (1 + cs))`` (a square of side 2 bs (1 + cs) = 2.8 bs for cs =
    0.4, extending 0.8 bs below the box for the chin/neck and 0.4 bs to each side), truncated
    to integers as upstream does, then resized to 224 with bilinear interpolation.
    """

    crop_scale: float = 0.40
    smooth_kernel: int = 13
    pad_value: int = 110
    size: int = CROP_SIZE


def syncnet_crops(frames: Union[np.ndarray, Sequence[np.ndarray]], boxes: np.ndarray,
                  config: SyncNetCropConfig = SyncNetCropConfig()) -> np.ndarray:
    """Crop one face track for SyncNet: ``(T, 224, 224, C)`` uint8, same channel order as input.

    ``boxes``: ``(T, 4)`` float ``x1, y1, x2, y2`` per frame (from our face detector/tracker).
    Tracks shorter than the median kernel use the largest odd kernel <= T (upstream requires
    tracks of >= 100 frames and never meets this case; zero padding would otherwise collapse
    the box to 0).
    """
    import cv2
    from scipy.signal import medfilt

    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(frames):
        raise InputError(f"syncnet_crops needs one (x1, y1, x2, y2) box per frame: got boxes "
                         f"shaped {boxes.shape} for {len(frames)} frames")
    if len(boxes) == 0:
        raise InputError("syncnet_crops got an empty face track")
    bad = np.nonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
                     | ~np.isfinite(boxes).all(axis=1))[0]
    if bad.size:
        raise InputError(f"face box of frame {int(bad[0])} is empty or not finite: "
                         f"{boxes[bad[0]].tolist()}")
    half = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    kernel = min(config.smooth_kernel, len(boxes) if len(boxes) % 2 else len(boxes) - 1)
    if kernel > 1:
        half, cx, cy = (medfilt(v, kernel_size=kernel) for v in (half, cx, cy))

    cs = config.crop_scale
    out = []
    for t, frame in enumerate(frames):
        frame = np.asarray(frame)
        bs = half[t]
        pad = int(bs * (1 + 2 * cs))
        widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (frame.ndim - 2)
        padded = np.pad(frame, widths, mode="constant", constant_values=config.pad_value)
        my, mx = cy[t] + pad, cx[t] + pad
        face = padded[int(my - bs):int(my + bs * (1 + 2 * cs)),
                      int(mx - bs * (1 + cs)):int(mx + bs * (1 + cs))]
        out.append(cv2.resize(face, (config.size, config.size)))
    return np.stack(out).astype(np.uint8, copy=False)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------

CHECKPOINT_NAME = "syncnet_lse"


def load_syncnet_lse(checkpoint: Optional[Union[str, Path]] = None,
                     device: DeviceLike = None) -> SyncNetS:
    """Build :class:`SyncNetS` with pretrained weights, in eval mode, on ``device``.

    The file is ``resolve_checkpoint("syncnet_lse", override=checkpoint)``: ``checkpoint`` (a
    path or Hub reference, the CLI's ``--syncnet``), else ``$LADTALK_SYNCNET``, else the default
    Hub mirror of ``syncnet_v2.model``, read by :func:`ladtalk.checkpoints.load_state_dict`
    (safetensors, or ``torch.load(weights_only=True)`` for ``.model``/``.pth``).

    The public ``syncnet_v2.model`` is a ``torch.save``d mapping of parameter names to tensors,
    not a pickled module: upstream's ``SyncNetInstance.loadParameters`` iterates
    ``loaded_state.items()`` and copies each tensor into ``S().state_dict()[name]`` (forks now
    load it with ``weights_only=True``). Its keys are the plain ``netcnnaud.0.weight`` ...
    names; the old file may lack BatchNorm ``num_batches_tracked`` buffers, which are filled
    in (see :func:`~ladtalk.models.syncnet_lse.adapt_state_dict`). A file that pickles a whole
    module would be refused by the weights-only loader (it references Python classes) and
    nothing in it would run; extract its ``state_dict()`` on a trusted machine first.
    """

    path = resolve_checkpoint(CHECKPOINT_NAME, override=checkpoint)
    model = SyncNetS()
    state = adapt_state_dict(load_state_dict(path, strip_prefix=None), model, source=str(path))
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()


def aggregate(results: Sequence[Dict[str, object]]) -> Dict[str, float]:
    """Wav2Lip ``calculate_scores_LRS.py`` aggregation: plain means over videos."""
    if not results:
        raise InputError("no LSE results to aggregate")
    return {"lse_c": float(np.mean([r["lse_c"] for r in results])),
            "lse_d": float(np.mean([r["lse_d"] for r in results])),
            "n_videos": len(results)}


__all__ = ["lse_scores", "syncnet_crops", "SyncNetCropConfig", "load_syncnet_lse",
           "window_count", "embed_windows", "offset_distances",
           "scores_from_distances", "aggregate"]
