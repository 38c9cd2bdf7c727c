"""Checkpoint resolution, safe loading and conversion (all offline; HF cache built in tmp)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ladtalk.checkpoints import (
    DEFAULTS,
    PROXY_VARS,
    CheckpointSpec,
    convert_to_safetensors,
    hub_reachable,
    load_into,
    load_state_dict,
    parse_checkpoint,
    parse_hub_reference,
    reset_reachability,
    resolve_checkpoint,
    save_safetensors,
)
from ladtalk.errors import CheckpointError, InputError

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ------------------------------------------------------------------------------------------
# helpers


def make_hf_cache(cache: Path, repo_id: str, files: dict, commit: str = COMMIT) -> Path:
    """Standard HF cache layout: blobs/<etag>, refs/main -> commit, snapshots/<commit>/<file>."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for fname, data in files.items():
        etag = hashlib.sha256(data).hexdigest()
        blob = repo_dir / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        snap = repo_dir / "snapshots" / commit / fname
        snap.parent.mkdir(parents=True, exist_ok=True)
        try:
            snap.symlink_to(os.path.relpath(blob, snap.parent))
        except OSError:  # no symlinks (e.g. Windows without privileges): HF copies too
            snap.write_bytes(data)
    return repo_dir


def hf_cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "ladtalk", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x))


def tiny_state(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    m = Tiny()
    return {k: (torch.rand(v.shape, generator=g) if v.is_floating_point() else v.clone())
            for k, v in m.state_dict().items()}


class Payload:
    """Unpickling this calls os.mkdir(marker): proof of code execution if it ever happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class CustomThing:
    def __init__(self) -> None:
        self.value = 3


# ------------------------------------------------------------------------------------------
# parsing


def test_parse_hub_reference_grammar():
    sha = "ab" * 32
    spec = parse_hub_reference(f"hf://owner/repo/sub/dir/w.pth@v1.0#sha256={sha.upper()}")
    assert spec == CheckpointSpec("owner/repo", "sub/dir/w.pth", "v1.0", sha)
    assert str(spec) == f"hf://owner/repo/sub/dir/w.pth@v1.0#sha256={sha}"
    assert parse_hub_reference("hf://owner/repo/w.pth") == CheckpointSpec("owner/repo", "w.pth")
    assert parse_hub_reference(f"owner/my.repo:ck/w.pth@{COMMIT}") == CheckpointSpec(
        "owner/my.repo", "ck/w.pth", COMMIT)
    assert parse_hub_reference("checkpoints/wav2lip_gan.pth") is None
    assert parse_hub_reference("C:\\models\\w.pth") is None
    for bad in ("hf://owner/repo", "hf://owner/repo/", "hf://owner/repo/w.pth#md5=00",
                "hf://owner/repo/w.pth#sha256=abc", "hf://owner/repo/w.pth@"):
        with pytest.raises(InputError):
            parse_hub_reference(bad)


def test_parse_local_file_directory_and_ambiguity(tmp_path):
    f = tmp_path / "a.pth"
    f.write_bytes(b"x")
    assert parse_checkpoint(str(f)) == f
    assert parse_checkpoint(tmp_path) == f                    # the single candidate
    (tmp_path / "b.safetensors").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(CheckpointError, match=r"ambiguous.*a\.pth, b\.safetensors"):
        parse_checkpoint(tmp_path)
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"x")
    assert parse_checkpoint(tmp_path, known_filename="wav2lip_gan.pth") == \
        tmp_path / "wav2lip_gan.pth"
    (tmp_path / "wav2lip_gan.safetensors").write_bytes(b"x")  # converted copy preferred
    assert parse_checkpoint(tmp_path, known_filename="wav2lip_gan.pth") == \
        tmp_path / "wav2lip_gan.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in directory"):
        parse_checkpoint(empty)
    with pytest.raises(CheckpointError, match="not found"):
        parse_checkpoint(tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------
# resolution


def test_resolve_hub_reference_from_offline_cache():
    data = b"pretend checkpoint bytes"
    make_hf_cache(hf_cache(), "owner/repo", {"sub/w.pth": data})
    path = resolve_checkpoint("hf://owner/repo/sub/w.pth")
    assert path.read_bytes() == data
    assert hf_cache() in path.parents
    assert resolve_checkpoint(f"owner/repo:sub/w.pth@{COMMIT}").read_bytes() == data
    good = hashlib.sha256(data).hexdigest()
    assert resolve_checkpoint(f"hf://owner/repo/sub/w.pth#sha256={good}").read_bytes() == data
    with pytest.raises(CheckpointError, match=r"sha256 mismatch.*expected " + "0" * 64):
        resolve_checkpoint("hf://owner/repo/sub/w.pth#sha256=" + "0" * 64)
    with pytest.raises(CheckpointError, match=r"'other\.pth'.*'owner/repo'"):
        resolve_checkpoint("hf://owner/repo/other.pth")
    with pytest.raises(CheckpointError, match="revision: v9"):
        resolve_checkpoint("hf://owner/repo/sub/w.pth@v9")


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_missing_default_names_repo_file_env_and_flag(name):
    entry = DEFAULTS[name]
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(name)
    msg = str(err.value)
    for needle in (entry.spec.repo_id, entry.spec.filename, entry.env_var, entry.flag,
                   "revision", "HF_HUB_OFFLINE", str(hf_cache())):
        assert needle in msg, (needle, msg)


def test_precedence_override_then_env_then_default(tmp_path, monkeypatch):
    cached = b"default from the hub cache"
    entry = DEFAULTS["s3fd"]
    make_hf_cache(hf_cache(), entry.spec.repo_id, {entry.spec.filename: cached})
    assert resolve_checkpoint("s3fd").read_bytes() == cached            # default

    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"env")
    flag_file = tmp_path / "flag.pth"
    flag_file.write_bytes(b"flag")
    monkeypatch.setenv("LADTALK_S3FD", str(env_file))
    assert resolve_checkpoint("s3fd") == env_file                       # env beats default
    assert resolve_checkpoint("s3fd", override=str(flag_file)) == flag_file  # flag beats env
    assert resolve_checkpoint("s3fd", override=flag_file) == flag_file

    # A broken higher-priority source is an error, never a silent fallback to the cache.
    monkeypatch.setenv("LADTALK_S3FD", str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointError, match=r"missing\.pth.*\$LADTALK_S3FD"):
        resolve_checkpoint("s3fd")
    with pytest.raises(CheckpointError, match=r"--s3fd"):
        resolve_checkpoint("s3fd", override=str(tmp_path / "missing2.pth"))


def test_default_with_wrong_size_is_rejected():
    entry = DEFAULTS["wav2lip"]
    make_hf_cache(hf_cache(), entry.spec.repo_id, {entry.spec.filename: b"short"})
    with pytest.raises(CheckpointError, match=r"5 bytes.*435,801,865.*--wav2lip"):
        resolve_checkpoint("wav2lip")


# ------------------------------------------------------------------------------------------
# safe loading and conversion


def test_upstream_pth_converts_via_cli_and_loads(tmp_path, capsys):
    sd = tiny_state()
    src = tmp_path / "upstream.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()},
                "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [
                    {"lr": 1e-4, "params": [0]}]},
                "global_step": 1234, "global_epoch": 7}, src)
    dst = tmp_path / "out" / "tiny.safetensors"
    proc = run_cli("convert", str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    n_elem = sum(v.numel() for v in sd.values())
    n_param = sum(v.numel() for k, v in sd.items() if "running" not in k and "num_b" not in k)
    assert f"tensors:    {len(sd)}" in proc.stdout
    assert f"elements:   {n_elem:,}" in proc.stdout
    assert f"parameters: {n_param:,}" in proc.stdout
    assert str(dst) in proc.stdout
    assert not list(dst.parent.glob(".*tmp"))

    loaded = load_state_dict(dst)
    assert sorted(loaded) == sorted(sd)
    for k in sd:
        assert torch.equal(loaded[k], sd[k]), k
    model = load_into(Tiny(), loaded, source=dst).eval()
    ref = Tiny().eval()
    ref.load_state_dict(sd)
    x = torch.rand(1, 2, 5, 5)
    assert torch.equal(model(x), ref(x))

    from ladtalk.cli import main  # in-process: faster
    assert main(["convert", str(src), str(dst)]) == 2                 # no silent overwrite
    assert "--force" in capsys.readouterr().err
    assert main(["convert", str(src), str(dst), "--force"]) == 0
    assert f"tensors:    {len(sd)}" in capsys.readouterr().out


def test_pth_is_converted_once_then_read_from_safetensors(tmp_path, monkeypatch):
    sd = tiny_state(1)
    src = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, src)
    first = load_state_dict(src)
    cached = Path(os.environ["LADTALK_HOME"]) / "converted" / (
        hashlib.sha256(src.read_bytes()).hexdigest() + ".safetensors")
    assert cached.is_file()

    def no_torch_load(*a, **k):
        raise AssertionError("the cached safetensors copy should have been used")

    monkeypatch.setattr(torch, "load", no_torch_load)
    second = load_state_dict(src)
    assert sorted(first) == sorted(second) == sorted(sd)
    assert all(torch.equal(second[k], sd[k]) for k in sd)
    assert sorted(load_state_dict(src, strip_prefix=None)) == sorted("module." + k for k in sd)


def test_lightning_style_ckpt_unwrapped(tmp_path):
    sd = tiny_state(2)
    src = tmp_path / "model.ckpt"
    torch.save({"epoch": 3, "state_dict": sd, "hyper_parameters": {"lr": 0.1}}, src)
    out = load_state_dict(src, use_cache=False)
    assert sorted(out) == sorted(sd)


def test_truncated_files_rejected_with_path(tmp_path):
    sd = tiny_state()
    good = tmp_path / "good.pth"
    torch.save({"state_dict": sd}, good)
    data = good.read_bytes()
    for name, cut in (("half.pth", len(data) // 2), ("tail.pth", len(data) - 10)):
        bad = tmp_path / name
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"truncated or corrupt") as err:
            load_state_dict(bad)
        assert str(bad) in str(err.value)
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": sd}, legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "legacy_cut.pth").write_bytes(legacy.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"legacy_cut\.pth"):
        load_state_dict(tmp_path / "legacy_cut.pth")

    st = tmp_path / "w.safetensors"
    save_safetensors(sd, st)
    (tmp_path / "cut.safetensors").write_bytes(st.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*truncated or corrupt"):
        load_state_dict(tmp_path / "cut.safetensors")


def test_code_executing_pickle_is_refused_and_not_run(tmp_path):
    src = tmp_path / "evil.pth"
    marker = tmp_path / "executed"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Payload(marker)}, src)

    # Control: an unrestricted unpickler really would run the payload.
    torch.load(src, map_location="cpu", weights_only=False)
    assert marker.is_dir()
    marker.rmdir()

    with pytest.raises(CheckpointError) as err:
        load_state_dict(src)
    msg = str(err.value)
    assert "not a plain tensor checkpoint" in msg and "nothing in it was executed" in msg
    assert str(src) in msg and "mkdir" in msg
    assert not marker.exists()
    assert not list((Path(os.environ["LADTALK_HOME"])).glob("converted/*.safetensors"))
    proc = run_cli("convert", str(src), str(tmp_path / "evil.safetensors"))
    assert proc.returncode == 2 and "not a plain tensor checkpoint" in proc.stderr
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()


def test_custom_object_and_non_tensor_leaves_rejected(tmp_path):
    src = tmp_path / "custom.pth"
    torch.save({"state_dict": {"w": torch.ones(2), "thing": CustomThing()}}, src)
    with pytest.raises(CheckpointError, match=r"not a plain tensor checkpoint.*CustomThing"):
        load_state_dict(src)

    src2 = tmp_path / "leaf.pth"
    torch.save({"state_dict": {"w": torch.ones(2), "step": 3, "name": "x"}}, src2)
    with pytest.raises(CheckpointError, match=r"2 entries are not tensors.*'step' \(int\)"):
        load_state_dict(src2)

    src3 = tmp_path / "list.pth"
    torch.save([torch.ones(2)], src3)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_state_dict(src3)


def test_load_into_reports_missing_unexpected_and_shapes(tmp_path):
    sd = tiny_state()
    del sd["bn.running_var"]
    sd["conv.weight"] = torch.zeros(3, 2, 5, 5)
    sd["head.weight"] = torch.zeros(1)
    sd["head.bias"] = torch.zeros(1)
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_into(model, sd, source=tmp_path / "x.safetensors")
    msg = str(err.value)
    assert str(tmp_path / "x.safetensors") in msg
    assert "missing keys (1): bn.running_var" in msg
    assert "unexpected keys (2): head.weight, head.bias" in msg
    assert "shape mismatches (1): conv.weight: checkpoint [3, 2, 5, 5] vs model [3, 2, 3, 3]" \
        in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched

    prefixed = {"net." + k: v for k, v in tiny_state().items()}
    with pytest.raises(CheckpointError,
                       match=r"(?s)missing keys \(7\).*\+2 more.*prefix 'net\.'"):
        load_into(Tiny(), prefixed, source="p.pth", max_listed=5)


def test_convert_api_is_atomic_and_strips_prefix(tmp_path):
    sd = tiny_state(3)
    src = tmp_path / "a.pt"
    torch.save({f"module.{k}": v for k, v in sd.items()}, src)
    rep = convert_to_safetensors(src, tmp_path / "a.safetensors")
    assert rep.n_tensors == len(sd)
    from safetensors import safe_open
    with safe_open(str(rep.dst), "pt") as f:
        assert sorted(f.keys()) == sorted(sd)
        assert f.metadata()["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "a.safetensors"]  # no temp


# ------------------------------------------------------------------------------------------
# golden: upstream-format generator checkpoint -> convert -> load -> upstream output


def test_wav2lip_upstream_checkpoint_roundtrip_matches_golden(golden_dir, tmp_path):
    from formula import det_state_dict

    from ladtalk.models.wav2lip import Wav2Lip

    gdir = golden_dir / "wav2lip_generator"
    manifest = json.loads((gdir / "state_dict_manifest.json").read_text())
    sd = det_state_dict(manifest["keys"])
    src = tmp_path / "wav2lip_gan.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "global_step": 1}, src)
    del sd

    dst = tmp_path / "wav2lip_gan.safetensors"
    proc = run_cli("convert", str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    assert f"tensors:    {manifest['n_tensors']}" in proc.stdout
    assert f"parameters: {manifest['n_parameters']:,}" in proc.stdout
    src.unlink()

    path = resolve_checkpoint("wav2lip", override=str(tmp_path))     # directory -> .safetensors
    assert path == dst
    model = load_into(Wav2Lip(), load_state_dict(path), source=path).eval()
    face = torch.from_numpy(np.load(gdir / "input_face.npy"))
    mel = torch.from_numpy(np.load(gdir / "input_mel.npy"))
    with torch.no_grad():
        out = model(mel, face).numpy()
    expected = np.load(gdir / "output.npy")
    err = float(np.abs(out - expected).max())
    print(f"wav2lip golden max abs error after convert: {err:.3g}")
    assert err < 1e-4


def test_unreachable_hub_uses_the_cache_at_once(monkeypatch):
    """Without HF_HUB_OFFLINE but with no network, a cached file resolves and a missing one
    fails fast with a message that says the Hub cannot be reached (no ~25 s of retries)."""
    import socket
    import time

    from huggingface_hub import constants
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as probe:  # a free local port: nothing listens there yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    reset_reachability()
    assert hub_reachable() is False
    data = b"cached while online"
    make_hf_cache(hf_cache(), "owner/repo", {"w.pth": data})
    assert resolve_checkpoint("hf://owner/repo/w.pth").read_bytes() == data
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint("wav2lip")
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    for needle in ("cannot be reached", endpoint, "LADTALK_WAV2LIP", "--wav2lip"):
        assert needle in msg, (needle, msg)
    assert "unset HF_HUB_OFFLINE" not in msg
    # the probe's answer is remembered for a while: a server that starts listening now is
    # only seen after the memory is reset
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen(1)
        assert hub_reachable() is False
        reset_reachability()
        assert hub_reachable() is True
    reset_reachability()
    # a proxy leaves the decision to huggingface_hub
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_reachable() is True
