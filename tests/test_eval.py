"""``python -m ladtalk eval`` and :mod:`ladtalk.evaluation` on short synthetic videos.

The reference is a moving crop of scikit-image's astronaut (a real face, found by dlib); the
generated clip is the reference's frames K..K+M, noised and re-encoded, so the Sliding
Evaluation must find offset K.
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from ladtalk.cli import main
from ladtalk.errors import InputError
from ladtalk.evaluation import report as ev
from ladtalk.metrics import psnr

K, M, N, SIZE = 5, 16, 24, 224


def _reference_frames() -> np.ndarray:
    from skimage.data import astronaut

    img = astronaut()   # face at about x 177..279, y 65..176

    def frame(t: int) -> np.ndarray:
        dx = int(round(10 * np.sin(2 * np.pi * t / 13)))
        dy = int(round(6 * np.cos(2 * np.pi * t / 9)))
        return np.ascontiguousarray(img[16 + dy:16 + dy + SIZE, 120 + dx:120 + dx + SIZE])

    return np.stack([frame(t) for t in range(N)])


def _noisy(frames: np.ndarray, seed: int, sigma: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    import soundfile as sf

    from ladtalk.media.decode import read_frames
    from ladtalk.media.encode import VideoWriter

    d = tmp_path_factory.mktemp("eval_media")
    ref = _reference_frames()
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000.0
    speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    wav = d / "speech.wav"
    sf.write(str(wav), (speech + 0.01 * rng.normal(size=t.size)).astype(np.float32), 16000)

    def write(name, frames, audio=None):
        with VideoWriter(d / name, 25, (SIZE, SIZE), audio=audio, crf=10, preset="ultrafast") as w:
            w.write(frames)
        return d / name

    paths = {
        "ref": write("ref.mp4", ref),
        "gen": write("gen.mp4", _noisy(ref[K:K + M], 0), audio=wav),
        "gen2": write("gen2.mp4", _noisy(ref[2:2 + M], 1)),
        "clean": write("clean.mp4", ref[K:K + M]),
        "wav": wav,
        "dir": d,
    }
    # decoded frames (what the evaluator sees) for independent checks
    paths["ref_frames"] = read_frames(paths["ref"])
    paths["gen_frames"] = read_frames(paths["gen"])
    return paths


@pytest.fixture
def no_fid_extra(monkeypatch):
    """Behave as on a machine without the optional FID extra, even if it is installed."""
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", None)


def _mean_psnr(gen, ref, k):
    return float(np.mean([psnr(gen[i], ref[i + k]) for i in range(len(gen))]))


def test_eval_cli_single_pair_finds_offset_and_documents_json(media, tmp_path, capsys,
                                                              no_fid_extra):
    out = tmp_path / "pair.json"
    rc = main(["eval", "--generated", str(media["gen"]), "--reference", str(media["ref"]),
               "--detector", "dlib", "--json", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "needs weights" in printed and "PSNR" in printed
    data = json.loads(out.read_text())        # strict JSON (no NaN/Infinity tokens)

    assert data["format"] == "ladtalk-eval/1"
    assert data["generated"]["frames"] == M and data["reference"]["frames"] == N
    assert data["generated"]["size"] == [SIZE, SIZE] and data["generated"]["fps"] == 25.0
    assert data["alignment"] == {"sliding": True, "min_overlap": None, "max_offset": None}
    assert data["detector"] == "dlib"
    assert data["audio"]["source"] == "generated"
    assert set(data["metrics"]) == set(ev.METRICS)
    for name in ("psnr", "ssim", "mouth_psnr", "temporal"):
        entry = data["metrics"][name]
        assert entry["status"] == "ok", (name, entry)
        assert entry["offset"] == K and entry["overlap"] == M, (name, entry)
        assert entry["higher_is_better"] == (name != "temporal")
        assert data["summary"][name] == entry["value"]
    # the reported PSNR is the mean at offset K, and no other offset scores higher
    gen, ref = media["gen_frames"], media["ref_frames"]
    assert data["metrics"]["psnr"]["value"] == pytest.approx(_mean_psnr(gen, ref, K), abs=1e-9)
    assert max(_mean_psnr(gen, ref, k) for k in range(N - M + 1) if k != K) \
        < data["metrics"]["psnr"]["value"] - 3
    assert 25 < data["metrics"]["psnr"]["value"] < 45
    assert 0.5 < data["metrics"]["ssim"]["value"] < 1
    assert data["metrics"]["mouth_psnr"]["face_frames"] == M
    assert data["metrics"]["mouth_psnr"]["region"] == {"x0": 0.25, "x1": 0.75,
                                                       "y0": 0.6, "y1": 0.95}
    # weights that are not on this machine: reported, not a crash
    for name in ("fid", "lse"):
        entry = data["metrics"][name]
        assert entry["status"] == "needs weights" and entry["reason"]
    assert data["metrics"]["lse"]["lse_c"] is None
    assert "syncnet" in data["metrics"]["lse"]["reason"].lower()
    assert data["summary"]["fid"] == data["summary"]["lse_c"] == data["summary"]["lse_d"] \
        == "needs weights"


def test_no_sliding_compares_frame_i_with_frame_i(media, tmp_path):
    cfg = ev.EvalConfig(metrics="psnr,temporal", sliding=False)
    res = ev.evaluate_pair(media["gen"], media["ref"], config=cfg).to_json()
    p = res["metrics"]["psnr"]
    assert (p["offset"], p["overlap"]) == (0, M)
    assert p["value"] == pytest.approx(_mean_psnr(media["gen_frames"], media["ref_frames"], 0))
    assert res["alignment"] == {"sliding": False, "min_overlap": None, "max_offset": 0}
    # bounded sliding: K is out of reach with --max-offset 3
    res3 = ev.evaluate_pair(media["gen"], media["ref"],
                            config=ev.EvalConfig(metrics="psnr", max_offset=3)).to_json()
    scores = [_mean_psnr(media["gen_frames"], media["ref_frames"], k) for k in range(4)]
    assert res3["metrics"]["psnr"]["offset"] == int(np.argmax(scores))
    assert res3["metrics"]["psnr"]["value"] == pytest.approx(max(scores))


def test_explicitly_requested_unavailable_metric_is_an_error(media, capsys, no_fid_extra):
    rc = main(["eval", "--generated", str(media["gen"]), "--reference", str(media["ref"]),
               "--metrics", "lse", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "needs weights" in err and "--syncnet" in err
    rc = main(["eval", "--generated", str(media["gen"]), "--reference", str(media["ref"]),
               "--metrics", "fid", "--quiet"])
    assert rc == 2 and "fid" in capsys.readouterr().err.lower()
    # together with a computable metric it is reported instead
    res = ev.evaluate_pair(media["gen"], media["ref"],
                           config=ev.EvalConfig(metrics="psnr,lse", explicit=True))
    assert res.metrics["psnr"].status == "ok" and res.metrics["psnr"].value > 20
    assert res.metrics["lse"].status == "needs weights" and res.metrics["lse"].lse_c is None
    assert res.summary == {"psnr": res.metrics["psnr"].value, "lse_c": "needs weights",
                           "lse_d": "needs weights"}


def test_lse_runs_with_a_syncnet_file(media, tmp_path):
    """Plumbing with random SyncNet weights: detection -> crops -> audio slice -> scores."""
    import torch
    from safetensors.torch import save_file

    from ladtalk.models.syncnet_lse import SyncNetS

    torch.manual_seed(0)
    weights = tmp_path / "syncnet.safetensors"
    save_file({k: v.contiguous() for k, v in SyncNetS().state_dict().items()}, str(weights))
    cfg = ev.EvalConfig(metrics="lse", explicit=True, syncnet=str(weights), detector="dlib")
    res = ev.evaluate_pair(media["gen"], media["ref"], config=cfg).to_json()
    lse = res["metrics"]["lse"]
    assert lse["status"] == "ok", lse
    assert lse["frames"] == [0, M] and lse["n_windows"] == M - 5
    assert lse["audio_source"] == "generated"
    assert lse["lse_c"] >= 0 and lse["lse_d"] > 0 and abs(lse["offset"]) <= 15
    assert res["summary"] == {"lse_c": lse["lse_c"], "lse_d": lse["lse_d"]}


def test_batch_csv_table_json_and_csv(media, tmp_path, capsys, no_fid_extra):
    pairs = tmp_path / "pairs.csv"
    d = media["dir"]
    pairs.write_text(
        "method,generated,reference,audio\n"
        f"noisy,{media['gen']},{media['ref']},\n"
        f"noisy,{media['gen2']},{media['ref']},{media['wav']}\n"
        f"exact,{d / 'clean.mp4'},{d / 'ref.mp4'},\n")
    out_json, out_csv = tmp_path / "t.json", tmp_path / "t.csv"
    rc = main(["eval", "--pairs", str(pairs), "--metrics", "psnr,temporal,fid,lse",
               "--json", str(out_json), "--csv", str(out_csv), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    lines = [ln for ln in printed.splitlines() if ln.startswith("| ")]
    assert lines[0].split("|")[1].strip() == "Method"
    assert [ln.split("|")[1].strip() for ln in lines[1:]] == ["noisy", "exact"]

    data = json.loads(out_json.read_text())
    assert data["format"] == "ladtalk-eval-batch/1"
    assert data["columns"] == ["psnr", "temporal", "fid", "lse_c", "lse_d"]
    assert data["n_clips"] == {"noisy": 2, "exact": 1}
    clips = {(c["method"], c["generated"]["path"]): c for c in data["clips"]}
    noisy = [c for (m, _), c in clips.items() if m == "noisy"]
    assert {c["metrics"]["psnr"]["offset"] for c in noisy} == {K, 2}
    assert sorted(c["audio"]["source"] for c in noisy) == ["argument", "generated"]
    mean = np.mean([c["metrics"]["psnr"]["value"] for c in noisy])
    cell = data["table"]["noisy"]["psnr"]
    assert cell == {"mean": pytest.approx(mean), "n": 2, "of": 2, "status": "ok"}
    assert data["table"]["exact"]["psnr"]["mean"] > cell["mean"] + 3
    for col in ("fid", "lse_c", "lse_d"):
        assert data["table"]["noisy"][col]["status"] == "needs weights"
        assert data["table"]["noisy"][col]["mean"] is None

    rows = list(csv.DictReader(out_csv.open()))
    assert [r["method"] for r in rows] == ["noisy", "exact"]
    assert list(rows[0]) == ["method", "clips", "psnr", "temporal", "fid", "lse_c", "lse_d"]
    assert float(rows[0]["psnr"]) == pytest.approx(mean)
    assert rows[0]["clips"] == "2" and rows[0]["fid"] == rows[1]["lse_d"] == "needs weights"


def test_pairs_csv_validation_and_relative_paths(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("method,generated\nx,a.mp4\n")
    with pytest.raises(InputError, match="reference"):
        ev.read_pairs_csv(bad)
    good = tmp_path / "sub" / "p.csv"
    good.parent.mkdir()
    good.write_text("Method, Generated, Reference\nours,g.mp4,/abs/r.mp4\n\n")
    (spec,) = ev.read_pairs_csv(good)
    assert spec.generated == good.parent / "g.mp4" and str(spec.reference) == "/abs/r.mp4"
    assert spec.audio is None
    empty = tmp_path / "e.csv"
    empty.write_text("method,generated,reference\nours,,r.mp4\n")
    with pytest.raises(InputError, match="line 2"):
        ev.read_pairs_csv(empty)


def test_metric_parsing_aggregation_and_table():
    assert ev.parse_metrics(None) == ev.METRICS
    assert ev.parse_metrics("lse-c, PSNR") == ("psnr", "lse")
    with pytest.raises(InputError, match="unknown metric"):
        ev.parse_metrics("psnr,lpips")
    assert ev.metric_columns(("lse", "psnr")) == ["psnr", "lse_c", "lse_d"]
    rows = [("a", {"psnr": 30.0, "fid": "needs weights"}),
            ("a", {"psnr": "unavailable", "fid": "needs weights"}),
            ("b", {"psnr": 20.0, "fid": 12.5}),
            ("c", {"psnr": float("inf"), "fid": 1.0})]
    methods, table, counts = ev.aggregate(rows, ["psnr", "fid"])
    assert methods == ["a", "b", "c"] and counts == {"a": 2, "b": 1, "c": 1}
    assert table["a"]["psnr"] == ev.TableCell(mean=30.0, n=1, of=2, status="ok")
    assert table["a"]["fid"].status == "needs weights" and table["a"]["fid"].mean is None
    result = ev.BatchResult(columns=["psnr", "fid"], methods=methods, table=table, clips=[],
                            n_clips=counts)
    text = result.format_table()
    assert "30.00*" in text and "needs weights" in text and "12.50" in text
    # the one JSON policy: non-finite means are strings, in JSON and in CSV
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["table"]["c"]["psnr"] == {"mean": "inf", "n": 1, "of": 1, "status": "ok"}
    assert data["table"]["a"]["fid"] == {"mean": None, "n": 0, "of": 2,
                                         "status": "needs weights"}
    assert "c,1,inf,1.0" in result.to_csv().splitlines()
