import logging
import os
import sys

# Passive OpenMP waiting: with the default busy-wait, torch's CPU kernels slow down 5-10x when
# the cores are shared with other processes (measured: 7 vs 114 training steps in 50 s on 2
# busy cores); on an idle machine the cost is negligible. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The same for numpy's OpenBLAS: its worker threads spin for about 0.1 s after the import and
# after each call before they sleep (2^4 cycles instead): 0.1-0.3 CPU-s of a short run taken
# from the cores that import and decode (this process and its mel child). Must be set before
# numpy loads; the threads themselves stay.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from ladtalk.cli import main


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown of torch / OpenVINO (about 0.45 s
    after every command on a 2-core CPU). Every file is closed, every output written
    atomically and every child process ended by then; what is left to do is flushing."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as exc:  # argparse's errors and --help
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    _exit_now(int(status or 0))
