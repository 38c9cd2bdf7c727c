"""Precision and backend chosen by measurement, never by a guess (:func:`choose_runtime`).

``--precision auto`` / ``--backend auto`` list the candidate (backend, precision) plans
(:func:`candidate_plans`), time each on the actual model at the actual batch with the
threads one model thread gets, and keep the fastest. The reference plan (torch at fp32, or at
the precision asked for) is always timed, and another plan wins only when it is at least
:data:`MARGIN` faster: ``auto`` is never slower than fp32 in its own measurement. The
winner is cached per machine (CPU model and flags, or GPU name), torch and OpenVINO versions,
model signature, batch and threads in ``$LADTALK_HOME/cache/runtime.json``, so the
measurement (a few seconds) happens once per machine. Forcing a precision and a backend skips
it. docs/performance.md has the figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Union

from ladtalk._util.choices import BACKENDS, PRECISIONS
from ladtalk._util.entryfile import read_entries, write_entries
from ladtalk._util.paths import ladtalk_home
from ladtalk.errors import InputError
from ladtalk.runtime.openvino_engine import INSTALL_HINT, openvino_available, openvino_version

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MARGIN = 1.05        # a plan must be this much faster than the reference to replace it
CLOSE = 1.15         # plans within this factor of the fastest are timed a second time
CACHE_NAME = "runtime.json"
CACHE_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """How a model runs: ``backend`` ("torch" / "openvino") at ``precision``."""

    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass
class RuntimeChoice:
    """The plan a model runs with and how it was chosen: ``how`` is "forced" (one candidate),
    "measured" (timed now) or "cached" (timed earlier on this machine); ``speeds``: items/s of
    each timed plan (label -> items/s), ``seconds`` the measurement's wall time."""

    plan: Plan
    how: str
    speeds: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: its entry in the cache when it was measured or read from there
    cache_key: Optional[str] = None

    @property
    def backend(self) -> str:
        return self.plan.backend

    @property
    def precision(self) -> str:
        return self.plan.precision

    def describe(self) -> str:
        if not self.speeds:
            return f"{self.plan.label} ({self.how})"
        timed = ", ".join(f"{k} {v:.1f}/s" for k, v in
                          sorted(self.speeds.items(), key=lambda kv: -kv[1]))
        return f"{self.plan.label} ({self.how}: {timed})"

    def to_dict(self) -> Dict[str, object]:
        return {"backend": self.backend, "precision": self.precision, "how": self.how,
                "speeds": dict(self.speeds), "seconds": round(self.seconds, 3)}


def candidate_plans(backend: str, precision: str,
                    device: Union[str, "torch.device"]) -> List[Plan]:
    """The plans ``backend`` x ``precision`` allow on ``device`` (a torch device or its type,
    "cpu" / "cuda"), the reference first."""
    kind = getattr(device, "type", device)
    backend, precision = (backend or "auto").lower(), (precision or "fp32").lower()
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    if backend == "openvino":
        if kind != "cpu":
            raise InputError(f"--backend openvino runs on the CPU only; with --device "
                             f"{kind} use --backend torch (or auto)")
        if not openvino_available():
            raise InputError(f"--backend openvino was asked for but OpenVINO is not "
                             f"installed. {INSTALL_HINT}")
    backends = ["torch"] if backend == "torch" else ["openvino"] if backend == "openvino" \
        else ["torch"] + (["openvino"] if kind == "cpu" and openvino_available() else [])
    if precision == "auto":
        precisions = ["fp32", "bf16"] if kind == "cpu" else ["fp32", "fp16"] + (
            ["bf16"] if _cuda_bf16(device) else [])
    else:
        precisions = [precision]
    reference = Plan("torch", _torch_precision("fp32" if precision == "auto" else precision,
                                               device))
    plans = [reference] if "torch" in backends else []
    for b in backends:
        for p in precisions:
            plan = Plan(b, _torch_precision(p, device) if b == "torch" else p)
            if plan not in plans:
                plans.append(plan)
    return plans


def _torch_precision(precision: str, device: Union[str, "torch.device"]) -> str:
    """What eager torch runs for ``precision``: fp16 is fp32 on a CPU (no fast fp16
    convolutions there; :func:`ladtalk._util.device.resolve_dtype` does the same)."""
    return "fp32" if getattr(device, "type", device) == "cpu" and precision == "fp16" \
        else precision


def _cuda_bf16(device: Union[str, "torch.device"]) -> bool:
    import torch
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - no CUDA runtime: no bf16 candidate
        return False


def machine_signature(device: "torch.device") -> Dict[str, object]:
    """What decides the winner besides the model: the processor and the library versions."""
    import torch
    sig: Dict[str, object] = {"torch": torch.__version__, "openvino": openvino_version(),
                              "device": device.type}
    if device.type == "cuda":
        sig["gpu"] = torch.cuda.get_device_name(device)
    else:
        sig["cpu"], sig["flags"] = cpu_model()
    return sig


def cpu_model() -> tuple:
    """``(model name, the vector / matrix flags)`` from ``/proc/cpuinfo`` (first core), or
    the platform's processor name and no flags where there is none."""
    fields: Dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = sorted(f for f in fields.get("flags", "").split()
                   if f.startswith(("avx", "amx", "fma", "sse4")) or "vnni" in f)
    return name, flags


def _cache_path() -> Path:
    return ladtalk_home() / "cache" / CACHE_NAME


def _read_cache(path: Path) -> Dict[str, dict]:
    return read_entries(path, CACHE_VERSION, "precision cache (measuring again)")


def cached_choice(key: str) -> Optional[Plan]:
    """The plan the cache holds under ``key`` (a :attr:`RuntimeChoice.cache_key`), or None
    (deleting the cache file makes every choice measured again)."""
    entry = _read_cache(_cache_path()).get(key)
    if not isinstance(entry, dict) or not {"backend", "precision"} <= entry.keys():
        return None
    return Plan(str(entry["backend"]), str(entry["precision"]))


def _cached_plan(entry: object, plans: Sequence[Plan]) -> Optional[Plan]:
    if not isinstance(entry, dict):
        return None
    for pl in plans:
        if entry.get("backend") == pl.backend and entry.get("precision") == pl.precision:
            return pl
    return None


def measure(plans: Sequence[Plan], build: Callable[[Plan], Callable[[], None]],
            items: int) -> Dict[str, float]:
    """Items/s of each plan: build it, one warm-up call, one timed call each; then the close
    contenders (within :data:`CLOSE` of the best) are timed again in reverse order, and each
    plan's best call counts."""
    runs = {pl.label: build(pl) for pl in plans}
    for fn in runs.values():
        fn()  # warm-up: kernel selection, first-call allocations
    best: Dict[str, float] = {}

    def timed(pl: Plan) -> None:
        t0 = time.perf_counter()
        runs[pl.label]()
        best[pl.label] = min(time.perf_counter() - t0, best.get(pl.label, float("inf")))
    for pl in plans:
        timed(pl)
    fastest = min(best.values())
    for pl in reversed(plans):
        if best[pl.label] <= CLOSE * fastest:
            timed(pl)
    return {k: items / max(v, 1e-9) for k, v in best.items()}


def pick(plans: Sequence[Plan], speeds: Dict[str, float]) -> Plan:
    """The fastest plan, unless it is less than :data:`MARGIN` faster than the reference."""
    ref = plans[0]
    fastest = max(plans, key=lambda pl: speeds.get(pl.label, 0.0))
    if speeds.get(fastest.label, 0.0) >= MARGIN * speeds.get(ref.label, 0.0):
        return fastest
    return ref


def choose_runtime(name: str, signature: Dict[str, object], *, backend: str, precision: str,
                   device: "torch.device", build: Callable[[Plan], Callable[[], None]],
                   items: int, threads: int = 1, use_cache: bool = True) -> RuntimeChoice:
    """The plan ``name`` (a model, described by ``signature``: class, config, batch) runs
    with. ``build(plan)`` returns a function that runs one batch of ``items`` crops; it is
    timed with ``threads`` intra-op threads (what one model thread of the pipeline has)."""
    plans = candidate_plans(backend, precision, device)
    if len(plans) == 1:
        return RuntimeChoice(plans[0], "forced")
    record = {"machine": machine_signature(device), "model": signature, "threads": threads,
              "plans": [pl.label for pl in plans]}
    key = hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    path = _cache_path()
    entries = _read_cache(path) if use_cache else {}
    cached = _cached_plan(entries.get(key), plans)
    if cached is not None:
        return RuntimeChoice(cached, "cached", dict(entries[key].get("speeds") or {}),
                             cache_key=key)
    import torch
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        speeds = measure(plans, build, items)
    finally:
        torch.set_num_threads(before)
    choice = RuntimeChoice(pick(plans, speeds), "measured", speeds, time.perf_counter() - t0,
                           cache_key=key if use_cache else None)
    log.info("%s runtime: %s", name, choice.describe())
    if use_cache:
        entries = _read_cache(path)  # another process may have added entries meanwhile
        entries[key] = {**asdict(choice.plan), "speeds": speeds, "name": name,
                        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
        try:
            write_entries(path, CACHE_VERSION, entries)
        except OSError as exc:
            log.warning("could not write the precision cache %s (%s)", path, exc)
    return choice


__all__ = ["Plan", "RuntimeChoice", "candidate_plans", "choose_runtime", "measure", "pick",
           "machine_signature", "cached_choice", "cpu_model", "MARGIN"]
