"""A public app (a Space) through gradio_client: identities belong to the session that enrolled
them, strangers can neither see, use, continue, overwrite nor download them; concurrent calls
all succeed; no temp folders are left behind.

One server per module (random-weight Wav2Lip, the tiny config for enrollment, the offline
dlib detector). Each ``gradio_client.Client`` is its own session: client A and client B are two
visitors.
"""

from __future__ import annotations

import json
import socket
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("public_home")


@pytest.fixture(autouse=True)
def _shared_home(_isolated_home, monkeypatch, home):
    monkeypatch.setenv("LADTALK_HOME", str(home))


@pytest.fixture(scope="module")
def app(home):
    import torch

    import app as app_module
    from ladtalk.generation.pipeline import Pipeline
    from ladtalk.models.wav2lip import Wav2Lip

    mp = pytest.MonkeyPatch()
    mp.setenv("LADTALK_HOME", str(home))
    mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    torch.manual_seed(0)
    demo = app_module.create_demo(
        Pipeline(Wav2Lip(), device="cpu", batch_size=16), public=True, enroll_budget=2,
        enroll_config="tiny", cache_examples=False,
        enroll_kwargs={"train_overrides": {"final_frames": 4, "eval_frames": 4}})
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port,
                quiet=True, mcp_server=True)
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        mp.undo()


def _client(url: str):
    return gradio_client.Client(url, verbose=False)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    import subprocess

    from ladtalk.media.ffmpeg import ffmpeg_exe
    dst = tmp_path_factory.mktemp("audio") / "hello_08.wav"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i",
                    str(EXAMPLES / "hello.wav"), "-t", "0.8", str(dst)], check=True)
    return dst


def _enroll(client, name: str, fresh: bool = False):
    from gradio_client import handle_file
    return client.predict(handle_file(str(EXAMPLES / "astronaut.mp4")), name, 2, "tiny", "dlib",
                          fresh, "", "", True, api_name="/enroll")


def _robustness(client, identity: str, certificate: bool = False):
    from gradio_client import handle_file
    return client.predict(handle_file(str(EXAMPLES / "astronaut.png")), None, 0.0, identity,
                          1.0, 0.05, 0, "blur", certificate, False, "dlib",
                          api_name="/robustness")


def _generate(client, audio: Path, identity: str = "none (Wav2Lip only)"):
    from gradio_client import handle_file
    return client.predict(handle_file(str(EXAMPLES / "astronaut.png")), handle_file(str(audio)),
                          identity, False, 2, False, 0, 10, 0, 0, True, "dlib", "pingpong", "",
                          1, "", api_name="/generate")


def _names(client):
    return [i["name"] for i in client.predict(api_name="/identities")]


def _refused(call, expected: str) -> str:
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as err:
        call()
    msg = str(err.value)
    assert expected in msg, msg
    return msg


def test_identities_are_private_to_their_session(app, home, audio):
    demo, url = app
    a, b = _client(url), _client(url)
    md, meta, weights = _enroll(a, "katie")
    assert meta["name"] == "katie" and meta["steps"] >= 1 and Path(weights).stat().st_size > 0
    steps, psnr = meta["steps"], meta["holdout_psnr"]
    assert "katie" in _names(a)
    # B does not see it: not in /identities, not in /status, not in the schema defaults
    assert "katie" not in _names(b) and "demo" in _names(b)
    assert "katie" not in json.dumps(b.predict(api_name="/status"))
    assert "katie" not in json.dumps(b.view_api(print_info=False, return_format="dict"))
    # B cannot use, continue or overwrite it, nor take the shipped demo's name
    _refused(lambda: _robustness(b, "katie"), "unknown identity")
    _refused(lambda: _generate(b, audio, "katie"), "unknown identity")
    _refused(lambda: _enroll(b, "katie"), "taken by another visitor")
    _refused(lambda: _enroll(b, "katie", fresh=True), "taken by another visitor")
    _refused(lambda: _enroll(b, "demo"), "read-only")
    after = json.loads((home / "identities" / "katie" / "meta.json").read_text())
    assert after["steps"] == steps and after["holdout_psnr"] == psnr
    # B cannot download the weights: the store is not served
    store_file = home / "identities" / "katie" / "model.safetensors"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{url}gradio_api/file={store_file}", timeout=30)
    assert err.value.code in (403, 404)
    # A can do all of it: use it, continue it, download it again
    raw = _robustness(a, "katie")[4]
    assert raw["identity"] == "katie"
    report = _generate(a, audio, "katie")[2]
    assert report["identity"] == "katie"
    md2, meta2, weights2 = _enroll(a, "katie")
    assert meta2["steps"] > steps and Path(weights2).stat().st_size > 0
    # A's session ends: its session identity goes with it (nobody could reach it any more)
    a.close()
    _wait_until(lambda: not (home / "identities" / "katie").exists())
    assert not (home / "owners" / "katie.json").exists()
    b.close()


def _wait_until(cond, timeout: float = 30.0) -> None:
    import time
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def test_mcp_lists_the_four_tools(app):
    demo, url = app
    with urllib.request.urlopen(f"{url}gradio_api/mcp/schema", timeout=30) as resp:
        tools = {t["name"]: t for t in json.loads(resp.read())}
    assert set(tools) == {"generate", "robustness", "enroll", "identities"}
    assert "Lip-sync" in tools["generate"]["description"]
    props = tools["enroll"]["inputSchema"]["properties"]
    assert "training time budget" in props["seconds"]["description"]


def test_per_owner_cap_and_logged_in_owner(home):
    """Caps and owners through the package API (a logged-in user keeps identities across
    sessions; a session's identities are capped)."""
    from ladtalk.errors import InputError
    from ladtalk.identities.owners import (
        Access,
        Owner,
        OwnerPolicy,
        claim,
        expire_identities,
        read_owner,
    )

    policy = OwnerPolicy(max_per_owner=2, session_ttl_hours=1.0)
    me = Access(public=True, owner=Owner.session("s-1"))
    for name in ("cap-1", "cap-2"):
        claim(me, name, policy)
    with pytest.raises(InputError, match="limit is 2"):
        claim(me, "cap-3", policy)
    # a logged-in user is the same owner in any session
    alice = Access(public=True, owner=Owner.user("alice"))
    claim(alice, "alice-1", policy)
    assert Access(public=True, owner=Owner.user("alice")).owns(read_owner("alice-1"))
    with pytest.raises(InputError, match="taken by another visitor"):
        claim(me, "alice-1", policy)
    # session identities expire after disuse; user identities do not
    import time
    gone = expire_identities(policy, now=time.time() + 2 * 3600)
    assert set(gone) == {"cap-1", "cap-2"}


def test_concurrent_calls_all_succeed(app, audio):
    demo, url = app
    clients = [_client(url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(12) as pool:
            rob = [pool.submit(_robustness, clients[i % 4], "demo", i == 0) for i in range(8)]
            gen = [pool.submit(_generate, clients[i], audio) for i in range(4)]
            raws = [f.result(timeout=600)[4] for f in rob]
            vids = [f.result(timeout=600) for f in gen]
        assert all(r["identity"] == "demo" for r in raws)
        assert raws[0]["certificate"] is not None
        assert all(Path(v[0]["video"] if isinstance(v[0], dict) else v[0]).stat().st_size > 0
                   for v in vids)
    finally:
        for c in clients:
            c.close()


def test_no_temp_folders_survive(app):
    """Last in the module: after the sessions end and the app closes, nothing of this
    process's temp space is left."""
    demo, url = app
    st_space = demo.ladtalk_state.space
    c = _client(url)
    _robustness(c, "demo")
    assert st_space.usage().files > 0  # the gallery files Gradio serves
    c.close()
    _wait_until(lambda: st_space.usage().files == 0)
    st_space.close()
    left = [p for p in Path(tempfile.gettempdir()).glob("ladtalk-*")
            if p.name.startswith(st_space.root.name)]
    assert left == []



def test_public_mode_and_callers(monkeypatch):
    from types import SimpleNamespace

    from ladtalk.app.session import ANONYMOUS_MCP, caller_access, public_mode, session_key
    from ladtalk.errors import InputError
    from ladtalk.identities.owners import OwnerPolicy, claim

    for var in ("LADTALK_PUBLIC", "SPACE_ID"):
        monkeypatch.delenv(var, raising=False)
    assert public_mode() is False and public_mode(True) is True
    monkeypatch.setenv("SPACE_ID", "someone/ladtalk")
    assert public_mode() is True
    monkeypatch.setenv("LADTALK_PUBLIC", "0")  # the explicit setting wins
    assert public_mode() is False
    web = SimpleNamespace(session_hash="abc", headers={})
    mcp = SimpleNamespace(session_hash="shared", headers={"x-gradio-user": "mcp",
                                                          "mcp-session-id": "m1"})
    anon = SimpleNamespace(session_hash="shared", headers={"x-gradio-user": "mcp"})
    assert session_key(web) == "abc" and session_key(mcp) == "mcp-m1"
    assert session_key(anon) == ANONYMOUS_MCP and session_key(None) == "local"
    # the session id itself is never stored: owners are keyed by its hash
    assert "abc" not in caller_access(True, web).owner.key
    user = caller_access(True, web, SimpleNamespace(username="alice")).owner
    assert user.key == "user:alice"
    # an MCP caller without a session may use identities but not enroll one
    with pytest.raises(InputError, match="needs a session"):
        claim(caller_access(True, anon), "anon-1", OwnerPolicy())
    assert caller_access(False, anon).public is False
