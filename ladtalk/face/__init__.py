"""Face detection, temporal tracking and crop framing (shared by enrollment and generation).

Coordinates everywhere in this package: boxes are ``(x1, y1, x2, y2)`` floats in full-resolution
frame pixels, measured on pixel *edges* (pixel ``i`` covers ``[i, i+1)``, so a box covering
columns 10..19 has ``x1=10, x2=20``). The upstream Wav2Lip order ``(y1, y2, x1, x2)`` appears
only at the CLI boundary (``--box``), see :class:`FixedBoxDetector`.

Modules:
    detect  detectors (S3FD via face-alignment, dlib HOG, fixed box) and :func:`make_detector`
    track   largest-face selection, gap interpolation, temporal smoothing -> :class:`FaceTrack`
    crop    the square crop framing, crop / paste-back and feathered masks
"""

from ladtalk.face.crop import (
                   CropConfig,
                   CropRegion,
                   crop_face,
                   crop_faces,
                   face_region,
                   feather_mask,
                   paste_back,
)
from ladtalk.face.detect import (
                   DlibHOGDetector,
                   FaceDetector,
                   FixedBoxDetector,
                   S3FDDetector,
                   make_detector,
)
from ladtalk.face.track import (
                   FaceTrack,
                   interpolate_gaps,
                   select_largest,
                   smooth_boxes,
                   track_faces,
)

__all__ = [
    "CropConfig", "CropRegion", "crop_face", "crop_faces", "face_region", "feather_mask",
    "paste_back", "DlibHOGDetector", "FaceDetector", "FixedBoxDetector", "S3FDDetector",
    "make_detector", "FaceTrack", "interpolate_gaps", "select_largest", "smooth_boxes",
    "track_faces",
]
