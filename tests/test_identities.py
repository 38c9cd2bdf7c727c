"""The identity store's typed metadata and publishing to the Hub (with a fake HfApi)."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from ladtalk._util.atomic import OLD_PREFIX, atomic_dir, recover_dir
from ladtalk._util.jsonsafe import to_jsonable
from ladtalk.errors import CheckpointError, InputError, LadTalkError
from ladtalk.identities.meta import IdentityMeta, load_meta, read_meta
from ladtalk.identities.publish import PUBLISHED_FILES, publish_identity
from ladtalk.identities.store import (
    REQUIRED_FILES,
    SHIPPED_DIR,
    identity_config,
    is_identity_dir,
    list_identities,
    resolve_identity,
)

DEMO = SHIPPED_DIR / "demo"


def test_demo_meta_typed_and_raw_agree_and_round_trip():
    raw = read_meta(DEMO)
    meta = load_meta(DEMO)
    assert meta.name == "demo" and meta.config_name == "cpu"
    assert meta.holdout_psnr == pytest.approx(raw["holdout_psnr"])
    assert meta.frames.holdout_first_s == pytest.approx(raw["frames"]["holdout_first_s"])
    assert meta.frames.resolution == 128 and meta.fusion == raw["fusion"]
    assert "shipped" in meta.extra  # a key this version does not model is kept ...
    assert meta.to_json() == to_jsonable(raw)  # ... and everything is written back as read


def test_old_and_odd_layouts_load(tmp_path):
    old = {"name": "x", "steps": 12, "holdout_psnr": None, "legacy_key": [1, 2],
           "frames": {"holdout_first_s": 1.5, "video_frames": 40}}
    (tmp_path / "meta.json").write_text(json.dumps(old))
    meta = load_meta(tmp_path)
    assert meta.steps == 12 and meta.holdout_psnr is None and meta.fusion is None
    assert meta.frames.holdout_first_s == 1.5 and meta.frames.extra == {"video_frames": 40}
    out = meta.to_json()
    assert out["legacy_key"] == [1, 2] and out["frames"]["video_frames"] == 40
    assert "fusion" not in out and "partial" not in out  # optional records stay absent
    # non-finite numbers under the one JSON policy read back as floats
    inf = IdentityMeta.from_json({"holdout_psnr": "inf", "holdout_ssim": "nan"})
    assert inf.holdout_psnr == math.inf and math.isnan(inf.holdout_ssim)
    assert inf.to_json()["holdout_psnr"] == "inf"
    # missing, unreadable or non-object meta.json: defaults, never an exception
    assert load_meta(tmp_path / "absent") == IdentityMeta()
    (tmp_path / "meta.json").write_text("[1, 2]")
    assert read_meta(tmp_path) == {} and load_meta(tmp_path).name == ""
    (tmp_path / "meta.json").write_text("{not json")
    assert read_meta(tmp_path) == {}


def test_list_identities_carries_the_raw_meta():
    demo = next(i for i in list_identities() if i.name == "demo")
    assert demo.shipped and demo.meta.config_name == "cpu"


class _FakeHfApi:
    calls: list = []

    def __init__(self, token=None):
        self.token = token
        _FakeHfApi.calls.append(("init", token))

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None):
        _FakeHfApi.calls.append(("create_repo", repo_id, private, exist_ok, repo_type))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type=None, allow_patterns=None,
                      commit_message=None):
        _FakeHfApi.calls.append(("upload_folder", repo_id, folder_path, repo_type,
                                 tuple(allow_patterns), commit_message))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub
    _FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHfApi)
    return _FakeHfApi


def test_publish_identity_uploads_the_identity_files(fake_hub, tmp_path):
    ident = tmp_path / "me"
    shutil.copytree(DEMO, ident)
    url = publish_identity(ident, "user/my-face", " hf_secret ", private=True)
    assert url == "https://huggingface.co/user/my-face"
    assert fake_hub.calls[0] == ("init", "hf_secret")
    assert fake_hub.calls[1] == ("create_repo", "user/my-face", True, True, "model")
    kind, repo, folder, repo_type, patterns, _ = fake_hub.calls[2]
    assert (kind, repo, folder, repo_type) == ("upload_folder", "user/my-face", str(ident),
                                               "model")
    assert set(patterns) == set(PUBLISHED_FILES) and "trainer_state.json" not in patterns
    publish_identity("demo", "user/other", "tok", private=False)  # by store name
    assert fake_hub.calls[-2][1:3] == ("user/other", False)


def test_publish_identity_clear_errors_without_leaking_the_token(fake_hub, monkeypatch):
    with pytest.raises(InputError, match="your-user/your-repo"):
        publish_identity("demo", "no-slash", "tok")
    with pytest.raises(InputError, match="write token"):
        publish_identity("demo", "user/repo", "  ")
    with pytest.raises(InputError, match="unknown identity"):
        publish_identity("nobody", "user/repo", "tok")
    assert fake_hub.calls == []  # nothing reached the Hub

    def refuse(self, *a, **k):
        raise RuntimeError(f"401 Unauthorized for token {self.token}")

    monkeypatch.setattr(_FakeHfApi, "create_repo", refuse)
    with pytest.raises(LadTalkError, match="write access") as err:
        publish_identity("demo", "user/repo", "hf_topsecret")
    assert "hf_topsecret" not in str(err.value) and "401" in str(err.value)
    assert err.value.__cause__ is None


def test_identity_config_is_the_model_config_it_was_saved_with():
    cfg = identity_config("demo")
    assert cfg.resolution == json.loads((DEMO / "config.json").read_text())["resolution"]
    with pytest.raises(InputError):
        identity_config("no-such-identity")


def test_identity_config_of_a_broken_config_names_the_file(tmp_path):
    ident = tmp_path / "me"
    shutil.copytree(DEMO, ident)
    (ident / "config.json").write_text("{truncated")
    with pytest.raises(CheckpointError, match=r"me[/\\]config\.json"):
        identity_config(ident)


def test_is_identity_dir_needs_every_required_file(tmp_path):
    assert REQUIRED_FILES == ("config.json", "model.safetensors")
    assert is_identity_dir(DEMO)
    part = tmp_path / "part"
    part.mkdir()
    (part / "config.json").write_text("{}")
    assert not is_identity_dir(part) and not is_identity_dir(tmp_path / "absent")
    (part / "model.safetensors").write_bytes(b"")
    assert is_identity_dir(part)


def test_a_swap_cut_between_its_renames_is_finished_on_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("LADTALK_HOME", str(tmp_path))
    target = tmp_path / "identities" / "me"
    with atomic_dir(target) as tmp:  # a real write, then the state a kill mid-swap leaves
        for name in REQUIRED_FILES:
            shutil.copy(DEMO / name, tmp / name)
    moved = target.parent / f"{OLD_PREFIX}me-0123abcd"
    target.rename(moved)
    assert resolve_identity("me") == target and is_identity_dir(target)
    assert not moved.exists()
    recover_dir(target)  # nothing to do once the target is back
    assert is_identity_dir(target)
