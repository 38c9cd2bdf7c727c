"""Several processes (gloo on the CPU): the launcher's environment, DDP enrollment keeping
every rank identical, and ``torchrun -m ladtalk enroll`` writing the identity once and
resuming."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ladtalk._util import dist
from ladtalk.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_context_from_the_launcher_environment(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    one = dist.context()
    assert (one.rank, one.world_size, one.enabled, one.is_main) == (0, 1, False, True)
    assert dist.init(one) == one and not dist.is_initialized()  # a world of one: no group
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}] and dist.broadcast_object(3) == 3
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    ctx = dist.context()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == \
        (3, 4, 1, True, False)
    assert ctx.device("cpu") == torch.device("cpu")
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError, match="RANK=4 does not fit WORLD_SIZE=4"):
        dist.context()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InputError, match="torchrun"):
        dist.context()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(InputError, match="MASTER_ADDR"):
        dist.init(dist.context())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, ema: bool) -> None:
    """One rank: a model initialised differently on purpose, its own data, a few steps that
    include k-means, dead-code restarts and GAN updates; then its whole state to a file."""
    from safetensors.torch import save_file

    from ladtalk.enrollment.config import train_preset
    from ladtalk.enrollment.data import CropSampler
    from ladtalk.enrollment.distributed import rank_seed
    from ladtalk.enrollment.trainer import Trainer
    from ladtalk.models.sovqae import SOVQAE, get_config
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = dist.init(dist.context())
    torch.manual_seed(rank)  # different weights per rank: DDP must start all from rank 0's
    model = SOVQAE(get_config("tiny", ema=ema, n_embed=512))  # some codes stay dead
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = train_preset("tiny", kmeans_at=1, restart_every=2, disc_start=1, restore_start=0,
                       batch_size=2)
    crops = np.random.default_rng(10 + rank).integers(0, 256, (12, 32, 32, 3), np.uint8)
    sampler = CropSampler(crops, cfg.batch_size, seed=rank_seed(cfg.seed, ctx))
    trainer = Trainer(model, cfg, torch.device("cpu"), None, ctx)
    terms = [trainer.step(sampler, progress=i / 5) for i in range(5)]
    q = model.quantize
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"disc.{k}": v for k, v in trainer.disc.state_dict().items()})
    if ema:
        state.update(ema_size=q.ema_cluster_size, ema_sum=q.ema_embed_sum)
    state["changed"] = torch.tensor([float(not torch.equal(start[k], model.state_dict()[k]))
                                     for k in start]).max()
    state["restarted"] = torch.tensor(sum(t.get("restarted_codes", 0.0) for t in terms))
    save_file({k: v.detach().contiguous() for k, v in state.items()},
              str(Path(out) / f"rank{rank}.safetensors"))
    dist.shutdown()


@pytest.mark.parametrize("ema", [True, False], ids=["ema-codebook", "learned-codebook"])
def test_ddp_ranks_keep_identical_weights_and_codebooks(tmp_path, ema):
    """Two gloo ranks with different data: generator, PatchGAN, codebook and EMA statistics
    are bit-identical after steps with k-means, restarts and adversarial updates."""
    from safetensors.torch import load_file
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path), ema),
                                          nprocs=2, start_method="spawn")
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys() and any(k.startswith("disc.") for k in a)
    different = [k for k in a if k not in ("restarted",) and not torch.equal(a[k], b[k])]
    assert not different, different
    assert float(a["changed"]) == 1.0  # training moved the weights
    assert float(a["restarted"]) > 0  # rank 0 restarted dead codes; rank 1 took them
    assert float(b["restarted"]) == 0


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", "2"],
    # accelerate's multi-process launch (torchrun's launcher underneath; gloo without GPUs)
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                   "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "--main_process_port", "0"],
}


def _launch(launcher: str, args, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LADTALK_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    cmd = [*LAUNCHERS[launcher], "-m", "ladtalk", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launched_enroll_writes_the_identity_once_and_resumes(tmp_path, launcher):
    from test_training import _astronaut_frames, _write_video
    if launcher == "accelerate":
        pytest.importorskip("accelerate")
    video = _write_video(tmp_path / "astronaut.mp4", _astronaut_frames(48))
    home = tmp_path / "home"
    args = ["enroll", "--video", str(video), "--name", "pair", "--config", "tiny",
            "--seconds", "120", "--max-steps", "3", "--batch-size", "2", "--detector", "dlib",
            "--quiet"]
    first = _launch(launcher, args, home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("identity 'pair' written") == 1  # rank 0 reports, once
    assert "effective batch 4" in first.stderr
    store = home / "identities"
    assert [p.name for p in store.iterdir()] == ["pair"]  # no temp or old folder left
    meta = json.loads((store / "pair" / "meta.json").read_text())
    assert meta["steps"] == 3 and not meta["resumed"]
    assert meta["distributed"]["world_size"] == 2
    assert meta["distributed"]["effective_batch"] == 4
    assert meta["distributed"]["backend"] == "gloo"
    second = _launch(launcher, args, home)
    assert second.returncode == 0, second.stdout + second.stderr
    meta = json.loads((store / "pair" / "meta.json").read_text())
    assert meta["steps"] == 6 and meta["run_steps"] == 3 and meta["resumed"]


@pytest.mark.slow
def test_a_failure_on_rank_0_stops_every_rank_with_its_message(tmp_path):
    """Rank 0 finds no face while the other rank waits for its crops: both stop at once with
    rank 0's message (no rank left waiting at a collective, no traceback)."""
    frames = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 160, 160, 3), np.uint8),
                       12, axis=0)
    from test_training import _write_video
    video = _write_video(tmp_path / "noface.mp4", frames)
    proc = _launch("torchrun", ["enroll", "--video", str(video), "--name", "nobody", "--config",
                                "tiny", "--seconds", "10", "--detector", "dlib", "--quiet"],
                   tmp_path / "home")
    assert proc.returncode != 0
    assert proc.stderr.count("error: no face was detected") == 1
    assert "error: rank 0 stopped (InputError: no face was detected" in proc.stderr
    assert "[rank1]: Traceback" not in proc.stderr and "[rank0]: Traceback" not in proc.stderr
    assert not (tmp_path / "home" / "identities" / "nobody").exists()
