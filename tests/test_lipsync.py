"""Stage-1 inference API: channel order, masking, batching, validation, checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from formula import det_state_dict
from torch import nn

from ladtalk.errors import CheckpointError, InputError
from ladtalk.generation.lipsync import LipSyncer, build_generator_input
from ladtalk.models.wav2lip import Wav2Lip


class EchoStub(nn.Module):
    """Records every input batch and returns its reference channels (3-5) as the output."""

    def __init__(self, value=None):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # so .to(device) has something to move
        self.calls = []
        self.value = value

    def forward(self, mel, face):
        self.calls.append((mel.clone(), face.clone()))
        if self.value is not None:
            return torch.full_like(face[:, :3], self.value)
        return face[:, 3:6].clone()


def _crops(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def _mels(n, seed=1):
    return np.random.default_rng(seed).uniform(-4, 4, (n, 80, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def wav2lip():
    model = Wav2Lip()
    entries = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    model.load_state_dict(det_state_dict(entries), strict=True)
    return model.eval()


# ------------------------------------------------------------------ conventions (stub)
def test_input_is_bgr_masked_target_plus_reference():
    faces, mels = _crops(3), _mels(3)
    stub = EchoStub()
    LipSyncer(stub, device="cpu")(faces, mels)
    (mel_in, face_in), = stub.calls
    expect_bgr = torch.from_numpy(faces[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    assert face_in.shape == (3, 6, 96, 96) and mel_in.shape == (3, 1, 80, 16)
    torch.testing.assert_close(face_in[:, 3:], expect_bgr, atol=0, rtol=0)
    torch.testing.assert_close(face_in[:, :3, :48], expect_bgr[:, :, :48], atol=0, rtol=0)
    assert torch.count_nonzero(face_in[:, :3, 48:]) == 0
    torch.testing.assert_close(mel_in[:, 0], torch.from_numpy(mels), atol=0, rtol=0)


def test_output_converted_back_to_rgb():
    faces = _crops(4)
    out = LipSyncer(EchoStub(), device="cpu")(faces, _mels(4))
    assert out.dtype == np.uint8 and out.shape == faces.shape
    np.testing.assert_array_equal(out, faces)  # BGR in, BGR echoed, RGB out


def test_separate_references():
    faces, refs = _crops(2, seed=3), _crops(2, seed=4)
    stub = EchoStub()
    out = LipSyncer(stub, device="cpu")(faces, _mels(2), references=refs)
    face_in = stub.calls[0][1]
    np.testing.assert_array_equal(out, refs)
    expect_top = torch.from_numpy(faces[:, :48, :, ::-1].copy()).permute(0, 3, 1, 2) / 255
    torch.testing.assert_close(face_in[:, :3, :48], expect_top.float(), atol=0, rtol=0)


def test_rounding_modes():
    faces, mels = _crops(1), _mels(1)
    nearest = LipSyncer(EchoStub(value=0.999), device="cpu")(faces, mels)
    floor = LipSyncer(EchoStub(value=0.999), device="cpu", rounding="floor")(faces, mels)
    assert (nearest == 255).all() and (floor == 254).all()


def test_batches_are_split():
    stub = EchoStub()
    faces = _crops(5)
    out = LipSyncer(stub, device="cpu", batch_size=2)(faces, _mels(5))
    assert [c[1].shape[0] for c in stub.calls] == [2, 2, 1]
    np.testing.assert_array_equal(out, faces)


def test_empty_input():
    out = LipSyncer(EchoStub(), device="cpu")(np.zeros((0, 96, 96, 3), np.uint8),
                                               np.zeros((0, 80, 16), np.float32))
    assert out.shape == (0, 96, 96, 3) and out.dtype == np.uint8


# ------------------------------------------------------------------ real generator
def test_matches_direct_model_call(wav2lip):
    faces, mels = _crops(2, seed=7), _mels(2, seed=8)
    out = LipSyncer(wav2lip, device="cpu")(faces, mels)

    # Reference computed by hand, the way upstream inference.py does it (but rounding).
    bgr = faces[..., ::-1].astype(np.float32) / 255.0
    masked = bgr.copy()
    masked[:, 48:] = 0
    x = torch.from_numpy(np.concatenate([masked, bgr], axis=3).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        y = wav2lip(torch.from_numpy(mels)[:, None], x).numpy()
    expect = np.clip(np.round(y.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)[..., ::-1]
    # float32 kernels may differ in the last bit, which can move a value across a rounding
    # boundary: allow off-by-one on a handful of pixels, nothing more.
    diff = np.abs(out.astype(int) - expect)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-3 * diff.size

    # The check is sensitive to channel order: skipping the RGB->BGR swap changes the output.
    rgb = faces[:1].astype(np.float32) / 255.0
    masked_rgb = rgb.copy()
    masked_rgb[:, 48:] = 0
    x_rgb = torch.from_numpy(np.concatenate([masked_rgb, rgb], 3).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        y_rgb = wav2lip(torch.from_numpy(mels[:1])[:, None], x_rgb).numpy()
    assert np.abs(y_rgb - y[:1]).max() > 0.05


def test_batching_is_invariant(wav2lip):
    crops, mels = _crops(3, seed=9), torch.from_numpy(_mels(3, seed=10))
    faces = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    one = LipSyncer(wav2lip, device="cpu", batch_size=3).predict_tensor(faces, mels)
    split_syncer = LipSyncer(wav2lip, device="cpu", batch_size=2)   # batches of 2 + 1
    split = split_syncer.predict_tensor(faces, mels)
    assert one.shape == (3, 3, 96, 96) and one.dtype == torch.float32
    torch.testing.assert_close(split, one, atol=1e-5, rtol=0)
    assert float(one.std()) > 0.05  # non-trivial output, so the comparison means something

    # The uint8 API (batched too) is the float API quantised.
    as_uint8 = (one * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    diff = np.abs(split_syncer(crops, mels.numpy()).astype(int) - as_uint8)
    assert diff.max() <= 1 and np.count_nonzero(diff) < 1e-3 * diff.size


def test_build_generator_input_layout():
    faces = torch.rand(2, 3, 96, 96)
    before = faces.clone()
    x = build_generator_input(faces)
    assert x.shape == (2, 6, 96, 96)
    torch.testing.assert_close(x[:, 3], faces[:, 2], atol=0, rtol=0)   # B first
    torch.testing.assert_close(x[:, 5], faces[:, 0], atol=0, rtol=0)   # R last
    assert torch.count_nonzero(x[:, :3, 48:]) == 0
    assert torch.equal(faces, before)  # input not modified in place
    torch.testing.assert_close(x[:, 0, :48], faces[:, 2, :48], atol=0, rtol=0)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("faces, mels, match", [
    (np.zeros((2, 96, 96, 3), np.float32), _mels(2), "uint8"),
    (np.zeros((2, 64, 64, 3), np.uint8), _mels(2), r"\(N, 96, 96, 3\)"),
    (np.zeros((2, 96, 96), np.uint8), _mels(2), r"\(N, 96, 96, 3\)"),
    ([[0]], _mels(2), "numpy array"),
    (np.zeros((2, 96, 96, 3), np.uint8), _mels(3), "2 face crops but 3 mel"),
    (np.zeros((2, 96, 96, 3), np.uint8), np.zeros((2, 80, 12), np.float32), r"\(N, 80, 16\)"),
    (np.zeros((2, 96, 96, 3), np.uint8), np.zeros((2, 80, 16), np.int16), "float"),
])
def test_validation_errors(faces, mels, match):
    with pytest.raises(InputError, match=match):
        LipSyncer(EchoStub(), device="cpu")(faces, mels)


def test_nan_mel_names_the_window():
    mels = _mels(4)
    mels[2, 5, 5] = np.nan
    with pytest.raises(InputError, match="mel window 2"):
        LipSyncer(EchoStub(), device="cpu")(_crops(4), mels)


def test_reference_count_mismatch():
    with pytest.raises(InputError, match="references"):
        LipSyncer(EchoStub(), device="cpu")(_crops(2), _mels(2), references=_crops(1))


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 2.5},
                                    {"rounding": "up"}, {"dtype": "fp8"}, {"first_row": 96},
                                    {"first_row": -1}, {"first_row": 2.0}])
def test_bad_settings(kwargs):
    with pytest.raises(InputError):
        LipSyncer(EchoStub(), device="cpu", **kwargs)


def test_predict_tensor_validation():
    syncer = LipSyncer(EchoStub(), device="cpu")
    with pytest.raises(InputError, match="faces"):
        syncer.predict_tensor(torch.zeros(2, 96, 96, 3), torch.zeros(2, 80, 16))
    with pytest.raises(InputError, match="2 face crops but 1"):
        syncer.predict_tensor(torch.zeros(2, 3, 96, 96), torch.zeros(1, 80, 16))
    with pytest.raises(InputError, match="float"):
        syncer.predict_tensor(torch.zeros(2, 3, 96, 96, dtype=torch.uint8),
                              torch.zeros(2, 80, 16))


# ------------------------------------------------------------------ checkpoints
def test_from_checkpoint_roundtrip(wav2lip, tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "wav2lip.safetensors"
    # Upstream training checkpoints carry DataParallel's "module." prefix.
    save_file({f"module.{k}": v.contiguous() for k, v in wav2lip.state_dict().items()}, path)
    syncer = LipSyncer.from_checkpoint(path, device="cpu", batch_size=3)
    assert syncer.batch_size == 3
    for (k, a), b in zip(syncer.model.state_dict().items(), wav2lip.state_dict().values()):
        assert torch.equal(a, b), k


def test_from_checkpoint_lists_bad_keys(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "wrong.safetensors"
    save_file({"face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7),
               "output_block.1.bias": torch.zeros(4)}, path)
    with pytest.raises(CheckpointError) as info:
        LipSyncer.from_checkpoint(path, device="cpu")
    msg = str(info.value)
    assert "wrong.safetensors" in msg
    assert "face_encoder.0.conv_block.0.weight" in msg                     # unexpected
    assert "face_encoder_blocks.0.0.conv_block.0.weight" in msg            # missing
    assert "output_block.1.bias" in msg and "[4]" in msg and "[3]" in msg  # shape mismatch
    assert "lipsync_expert" in msg                                         # what to do


def test_from_checkpoint_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        LipSyncer.from_checkpoint(tmp_path / "nope.safetensors", device="cpu")


# ------------------------------------------------------------------ precision
def test_precision_names_resolve_per_device():
    import ladtalk._util.device as dev
    cpu = torch.device("cpu")
    assert dev.resolve_dtype(None, cpu) == torch.float32
    assert dev.resolve_dtype("fp32", cpu) == torch.float32
    assert dev.resolve_dtype("fp16", cpu) == torch.float32  # no fast fp16 convs on CPU
    assert dev.resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="chosen by measurement"):  # never a guess
        dev.resolve_dtype("auto", cpu)
    cuda = torch.device("cuda")  # a device object only: nothing is allocated
    assert dev.resolve_dtype("fp16", cuda) == torch.float16
    assert dev.resolve_dtype("bf16", cuda) == torch.bfloat16
    assert dev.precision_name(torch.bfloat16) == "bf16"
    with pytest.raises(InputError, match="unknown precision 'int3'"):
        dev.resolve_dtype("int3", cpu)
    with dev.autocast(cpu, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
    with dev.autocast(cpu, torch.float32):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_on_cpu_stays_close_to_fp32(wav2lip):
    """bf16 autocast (the pipeline's default on CPUs with native bf16) moves the 96 px
    output by less than a grey level on average, even with the golden formula weights,
    whose activations are far larger than trained weights'."""
    faces, mels = _crops(4, seed=3), _mels(4, seed=4)
    exact = LipSyncer(wav2lip, device="cpu")(faces, mels).astype(int)
    fast = LipSyncer(wav2lip, device="cpu", dtype="bf16")
    assert fast.dtype == torch.bfloat16
    diff = np.abs(fast(faces, mels).astype(int) - exact)
    assert diff.mean() < 1.0 and diff.max() <= 16, (diff.mean(), diff.max())
    assert diff.max() > 0  # bf16 really ran (fp32 would match to the last bit)


# ------------------------------------------------------------------ drawing some rows only
def _bn_model(seed=0):
    """Wav2Lip with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = Wav2Lip().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model


@pytest.mark.parametrize("folded", [False, True])
def test_rows_model_equals_the_whole_models_rows(folded):
    from ladtalk.models.fuse import fold_batchnorm
    from ladtalk.models.wav2lip_rows import Wav2LipRows, row_plan
    model = _bn_model()
    mel, face = torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96)
    with torch.no_grad():
        whole = model(mel, face)
        net = fold_batchnorm(model) if folded else model
        for rows in (0, 1, 2, 5, 22, 30, 43, 95):
            part = Wav2LipRows(net, rows)(mel, face)
            assert part.shape == (2, 3, 96 - rows, 96)
            torch.testing.assert_close(part, whole[:, :, rows:], atol=1e-6, rtol=0)
    # less work the lower it starts: the decoder stages from 12 px on start lower and lower
    starts = [row_plan(model, r)[-1][0] for r in (0, 22, 30, 43)]
    assert starts == sorted(starts) and starts[0] == 0 < starts[1]
    with pytest.raises(ValueError, match="rows"):
        Wav2LipRows(model, 96)


def test_syncer_drawing_rows_keeps_the_input_above_them(wav2lip):
    faces, mels = _crops(5), _mels(5)
    whole = LipSyncer(wav2lip, device="cpu", batch_size=4)
    part = LipSyncer(wav2lip, device="cpu", batch_size=4, first_row=30)
    a, b = whole(faces, mels), part(faces, mels)
    np.testing.assert_array_equal(b[:, :30], faces[:, :30])
    assert np.abs(a[:, 30:].astype(int) - b[:, 30:]).max() <= 1
    assert (a[:, :30] != faces[:, :30]).any()  # (the whole model does draw those rows)
    # the float API too
    ft = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
    mt = torch.from_numpy(mels)
    ya, yb = whole.predict_tensor(ft, mt), part.predict_tensor(ft, mt)
    torch.testing.assert_close(yb[:, :, :30], ft[:, :, :30])
    torch.testing.assert_close(yb[:, :, 30:], ya[:, :, 30:], atol=1e-5, rtol=0)
