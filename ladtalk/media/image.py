"""Still images: recognised by content (magic bytes, then an OpenCV attempt), never by name."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ladtalk.media.ffmpeg import PathLike, input_file

_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # png
    b"\xff\xd8\xff",       # jpeg
    b"BM",                 # bmp
    b"II*\x00",            # tiff
    b"MM\x00*",            # tiff
)
# Container signatures that are certainly not still images (skip the OpenCV attempt).
_VIDEO_MAGIC = (b"ftyp", b"\x1aE\xdf\xa3", b"RIFF", b"OggS", b"FLV", b"\x00\x00\x01\xba",
                b"ID3", b"fLaC", b"GIF8")  # GIF may be animated: decode it as video
_HEIF = (b"avif", b"heic", b"heix", b"mif1")
_IMAGE_SNIFF_MAX_BYTES = 64 * 1024 * 1024


def decode_still(path: PathLike) -> Optional[np.ndarray]:
    """``(H, W, 3)`` uint8 RGB via OpenCV (EXIF orientation applied), or ``None``."""
    import cv2
    data = np.fromfile(str(path), dtype=np.uint8)  # unicode-safe, unlike cv2.imread on Windows
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # applies EXIF orientation, drops alpha
    if img is None:
        return None
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def is_still_image(path: PathLike) -> bool:
    """True when the file's *content* is a still image (PNG, JPEG, BMP, TIFF, WebP, ...).

    Magic bytes decide the common formats; for anything else that is not a known video
    container, an OpenCV decode attempt decides. The extension is never consulted.
    """
    p: Path = input_file(path)
    with open(p, "rb") as fh:
        head = fh.read(32)
    if head.startswith(_MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF:
        return False  # single-image HEIF/AVIF: let ffmpeg treat it as a 1-frame video
    if any(head.startswith(m) or head[4:8] == m for m in _VIDEO_MAGIC):
        return False
    if p.stat().st_size > _IMAGE_SNIFF_MAX_BYTES:
        return False
    return decode_still(p) is not None
