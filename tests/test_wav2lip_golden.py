"""Upstream equivalence of the Wav2Lip generator and its SyncNet expert.

Weights come from the golden README's deterministic formula (tests/formula.py), checked
first against ``weights_checksums.json``. Every ``.npy`` in ``wav2lip_generator/`` and
``wav2lip_syncnet/`` is either an input or compared here (see ``test_every_file_is_covered``).

Tolerances. Outputs that are O(1) use the README's suggestions (generator output 1e-4,
L2-normalised embeddings and cosine 1e-5). Intermediate feature maps grow to |x| ~ 58 with
these weights, and float32 rounding there depends on the CPU's kernels: even a float64 run
of the same network differs from the golden float32 values by 2.9e-5 on ``audio_embedding``.
So those are compared with ``1e-5 + 3e-6 * max|reference|`` (about 25 float32 ulps at the
tensor's peak); any architectural mistake shows up as O(1) errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from formula import det_state_dict

from ladtalk.models.syncnet import SyncNet, sync_cosine
from ladtalk.models.wav2lip import Wav2Lip

GEN = "wav2lip_generator"
SYNC = "wav2lip_syncnet"
FEATURE_REL = 3e-6


def _load(golden_dir, folder, name):
    return np.load(golden_dir / folder / f"{name}.npy")


def _manifest(golden_dir, folder):
    return json.loads((golden_dir / folder / "state_dict_manifest.json").read_text())


def _max_err(actual: torch.Tensor, ref: np.ndarray) -> float:
    assert tuple(actual.shape) == ref.shape, (tuple(actual.shape), ref.shape)
    return float(np.abs(actual.detach().cpu().numpy().astype(np.float64) - ref).max())


def _feature_tol(ref: np.ndarray) -> float:
    return 1e-5 + FEATURE_REL * float(np.abs(ref).max())


def _build(golden_dir, folder, cls):
    manifest = _manifest(golden_dir, folder)
    state = det_state_dict(manifest["keys"])
    sums = json.loads((golden_dir / folder / "weights_checksums.json").read_text())
    model = cls()
    model.load_state_dict(state, strict=True)
    return model.eval(), manifest, state, sums


@pytest.fixture(scope="module")
def gen(golden_dir):
    return _build(golden_dir, GEN, Wav2Lip)


@pytest.fixture(scope="module")
def sync(golden_dir):
    return _build(golden_dir, SYNC, SyncNet)


@pytest.fixture(scope="module")
def gen_outputs(gen, golden_dir):
    model = gen[0]
    mel = torch.from_numpy(_load(golden_dir, GEN, "input_mel"))
    face = torch.from_numpy(_load(golden_dir, GEN, "input_face"))
    with torch.no_grad():
        feats = model.encode_face(face)
        out = {"output": model(mel, face), "audio_embedding": model.audio_encoder(mel)}
    out.update({f"face_encoder_feat{j}": f for j, f in enumerate(feats)})
    return out


@pytest.fixture(scope="module")
def sync_outputs(sync, golden_dir):
    model = sync[0]
    mel = torch.from_numpy(_load(golden_dir, SYNC, "input_mel"))
    face = torch.from_numpy(_load(golden_dir, SYNC, "input_face"))
    with torch.no_grad():
        audio, face_emb = model(mel, face)
        audio_pre, face_pre = model.embed(mel, face)
    return {"audio_embedding": audio, "face_embedding": face_emb,
            "audio_embedding_prenorm": audio_pre, "face_embedding_prenorm": face_pre,
            "cosine_similarity": sync_cosine(audio, face_emb)}


# --------------------------------------------------------------------------- weights
@pytest.mark.parametrize("which", ["gen", "sync"])
def test_formula_matches_checksums(which, request):
    _, manifest, state, sums = request.getfixturevalue(which)
    assert set(sums) == set(state) == {e[0] for e in manifest["keys"]}
    for key, tensor in state.items():
        ref = sums[key]
        flat = tensor.reshape(-1)
        total = float(flat.double().sum())
        assert total == pytest.approx(ref["sum_f64"], rel=1e-12, abs=1e-12), key
        assert flat[:4].tolist() == ref["first4"][:flat.numel()], key


@pytest.mark.parametrize("which", ["gen", "sync"])
def test_state_dict_matches_manifest(which, request):
    model, manifest, _, _ = request.getfixturevalue(which)
    ours = [[k, list(v.shape), str(v.dtype).replace("torch.", "")]
            for k, v in model.state_dict().items()]
    assert ours == manifest["keys"]  # same keys, same order, same shapes and dtypes
    assert len(ours) == manifest["n_tensors"]
    assert sum(p.numel() for p in model.parameters()) == manifest["n_parameters"]
    assert sum(v.numel() for v in model.state_dict().values()) == \
        manifest["n_elements_incl_buffers"]


# --------------------------------------------------------------------------- generator
def test_generator_output(gen_outputs, golden_dir):
    err = _max_err(gen_outputs["output"], _load(golden_dir, GEN, "output"))
    assert err < 1e-4, err


@pytest.mark.parametrize("name", ["audio_embedding"] + [f"face_encoder_feat{j}" for j in range(7)])
def test_generator_features(name, gen_outputs, golden_dir):
    ref = _load(golden_dir, GEN, name)
    err = _max_err(gen_outputs[name], ref)
    assert err < _feature_tol(ref), (name, err)


def test_generator_sequence_form(gen, gen_outputs, golden_dir):
    """Upstream's (B,T,...) input: both golden samples as one sequence of T=2 steps."""
    model = gen[0]
    mel = torch.from_numpy(_load(golden_dir, GEN, "input_mel")).unsqueeze(0)      # (1,2,1,80,16)
    face = torch.from_numpy(_load(golden_dir, GEN, "input_face")).permute(1, 0, 2, 3)[None]
    with torch.no_grad():
        out = model(mel, face)                                                     # (1,3,2,96,96)
    assert out.shape == (1, 3, 2, 96, 96)
    torch.testing.assert_close(out[0].permute(1, 0, 2, 3), gen_outputs["output"],
                               atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- syncnet
@pytest.mark.parametrize("name", ["audio_embedding", "face_embedding", "cosine_similarity"])
def test_syncnet_normalised(name, sync_outputs, golden_dir):
    err = _max_err(sync_outputs[name], _load(golden_dir, SYNC, name))
    assert err < 1e-5, (name, err)


@pytest.mark.parametrize("name", ["audio_embedding_prenorm", "face_embedding_prenorm"])
def test_syncnet_prenorm(name, sync_outputs, golden_dir):
    ref = _load(golden_dir, SYNC, name)
    err = _max_err(sync_outputs[name], ref)
    assert err < _feature_tol(ref), (name, err)


# --------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("folder, k, cols", [(GEN, 1000, (32, 96)), (SYNC, 1100, (64, 160))])
def test_inputs_match_readme_definition(folder, k, cols, golden_dir):
    """Inputs are what the README says: (h+1)/2 faces (generator: target rows 48+ zeroed,
    i.e. masked channels first) and 16-column windows of the English mel."""
    from formula import hash_uniform
    face = _load(golden_dir, folder, "input_face")
    expect = ((hash_uniform(face.size, k) + 1) / 2).reshape(face.shape).astype(np.float32)
    if folder == GEN:
        expect[:, :3, 48:] = 0
    np.testing.assert_array_equal(face, expect)
    mel = np.load(golden_dir / "wav2lip_mel" / "speech_en_mel.npy")
    windows = np.stack([mel[None, :, c:c + 16] for c in cols])
    np.testing.assert_array_equal(_load(golden_dir, folder, "input_mel"), windows)


# --------------------------------------------------------------------------- coverage
def test_every_file_is_covered(golden_dir, gen_outputs, sync_outputs):
    """Each .npy is an input or has a comparison above (guards against new fixture files)."""
    covered = {GEN: set(gen_outputs) | {"input_mel", "input_face"},
               SYNC: set(sync_outputs) | {"input_mel", "input_face"}}
    for folder, names in covered.items():
        present = {p.stem for p in (golden_dir / folder).glob("*.npy")}
        assert present == names, (folder, present ^ names)
