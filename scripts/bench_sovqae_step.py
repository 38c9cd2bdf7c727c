"""Time one SOVQAE autoencoder training step (L2 + VQ loss, Adam) for a few configs.

Usage: python scripts/bench_sovqae_step.py [--batch 8] [--repeats 4] [--threads N]
       [--configs cpu cpu-f4 ...]
Extra candidate configs are given as NAME=field:value,field:value (e.g. f4=ch_mult:1-2-4).
Prints parameters, latent grid, the minimum / median wall time per step and the minimum CPU
time per step (summed over threads). On a shared machine the wall minimum is still inflated;
CPU time / threads is the estimate for an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ladtalk.models.sovqae import SOVQAE, get_config


def parse(spec: str):
    name, _, rest = spec.partition("=")
    if not rest:
        return name, get_config(name)
    base, over = "cpu", {}
    for item in rest.split(","):
        k, v = item.split(":")
        if k == "from":
            base = v
        elif k in ("ch_mult", "attn_resolutions"):
            over[k] = tuple(int(t) for t in v.split("-") if t)
        else:
            over[k] = int(v)
    return name, get_config(base, **over)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--configs", nargs="+", default=["cpu"])
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads for this run (0: leave torch's default). On a "
                         "shared machine 1 thread avoids OpenMP spin-waiting")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for spec in args.configs:
        name, cfg = parse(spec)
        torch.manual_seed(0)
        model = SOVQAE(cfg).train()
        opt = torch.optim.Adam(model.generator_parameters(), lr=2e-4)
        x = torch.rand(args.batch, 3, cfg.resolution, cfg.resolution) * 2 - 1
        times, cpu = [], []
        for i in range(args.repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            xrec, qloss, _ = model(x)
            loss = torch.mean((xrec - x) ** 2) + qloss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:10s} params {n / 1e6:6.2f}M  res {cfg.resolution}  f={cfg.downsample_factor} "
              f"grid {cfg.latent_size}x{cfg.latent_size}  step(b={args.batch}) "
              f"wall min {min(times):.2f}s median {statistics.median(times):.2f}s  "
              f"cpu-time min {min(cpu):.2f}s (threads {torch.get_num_threads()})", flush=True)


if __name__ == "__main__":
    main()
