import os

# Passive OpenMP waiting: with the default busy-wait, torch's CPU kernels slow down 5-10x when
# the cores are shared with other processes (measured: 7 vs 114 training steps in 50 s on 2
# busy cores); on an idle machine the cost is negligible. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ladtalk.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
