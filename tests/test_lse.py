"""LSE-C / LSE-D machinery without the golden fixtures: model layout, MFCC, windowing,
offset search, crops and weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ladtalk.errors import CheckpointError, InputError
from ladtalk.metrics import lse
from ladtalk.metrics.mfcc import frame_count, mel_filterbank, syncnet_mfcc
from ladtalk.models.syncnet_lse import SyncNetS, adapt_state_dict, parameter_count


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SyncNetS().eval()


def test_model_layout(model):
    sd = model.state_dict()
    assert len(sd) == 102 and parameter_count(model) == 13_631_616
    assert list(sd)[:2] == ["netcnnaud.0.weight", "netcnnaud.0.bias"]
    heads = [k.split(".")[0] for k in sd]
    assert list(dict.fromkeys(heads)) == ["netcnnaud", "netfcaud", "netfclip", "netcnnlip"]
    assert tuple(sd["netcnnlip.0.weight"].shape) == (96, 3, 5, 7, 7)
    assert tuple(sd["netcnnaud.18.weight"].shape) == (512, 256, 5, 4)
    with torch.no_grad():
        assert model.aud_trunk(torch.zeros(2, 1, 13, 20)).shape == (2, 512)
        assert model.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
        assert model.lip_trunk(torch.zeros(1, 3, 5, 224, 224)).shape == (1, 512)


# ----------------------------------------------------------------------------- MFCC

def test_mfcc_frame_rule_and_filterbank():
    assert frame_count(400) == 1 and frame_count(401) == 2 and frame_count(46536) == 290
    bank = mel_filterbank()
    assert bank.shape == (26, 257) and bank.max() == 1.0 and (bank >= 0).all()
    assert syncnet_mfcc(np.zeros(1000, np.int16)).shape == (13, frame_count(1000))


def test_mfcc_silence_and_float_scaling():
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 3000, 4000)).astype(np.int16)
    x[1600:2400] = 0            # frames 11, 12 (samples 1760..2319, pre-emphasis incl.) are 0
    cc = syncnet_mfcc(x)
    eps_log = np.log(np.finfo(float).eps)
    assert cc[0, 11] == cc[0, 12] == pytest.approx(eps_log)   # log energy of silent frames
    assert cc[0, 10] > 0
    # float input in [-1, 1] is scaled to int16 units, giving the same MFCCs
    np.testing.assert_allclose(syncnet_mfcc(x / 32768.0), cc, atol=1e-9)
    # naive float input would shift row 0 by log(32768^2)
    with pytest.raises(InputError, match="16 kHz"):
        syncnet_mfcc(x, sample_rate=8000)


def test_mfcc_row0_is_log_frame_power():
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    cc = syncnet_mfcc(tone)
    assert cc.shape == (13, 99)
    # frame 3 = samples 480..879 after pre-emphasis, no window, 512-point power spectrum
    emph = tone[480:880] - 0.97 * tone[479:879].astype(np.float64)
    power = np.abs(np.fft.rfft(emph, 512)) ** 2 / 512
    assert cc[0, 3] == pytest.approx(np.log(power.sum()), rel=1e-12)
    # cepstra 1..12 are lifted: scaling the signal changes only row 0
    cc2 = syncnet_mfcc((tone // 2).astype(np.int16))
    np.testing.assert_allclose(cc2[1:], cc[1:], atol=0.05)
    assert cc2[0, 3] == pytest.approx(cc[0, 3] - np.log(4), abs=1e-3)


# ----------------------------------------------------------------------------- windows & scores

def test_window_count_rule():
    assert lse.window_count(73, 46536) == 67            # audio-limited (floor(46536/640) = 72)
    assert lse.window_count(30, 10 * 640 * 10) == 25    # video-limited
    assert lse.window_count(5, 16000) == 0


def test_offset_distances_zero_padding():
    rng = np.random.default_rng(1)
    lip = torch.from_numpy(rng.normal(size=(6, 4)).astype(np.float32))
    aud = torch.from_numpy(rng.normal(size=(6, 4)).astype(np.float32))
    vshift = 2
    d = lse.offset_distances(lip, aud, vshift).numpy()
    assert d.shape == (6, 5)
    for i in range(6):
        for j in range(5):
            k = i + j - vshift
            a = aud[k].numpy() if 0 <= k < 6 else np.zeros(4, np.float32)
            assert d[i, j] == pytest.approx(np.linalg.norm(lip[i].numpy() - a + 1e-6), rel=1e-6)


def test_scores_from_distances():
    dists = torch.tensor([[5.0, 3.0, 4.0, 9.0, 6.0], [5.0, 1.0, 4.0, 7.0, 6.0]])
    out = lse.scores_from_distances(dists, vshift=2)
    assert out["lse_d"] == 2.0                          # column 1 mean
    assert out["offset"] == 1                           # vshift - argmin
    assert out["lse_c"] == pytest.approx(5.0 - 2.0)     # median(5, 2, 4, 8, 6) - min


class _RecordingModel(SyncNetS):
    """Stands in for SyncNet: records what each window receives; cheap embeddings."""

    def __init__(self):
        torch.nn.Module.__init__(self)
        self.w = torch.nn.Parameter(torch.ones(1))
        self.clips, self.auds = [], []

    def forward_lip(self, clips):
        self.clips.append(clips.clone())
        return clips.mean(dim=(1, 3, 4))                # (B, 5): per-frame means

    def forward_aud(self, wins):
        self.auds.append(wins.clone())
        return wins[:, 0, 0, ::4]                       # (B, 5)


def test_lse_scores_windowing_and_layout():
    n_frames, n_samples = 14, 12 * 640 + 100            # audio-limited: min(14, 12) - 5 = 7
    frames = np.zeros((n_frames, 224, 224, 3), np.uint8)
    for t in range(n_frames):
        frames[t, ..., 0] = 10 * t                      # B (BGR channel 0) encodes time
        frames[t, ..., 2] = 200                         # R is constant
    rng = np.random.default_rng(2)
    audio = rng.normal(0, 2000, n_samples).astype(np.int16)
    rec = _RecordingModel()
    out = lse.lse_scores(frames, audio, rec, batch_size=3, vshift=2, return_features=True)
    assert out["n_windows"] == 7 and out["dists"].shape == (7, 5) and out["mdist"].shape == (5,)
    clips, auds = torch.cat(rec.clips), torch.cat(rec.auds)
    assert [len(c) for c in rec.clips] == [3, 3, 1]
    assert clips.shape == (7, 3, 5, 224, 224) and auds.shape == (7, 1, 13, 20)
    for i in range(7):                                  # channels before time, frames i..i+4
        assert clips[i, 0, :, 0, 0].tolist() == [10.0 * (i + t) for t in range(5)]
        assert float(clips[i, 2].unique()) == 200.0     # raw 0..255, no normalisation
        np.testing.assert_allclose(auds[i, 0].numpy(),
                                   out["mfcc"][:, 4 * i:4 * i + 20].astype(np.float32))
    # RGB input is flipped to BGR before the net
    rec2 = _RecordingModel()
    lse.lse_scores(frames[..., ::-1], audio, rec2, vshift=2, channel_order="rgb")
    assert torch.equal(torch.cat(rec2.clips), clips)


def test_lse_scores_rejects_bad_input(model):
    with pytest.raises(InputError, match="224"):
        lse.lse_scores(np.zeros((10, 96, 96, 3), np.uint8), np.zeros(16000, np.int16), model)
    with pytest.raises(InputError, match="too short"):
        lse.lse_scores(np.zeros((5, 224, 224, 3), np.uint8), np.zeros(16000, np.int16), model)


# ----------------------------------------------------------------------------- crops

def test_syncnet_crops_framing():
    frame = np.zeros((400, 400, 3), np.uint8)
    # box 100 x 100 centred at (200, 200): bs = 50, crop rows [150, 290), cols [130, 270)
    frame[150:290, 130:270] = 255
    boxes = np.tile([150.0, 150.0, 250.0, 250.0], (3, 1))
    crops = lse.syncnet_crops(np.stack([frame] * 3), boxes)
    assert crops.shape == (3, 224, 224, 3) and crops.dtype == np.uint8
    assert crops.min() == 255                            # exactly the painted square
    shifted = boxes + [0, 4, 0, 4]
    assert lse.syncnet_crops(np.stack([frame] * 3), shifted)[:, -1].max() == 0
    # boxes near the border pull in upstream's pad value 110
    corner = lse.syncnet_crops(np.zeros((1, 400, 400, 3), np.uint8), [[0, 0, 100, 100]])
    assert corner[0, 0, 0, 0] == 110 and corner[0, -1, -1, 0] == 0


def test_syncnet_crops_median_smoothing_and_errors():
    frames = np.zeros((15, 300, 300, 3), np.uint8)
    boxes = np.tile([100.0, 100.0, 200.0, 200.0], (15, 1))
    boxes[7] += 40                                       # one outlier detection
    frames[:, 100:240, 80:220] = 255                     # the crop of the steady box
    crops = lse.syncnet_crops(frames, boxes)
    assert crops[7].min() == 255                         # outlier removed by the median
    with pytest.raises(InputError, match="frame 2"):
        bad = boxes.copy()
        bad[2, 2] = bad[2, 0]
        lse.syncnet_crops(frames, bad)
    with pytest.raises(InputError, match="one"):
        lse.syncnet_crops(frames, boxes[:3])


# ----------------------------------------------------------------------------- weights

def _upstream_style_state(model):
    """Like syncnet_v2.model: plain keys, no num_batches_tracked buffers."""
    return {k: v.clone() + 0.5 for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def test_load_syncnet_lse_from_file(tmp_path, model):
    state = _upstream_style_state(model)
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    loaded = lse.load_syncnet_lse(path, device="cpu")
    assert not loaded.training
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert int(loaded.state_dict()["netcnnaud.1.num_batches_tracked"]) == 0


def test_load_syncnet_lse_refuses_wrong_or_pickled_files(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"netfclip.3.weight": torch.zeros(10, 512)}, bad)     # small, wrong shape
    with pytest.raises(CheckpointError, match="netfclip.3.weight"):
        lse.load_syncnet_lse(bad)
    whole = tmp_path / "whole_module.pth"
    torch.save(torch.nn.Linear(2, 2), whole)             # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match="not a plain tensor checkpoint"):
        lse.load_syncnet_lse(whole)


def test_adapt_state_dict_strips_wrapper_prefix(model):
    state = {"__S__." + k: v for k, v in _upstream_style_state(model).items()}
    out = adapt_state_dict(state, model)
    assert set(out) == set(model.state_dict())
