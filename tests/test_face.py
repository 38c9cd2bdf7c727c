"""ladtalk.face: detectors, tracking policy (selection, gaps, smoothing), crop geometry."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from ladtalk.errors import CheckpointError, InputError
from ladtalk.face import (
    CropConfig,
    CropRegion,
    DlibHOGDetector,
    FixedBoxDetector,
    S3FDDetector,
    crop_face,
    crop_faces,
    face_region,
    feather_mask,
    interpolate_gaps,
    make_detector,
    paste_back,
    select_largest,
    smooth_boxes,
    track_faces,
)
from ladtalk.face.video_crops import centre_crop, largest_face_crop

# skimage ships astronaut.png inside the wheel (public-domain NASA portrait of Eileen
# Collins); it is read from the package directory, nothing is downloaded.
ASTRONAUT_FACE_CENTRE = (222.0, 127.0)  # (x, y) centre of her face, checked by eye


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data
    img = data.astronaut()
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    return img


@pytest.fixture(scope="module")
def dlib_det() -> DlibHOGDetector:
    return DlibHOGDetector()


def _centre(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


# --------------------------------------------------------------------------- detectors

def test_dlib_finds_the_astronaut_face(astronaut, dlib_det):
    [dets] = dlib_det.detect(astronaut)
    assert dets.shape == (1, 5)
    x1, y1, x2, y2, score = dets[0]
    assert np.linalg.norm(_centre(dets[0]) - ASTRONAUT_FACE_CENTRE) < 20
    assert 70 < x2 - x1 < 160 and 70 < y2 - y1 < 170
    assert score > 0


def test_dlib_box_maps_back_from_the_downscaled_copy(astronaut):
    big = np.ascontiguousarray(np.repeat(np.repeat(astronaut, 2, 0), 2, 1))  # 1024 px
    small_box = DlibHOGDetector(max_side=None).detect(astronaut)[0][0, :4]
    big_box = DlibHOGDetector(max_side=512).detect(big)[0][0, :4]  # detects at 512 px
    assert np.allclose(big_box, 2 * small_box, atol=2.0)


def test_dlib_threads_give_the_same_boxes_in_order(astronaut):
    """Frames split across threads (one detector each) come back in order, unchanged."""
    rng = np.random.default_rng(3)
    frames = []
    for k in range(7):  # the face moved about, some frames without it
        img = np.roll(astronaut, (10 * k, -15 * k), axis=(0, 1))
        frames.append(img if k % 3 else rng.integers(0, 255, img.shape, dtype=np.uint8))
    frames = np.stack(frames)
    one = DlibHOGDetector(threads=1).detect(frames)
    three = DlibHOGDetector(threads=3)
    got = three.detect(frames)
    assert [len(d) for d in one] == [len(d) for d in got] and sum(map(len, one)) >= 4
    assert all(np.array_equal(a, b) for a, b in zip(one, got))
    assert DlibHOGDetector().threads >= 1


def test_dlib_threads_follow_the_process_thread_budget(monkeypatch):
    """torchrun sets OMP_NUM_THREADS=1 for each of several ranks: dlib then stays on one."""
    from ladtalk._util.cores import thread_budget, usable_cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_budget() == 1 and DlibHOGDetector().threads == 1
    assert DlibHOGDetector(threads=2).threads == 2  # asked for explicitly
    for value in ("", "zero", "0"):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert thread_budget() == usable_cores()


def test_blank_frames_have_no_face(dlib_det):
    frames = np.full((2, 240, 320, 3), 127, np.uint8)
    frames[1] = np.random.default_rng(0).integers(0, 255, (240, 320, 3))
    out = dlib_det.detect(frames)
    assert len(out) == 2 and all(d.shape == (0, 5) for d in out)


def test_fixed_box_uses_upstream_order_and_validates():
    det = FixedBoxDetector((10, 110, 20, 90))  # Y1 Y2 X1 X2
    out = det.detect(np.zeros((3, 200, 200, 3), np.uint8))
    assert len(out) == 3
    assert np.array_equal(out[0][0], [20, 10, 90, 110, 1.0])  # x1 y1 x2 y2 score
    with pytest.raises(InputError, match="Y1 Y2 X1 X2"):
        FixedBoxDetector((110, 10, 20, 90))
    with pytest.raises(InputError, match="outside"):
        FixedBoxDetector((300, 400, 300, 400)).detect(np.zeros((1, 200, 200, 3), np.uint8))
    assert isinstance(make_detector("s3fd", box=(10, 110, 20, 90)), FixedBoxDetector)


def test_s3fd_without_weights_is_a_clear_error_and_auto_falls_back(caplog):
    with pytest.raises(CheckpointError, match="--detector dlib"):
        S3FDDetector(device="cpu")
    with caplog.at_level(logging.WARNING):
        det = make_detector("auto", device="cpu")
    assert isinstance(det, DlibHOGDetector)
    assert "falling back" in caplog.text
    with pytest.raises(InputError):
        make_detector("haar")


@pytest.fixture(scope="module")
def s3fd_controlled_weights(tmp_path_factory):
    """Real S3FD architecture with weights set so that exactly one box comes out.

    All confidence heads say 'background' except the stride-64 head, whose single cell on a
    64x64 input says 'face'; its regression bias shrinks the 256 px prior to 32 px, so the
    box on the 64x64 input is (16, 16, 48, 48).
    """
    torch = pytest.importorskip("torch")
    from face_alignment.detection.sfd.net_s3fd import s3fd
    sd = s3fd().state_dict()
    for k in sd:
        if "mbox" in k:
            sd[k].zero_()
    sd["conv3_3_norm_mbox_conf.bias"][3] = -20
    for head in ("conv4_3_norm", "conv5_3_norm", "fc7", "conv7_2"):
        sd[f"{head}_mbox_conf.bias"][1] = -20
    sd["conv6_2_mbox_conf.bias"][1] = 10
    sd["conv6_2_mbox_loc.bias"][2:] = math.log(1 / 8) / 0.2
    path = tmp_path_factory.mktemp("s3fd") / "s3fd.pth"
    torch.save(sd, path)
    return path


def test_s3fd_runs_face_alignment_net_and_maps_boxes(s3fd_controlled_weights):
    det = make_detector("s3fd", device="cpu", weights=s3fd_controlled_weights, max_side=64)
    assert isinstance(det, S3FDDetector)
    frames = np.random.default_rng(0).integers(0, 255, (2, 128, 128, 3), dtype=np.uint8)
    out = det.detect(frames)  # runs at 64x64, boxes mapped back to 128x128
    assert len(out) == 2
    for d in out:
        assert d.shape == (1, 5)
        assert np.allclose(d[0, :4], [32, 32, 96, 96], atol=0.5)
        assert d[0, 4] > 0.99


# --------------------------------------------------------------------------- tracking

class StubDetector:
    """Returns scripted detections and records which frames it saw."""

    name = "stub"

    def __init__(self, per_frame):
        self.per_frame = per_frame
        self.seen = 0
        self.calls = []

    def detect(self, frames):
        out = []
        for f in frames:
            i = int(f[0, 0, 0]) + 256 * int(f[0, 0, 1])  # frame index encoded in pixel
            self.calls.append(i)
            out.append(np.asarray(self.per_frame[i], dtype=float).reshape(-1, 5))
        return out


def _indexed_frames(n, h=32, w=32):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, 0, 0, 0], frames[i, 0, 0, 1] = i % 256, i // 256
    return frames


def test_largest_face_is_selected():
    dets = [np.array([[0, 0, 10, 10, 0.9], [50, 50, 90, 100, 0.6]]),
            np.zeros((0, 5)),
            np.array([[5, 5, 45, 45, 0.8], [0, 0, 20, 20, 0.99]])]
    boxes, scores = select_largest(dets)
    assert np.array_equal(boxes[0], [50, 50, 90, 100]) and scores[0] == 0.6
    assert np.isnan(boxes[1]).all()
    assert np.array_equal(boxes[2], [5, 5, 45, 45])
    # a weak detection does not win on size (dlib false positives)
    boxes, _ = select_largest([np.array([[0, 0, 30, 30, 1.5], [0, 0, 60, 60, 0.1]])])
    assert np.array_equal(boxes[0], [0, 0, 30, 30])


def test_smoothing_reduces_jitter_without_lag():
    rng = np.random.default_rng(1)
    n = 200
    t = np.arange(n, dtype=float)
    truth = np.stack([100 + 0.8 * t, 80 + 0.3 * t, 200 + 0.8 * t, 190 + 0.3 * t], axis=1)
    noisy = truth + rng.normal(0, 3.0, truth.shape)
    smoothed = smooth_boxes(noisy, window=5)
    err_before = np.sqrt(np.mean((noisy - truth) ** 2))
    err_after = np.sqrt(np.mean((smoothed - truth) ** 2))
    assert err_after < 0.6 * err_before
    # a centred, symmetric window reproduces constant-speed motion exactly (no lag, no end bias)
    assert np.allclose(smooth_boxes(truth, window=5), truth)
    # missing frames stay missing and split the smoothing
    holed = truth.copy()
    holed[100] = np.nan
    out = smooth_boxes(holed, window=9)
    assert np.isnan(out[100]).all() and np.allclose(out[99], truth[99])


def test_smoothing_does_not_blend_across_a_jump():
    boxes = np.array([[0, 0, 50, 50]] * 10 + [[300, 300, 350, 350]] * 10, dtype=float)
    out = smooth_boxes(boxes, window=5)
    assert np.array_equal(out, boxes)


def test_gap_policy():
    n = 40
    boxes = np.tile(np.array([10.0, 20.0, 110.0, 140.0]), (n, 1))
    boxes[:, [0, 2]] += np.arange(n)[:, None]  # moving right 1 px / frame
    raw = boxes.copy()
    raw[0:2] = np.nan       # leading gap: not filled
    raw[10:13] = np.nan     # short interior gap: filled linearly
    raw[20:31] = np.nan     # 11 frames > max_gap: stays missing
    filled, mask = interpolate_gaps(raw, max_gap=5)
    assert np.isnan(filled[0:2]).all()
    assert np.allclose(filled[10:13], boxes[10:13]) and mask[10:13].all()
    assert np.isnan(filled[20:31]).all() and not mask[20:31].any()
    # incompatible neighbours (a cut / another face) are not bridged
    cut = boxes.copy()
    cut[15:] += 400
    cut[13:15] = np.nan
    filled, mask = interpolate_gaps(cut, max_gap=5)
    assert np.isnan(filled[13:15]).all()


def test_track_faces_reports_missing_frames_with_timestamps():
    n = 50
    per = [[[10 + i, 10, 110 + i, 120, 0.9]] for i in range(n)]
    for i in list(range(2, 5)) + list(range(30, 40)):
        per[i] = []
    per[7] = [[10 + 7, 10, 117, 120, 0.9], [0, 0, 5, 5, 0.99]]  # a small second face
    det = StubDetector(per)
    seen = []
    track = track_faces(_indexed_frames(n), det, fps=25, chunk_size=8, max_gap=5,
                        progress=seen.append)
    assert seen == [8, 16, 24, 32, 40, 48, 50]
    assert sorted(det.calls) == list(range(n))
    assert track.frame_size == (32, 32) and track.detector == "stub" and len(track) == n
    assert track.missing_frames == list(range(30, 40))
    assert track.filled[2:5].all()
    assert track.missing_spans() == [(1.2, 1.6)]
    assert track.missing_timestamps[0] == pytest.approx(1.2)
    assert "1.20-1.60s" in track.report("clip.mp4") and "clip.mp4" in track.report("clip.mp4")
    assert track.box(7)[0] == pytest.approx(17, abs=1e-6)  # the larger face, smoothed linear
    assert track.box(35) is None and track.has_face(20)
    again = type(track).from_json(track.to_json())
    assert again.missing_frames == track.missing_frames
    assert np.allclose(again.boxes[~np.isnan(again.boxes)], track.boxes[~np.isnan(track.boxes)],
                       atol=1e-3)


def test_track_faces_streams_chunks_and_detects_every_kth_frame():
    n = 20
    per = [[[i, 0, 100 + i, 100, 0.9]] for i in range(n)]
    det = StubDetector(per)
    frames = _indexed_frames(n)
    chunks = (frames[s:s + 6] for s in range(0, n, 6))  # a generator, like iter_frames
    track = track_faces(chunks, det, fps=25, detect_every=3, smooth=False)
    assert det.calls == list(range(0, n, 3))
    assert track.missing_frames == []
    # skipped frames are interpolated; the trailing skipped frame holds the last box
    assert np.allclose(track.boxes[:19, 0], np.arange(19))
    assert track.boxes[19, 0] == 18


def test_no_face_anywhere_is_a_clear_error():
    track = track_faces(_indexed_frames(6), StubDetector([[]] * 6), fps=25)
    with pytest.raises(InputError, match="no face was detected in any of the 6 frames of a.mp4"):
        track.require_face("a.mp4")


def test_track_on_real_frames_follows_the_face(astronaut, dlib_det):
    # dlib also reports weak, larger false positives on some of these frames (score ~0.1
    # vs ~1.5): the track must stay on the real face. HOG boxes move in ~8 px steps.
    shifts = [0, 6, 12, 20, 40]
    frames = np.stack([np.roll(astronaut, s, axis=1) for s in shifts])
    track = track_faces(frames, dlib_det, fps=25, smooth=False)
    assert track.missing_frames == []
    xs = track.boxes[:, 0] - track.boxes[0, 0]
    assert np.allclose(xs, shifts, atol=9)
    assert np.allclose(track.boxes[:, 1], track.boxes[0, 1], atol=2)


# --------------------------------------------------------------------------- crop geometry

def test_face_region_is_square_and_centred_on_padded_box():
    box = (100.0, 50.0, 180.0, 150.0)  # w 80, h 100
    r = face_region(box, (640, 480), CropConfig(pads=(0, 10, 0, 0)))
    assert r.is_square and r.width == 110  # padded height 110 is the larger side
    assert (r.x1 + r.x2) / 2 == pytest.approx(140, abs=0.5)
    assert (r.y1 + r.y2) / 2 == pytest.approx(105, abs=0.5)
    r2 = face_region(box, (640, 480), CropConfig(pads=(0, 10, 0, 0), margin=1.5))
    assert r2.width == 165
    up = face_region((-20, 400, 70, 520), (640, 480), CropConfig(square=False))
    assert up.as_tuple() == (0, 400, 70, 480)  # upstream: padded box clipped to the frame


def test_crop_at_frame_edge_is_square_with_edge_replication():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    r = face_region((-20, -10, 40, 50), (160, 120), CropConfig(pads=(0, 0, 0, 0)))
    assert r.x1 < 0 and r.y1 < 0 and r.width == r.height == 60
    crop = crop_face(frame, r, r.width)  # native size: no resampling
    assert crop.shape == (60, 60, 3)
    ox, oy = -r.x1, -r.y1
    assert np.array_equal(crop[oy:, ox:], frame[:60 - oy, :60 - ox])
    assert np.array_equal(crop[0, ox:], frame[0, :60 - ox])  # rows above: top row repeated
    assert np.array_equal(crop[oy:, 0], frame[:60 - oy, 0])  # columns left: first column
    assert crop_faces(frame[None].repeat(2, 0), [r, r], 32).shape == (2, 32, 32, 3)


def test_crop_paste_round_trip_geometry(astronaut):
    frame = astronaut
    r = face_region((176.7, 65.0, 278.8, 176.4), (512, 512))
    # same size: the paste is the identity, exactly
    same = crop_face(frame, r, r.width)
    assert np.array_equal(paste_back(frame, same, r), frame)
    # resampled (down to 96 and back up): close inside, untouched outside
    small = crop_face(frame, r, 96)
    out = paste_back(frame, small, r)
    outside = np.ones(frame.shape[:2], bool)
    outside[r.y1:r.y2, r.x1:r.x2] = False
    assert np.array_equal(out[outside], frame[outside])
    inside = (slice(r.y1, r.y2), slice(r.x1, r.x2))
    mse = np.mean((out[inside].astype(float) - frame[inside]) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 24
    # feathered mask: pixels where the mask is 0 are bit-identical
    mask = feather_mask(r.width, "ellipse", feather=0.2)
    bright = np.full_like(small, 255)
    out = paste_back(frame, bright, r, mask=mask)
    region = out[inside].astype(int)
    orig = frame[inside].astype(int)
    assert np.array_equal(region[mask == 0], orig[mask == 0])
    assert np.array_equal(region[mask == 1], np.full_like(region[mask == 1], 255))
    assert np.array_equal(out[outside], frame[outside])
    assert paste_back(frame, bright, r, mask=mask) is not frame
    # coordinate mapping: crop corners are the region corners, and the maps are inverses
    corners = r.crop_to_frame(np.array([[0, 0], [96, 96]]), 96)
    assert np.allclose(corners, [[r.x1, r.y1], [r.x2, r.y2]])
    pts = np.array([[10.5, 20.25], [300.0, 100.0]])
    assert np.allclose(r.crop_to_frame(r.frame_to_crop(pts, 96), 96), pts)


def test_paste_back_region_partly_outside_frame():
    frame = np.full((100, 100, 3), 50, np.uint8)
    r = CropRegion(80, -10, 120, 30, 100, 100)
    out = paste_back(frame, np.full((16, 16, 3), 200, np.uint8), r)
    assert (out[0:30, 80:100] == 200).all()
    assert (out[30:, :] == 50).all() and (out[:, :80] == 50).all()


def test_feather_mask_shape_and_edges():
    m = feather_mask(64, "ellipse", feather=0.25)
    assert m.shape == (64, 64) and m.dtype == np.float32
    assert m.min() == 0.0 and m.max() == 1.0
    assert m[32, 32] == 1.0
    assert (m[0, :] == 0).all() and (m[:, 0] == 0).all() and (m[-1, :] == 0).all()
    assert m[0, 0] == 0 and m[32, 1] < 0.05  # soft edge, no box edge at the border
    row = m[32, :32]
    assert np.all(np.diff(row) >= -1e-6)  # rises monotonically towards the centre
    lower = feather_mask((64, 48), "rect", feather=0.2, bounds=(0.1, 0.5, 0.9, 1.0))
    assert lower.shape == (48, 64)
    assert (lower[:24] == 0).all() and lower[36, 32] == 1.0
    with pytest.raises(ValueError):
        feather_mask(32, "star")


def test_largest_face_crop_frames_the_face_like_generation(astronaut, dlib_det):
    crop, box = largest_face_crop(astronaut, dlib_det, 64, "astronaut.png")
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert np.linalg.norm(_centre(box) - ASTRONAUT_FACE_CENTRE) < 20
    region = face_region(np.asarray(box), (512, 512), CropConfig())
    assert np.array_equal(crop, crop_face(astronaut, region, 64))
    with pytest.raises(InputError, match="no face found in 'blank.png'"):
        largest_face_crop(np.zeros((128, 128, 3), np.uint8), dlib_det, 64, "blank.png")


def test_centre_crop_takes_the_middle_square():
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, 20:80] = 255  # the centre 60x60 square is white, the sides black
    assert (centre_crop(img, 30) == 255).all()


def test_a_4k_clip_finds_the_face_as_often_as_the_same_clip_at_512px(tmp_path, pytestconfig):
    """The face-found rate does not depend on the resolution: the astronaut clip at 512 px and
    in a 4K frame (face ~400 px, ~50 px on the 480 px copy: under dlib's 80 px window)."""
    import subprocess

    from ladtalk.media.decode import iter_frames
    from ladtalk.media.ffmpeg import ffmpeg_exe
    src, tracks = pytestconfig.rootpath / "examples" / "astronaut.mp4", {}
    clips = {"512": "scale=512:512", "4k": "scale=1080:1080,pad=3840:2160:1280:540"}
    for name, vf in clips.items():  # 5 frames of the astronaut clip, scaled and placed
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-an", "-frames:v", "5",
                        "-vf", vf, str(tmp_path / f"{name}.mp4")], check=True)
        tracks[name] = track_faces(iter_frames(tmp_path / f"{name}.mp4"),
                                   make_detector("dlib"), fps=25, smooth=False)
    expected = (tracks["512"].boxes / 2) * (1080 / 256) + np.array([1280, 540, 1280, 540])
    err = np.abs(tracks["4k"].boxes - expected).max() / (expected[0, 2] - expected[0, 0])
    assert tracks["512"].missing_frames == tracks["4k"].missing_frames == [] and err < 0.15
    first_4k = next(iter_frames(tmp_path / "4k.mp4"))  # on the 480 px copy alone: no face
    assert not any(map(len, DlibHOGDetector(retry_side=None).detect(first_4k)))
