"""Wav2Lip from a prepared OpenVINO model: a later process runs it without importing torch,
with the same output; the entry is not used once anything it stands for has changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import (
    FACE_BOX,
    decode,
    make_face_video,
    make_speech,
    write_wav2lip_checkpoint,
)

from ladtalk.generation.lipsync import build_generator_input
from ladtalk.generation.pipeline import Pipeline
from ladtalk.media.resample import to_tensor01
from ladtalk.models.wav2lip_io import generator_input, to_crops
from ladtalk.runtime import autotune, prepared
from ladtalk.runtime.autotune import Plan, RuntimeChoice
from ladtalk.runtime.openvino_engine import ir_cache, openvino_available

ROOT = Path(__file__).resolve().parents[1]
needs_openvino = pytest.mark.skipif(not openvino_available(),
                                    reason="the optional openvino extra is not installed")


# ------------------------------------------------------------------ the numpy conventions
def test_numpy_input_and_output_match_the_float_api():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    refs = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    for r in (None, refs):
        want = build_generator_input(to_tensor01(faces), None if r is None else to_tensor01(r))
        assert np.array_equal(generator_input(faces, r), want.numpy())
    # the generator's BGR output, with values off the range and exactly between two levels
    y = rng.uniform(-0.1, 1.1, (5, 3, 96, 96)).astype(np.float32)
    y[0, 0, 0, :4] = np.array([0.5, 1.5, 2.5, 254.5], np.float32) / 255
    t = torch.from_numpy(y).flip(1).mul(255.0)
    for rounding, op in (("nearest", torch.round), ("floor", torch.floor)):
        want = op(t).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(to_crops(y, rounding), want)
    with pytest.raises(ValueError, match="rounding"):
        to_crops(y, "up")


# ------------------------------------------------------------------ the entries
def _entry(how="measured", cache_key="k1"):
    choice = RuntimeChoice(Plan("openvino", "bf16"), how, {"openvino bf16": 9.0},
                           cache_key=cache_key)
    return prepared.Prepared(choice, ["ir1"], workers=2, threads=1)


def _write_choice_cache(entries):
    path = Path(os.environ["LADTALK_HOME"]) / "cache" / autotune.CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": autotune.CACHE_VERSION, "entries": entries}))


def test_entry_kept_while_the_measured_choice_is(tmp_path):
    _write_choice_cache({"k1": {"backend": "openvino", "precision": "bf16"}})
    prepared.remember("key", _entry())
    got = prepared.recall("key")
    assert got is not None and got.ir_keys == ["ir1"] and (got.workers, got.threads) == (2, 1)
    assert got.choice.plan == Plan("openvino", "bf16") and got.choice.how == "cached"
    _write_choice_cache({"k1": {"backend": "torch", "precision": "bf16"}})  # measured again
    assert prepared.recall("key") is None
    _write_choice_cache({})  # the choice cache deleted: measure again, as before
    assert prepared.recall("key") is None
    prepared.remember("forced", _entry("forced", None))  # nothing was measured
    assert prepared.recall("forced").choice.how == "forced"
    assert prepared.recall("unknown") is None


def test_key_follows_the_file_and_the_request(tmp_path):
    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"one")
    ask = {"backend": "auto", "precision": "auto", "batch": 8, "workers": None}
    key = prepared.prepared_key("wav2lip", ckpt, ask)
    assert prepared.prepared_key("wav2lip", ckpt, dict(ask)) == key
    assert prepared.prepared_key("wav2lip", ckpt, {**ask, "precision": "fp32"}) != key
    assert prepared.prepared_key("syncnet", ckpt, ask) != key
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # the file was replaced
    assert prepared.prepared_key("wav2lip", ckpt, ask) != key


def test_entries_are_bounded(monkeypatch):
    monkeypatch.setattr(prepared, "MAX_ENTRIES", 3)
    for i in range(5):
        prepared.remember(f"k{i}", _entry("forced", None))
    assert [prepared.recall(f"k{i}") is not None for i in range(5)] == [False, False, True,
                                                                       True, True]


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def wav2lip_file(tmp_path_factory):
    return write_wav2lip_checkpoint(tmp_path_factory.mktemp("w2l") / "wav2lip.safetensors")


def _crops_and_mels():
    rng = np.random.default_rng(1)
    return (rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8),
            rng.standard_normal((3, 80, 16)).astype(np.float32))


def _in_child(code: str, **env: str) -> str:
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, **env}, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


@needs_openvino
def test_a_prepared_wav2lip_runs_without_torch(wav2lip_file, tmp_path):
    kw = dict(wav2lip=str(wav2lip_file), device="cpu", dtype="fp32", backend="openvino")
    first = Pipeline(**kw).lipsyncer  # through torch: loaded, folded, converted
    assert first.runtime.backend == "openvino" and first.model is not None
    faces, mels = _crops_and_mels()
    np.savez(tmp_path / "in.npz", faces=faces, mels=mels)
    want = first(faces, mels)
    out = _in_child(f"""
        import sys
        import numpy as np
        from ladtalk.generation.pipeline import Pipeline
        syncer = Pipeline(wav2lip={str(wav2lip_file)!r}, device="cpu", dtype="fp32",
                          backend="openvino").lipsyncer
        d = np.load({str(tmp_path / "in.npz")!r})
        np.save({str(tmp_path / "out.npy")!r}, syncer(d["faces"], d["mels"]))
        print(syncer.model is None, syncer.runtime.choice.describe(), "torch" in sys.modules)
        """)
    assert out.split() == ["True", "openvino", "fp32", "(forced)", "False"]
    assert np.array_equal(np.load(tmp_path / "out.npy"), want)
    # another request (precision) is another entry: prepared through torch again
    other = Pipeline(**{**kw, "dtype": "bf16"}).lipsyncer
    assert other.runtime.precision == "bf16"
    # and so are other rows drawn (another model): their rows are the whole model's
    rows = Pipeline(**kw).lipsyncer_for(30)
    assert rows.model is not None and rows.first_row == 30
    recalled = Pipeline(**kw).lipsyncer_for(30)
    assert recalled.model is None and recalled.first_row == 30
    part = recalled(faces, mels)
    assert np.array_equal(part[:, :30], faces[:, :30])
    assert np.abs(part[:, 30:].astype(int) - want[:, 30:]).max() <= 1
    # the float API of a prepared syncer (OpenVINO runs it, no torch model)
    f01 = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
    y = recalled.predict_tensor(f01, torch.from_numpy(mels)).permute(0, 2, 3, 1) * 255
    assert np.abs(y.numpy() - part).max() <= 1
    # the cached model gone: back through torch, and the entry written again
    shutil.rmtree(ir_cache().root)
    again = Pipeline(**kw).lipsyncer
    assert again.model is not None and np.array_equal(again(faces, mels), want)
    assert Pipeline(**kw).lipsyncer.model is None


@needs_openvino
def test_a_wav2lip_only_run_of_a_prepared_model_never_imports_torch(wav2lip_file, tmp_path):
    video = make_face_video(tmp_path / "face.mp4", 12, fps=10.0)
    audio = make_speech(tmp_path / "speech.wav", 1.0)
    args = ["generate", "--face", str(video), "--audio", str(audio), "--no-enhance",
            "--box", *map(str, FACE_BOX), "--wav2lip", str(wav2lip_file), "--device", "cpu",
            "--backend", "openvino", "--precision", "fp32", "--quiet"]
    code = """
        import sys
        from ladtalk.cli import main
        status = main({args!r})
        print(status, "torch" in sys.modules)
        """
    first = _in_child(code.format(args=args + ["--out", str(tmp_path / "a.mp4")]))
    second = _in_child(code.format(args=args + ["--out", str(tmp_path / "b.mp4")]))
    assert first.split() == ["0", "True"] and second.split() == ["0", "False"]
    assert np.array_equal(decode(tmp_path / "a.mp4"), decode(tmp_path / "b.mp4"))
