"""A/B driver for the CPU enrollment recipe (docs/enrollment.md, "The 256 px recipe").

Trains a normalisation-free SOVQAE on crops of ``../shared/data/dfrf_cnn2.mp4`` (first 90 %)
with :class:`ladtalk.enrollment.enroll.Trainer` for ``--seconds`` and prints crop-level PSNRs on
32 held-out crops: whole-crop clean reconstruction, and, in the mouth box (rows 0.5-0.9,
columns 0.2-0.8 of the crop), the lipsync-path input W (sigma 0 / 0.5 / 1 at 96 px) against
its restoration R. Example (run c of the write-up)::

    python scripts/recipe_ab.py --name c --patch 96 --weights 1,1,1,6 --rp 0.9 --seconds 420

The model lands in /tmp/recipe_ab/NAME; ``python -m ladtalk eval quality --identity
/tmp/recipe_ab/NAME --video ...`` scores it at the video's resolution.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("LADTALK_HOME", "/tmp/ladhome")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataclasses import replace

import torch

from ladtalk.enrollment import Trainer, train_preset
from ladtalk.enrollment.data import CropSampler
from ladtalk.enrollment.trainer import holdout_psnr as _psnr
from ladtalk.face.video_crops import even_subset, extract_crops, split_holdout
from ladtalk.media.resample import lipsync_path, to_tensor01
from ladtalk.models.sovqae import SOVQAE, SOVQAEConfig

ap = argparse.ArgumentParser()
ap.add_argument("--name", default="a")
ap.add_argument("--seconds", type=float, default=420)
ap.add_argument("--res", type=int, default=256)
ap.add_argument("--patch", type=int, default=128)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--ch", type=int, default=32)
ap.add_argument("--norm", default="none")
ap.add_argument("--focus", type=float, default=0.75)
ap.add_argument("--rp", type=float, default=0.8)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--z", type=int, default=16)
ap.add_argument("--mult", default="1,1,2")
ap.add_argument("--nres", type=int, default=1)
ap.add_argument("--video", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                       / "dfrf_cnn2.mp4"))
ap.add_argument("--weights", default="1,1,1,3")
a = ap.parse_args()
torch.set_num_threads(2)
crops = extract_crops(a.video, a.res, "dlib")
tr, ho = split_holdout(len(crops), 0.1)
cfgm = SOVQAEConfig(resolution=a.res, ch=a.ch, ch_mult=tuple(int(v) for v in a.mult.split(",")),
                    num_res_blocks=a.nres,
                    attn_resolutions=(), z_channels=a.z, embed_dim=a.z, n_embed=1024, ema=True,
                    norm=a.norm, mid_attn=(a.norm != "none"))
model = SOVQAE(cfgm)
print("params", sum(p.numel() for p in model.parameters()) / 1e6, "M")
cfg = replace(train_preset("cpu"), seconds=a.seconds, patch=a.patch, patch_focus=a.focus,
              degrade_weights=tuple(float(v) for v in a.weights.split(",")), restore_prob=a.rp,
              batch_size=a.batch, lr=a.lr)
sampler = CropSampler(crops.crops[tr], cfg.batch_size, seed=0)
trainer = Trainer(model, cfg, torch.device("cpu"))
hold = to_tensor01(crops.crops[ho][even_subset(len(ho), 32)])
t0 = time.time()
n = 0
while time.time() - t0 < a.seconds:
    terms = trainer.step(sampler, progress=(time.time() - t0) / a.seconds)
    n += 1
    if n % 50 == 0:
        print(f"step {n} t {time.time()-t0:.0f}s rec {terms['rec']:.4f} "
              f"codes {terms['codes_in_batch']:.0f}", flush=True)
print("steps", n, "s/step", (time.time() - t0) / n)
os.makedirs("/tmp/recipe_ab", exist_ok=True)
model.save_pretrained(f"/tmp/recipe_ab/{a.name}")
# crop-level lower-face eval
model.eval()
R = a.res
ys, xs = slice(int(0.5 * R), int(0.9 * R)), slice(int(0.2 * R), int(0.8 * R))
def region_psnr(y, x):
    return _psnr(y[..., ys, xs], x[..., ys, xs])
out = {"steps": n, "clean": _psnr(trainer.reconstruct(hold), hold)}
for sig in (0.0, 0.5, 1.0):
    w = lipsync_path(hold, sig)
    r = trainer.reconstruct(w)
    out[f"s{sig}"] = {"W": region_psnr(w, hold), "R": region_psnr(r, hold)}
print(json.dumps(out, indent=1))
json.dump(out, open(f"/tmp/recipe_ab/{a.name}.json", "w"))
