"""The enrollment trainer's resumable state on disk: optimiser moments as safetensors plus a
JSON record (``trainer_state.safetensors`` / ``trainer_state.json`` beside the weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
STATE_FORMAT = "ladtalk-enroll-state/1"


def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer,
                      tensors: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(float(v))
            tensors[f"{prefix}.state.{pid}.{k}"] = t.detach().to("cpu").contiguous()
    return {"param_groups": sd["param_groups"]}


def unflatten_optimizer(prefix: str, opt: torch.optim.Optimizer, info: Dict[str, Any],
                        tensors: Dict[str, torch.Tensor]) -> None:
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    head = prefix + ".state."
    for key, t in tensors.items():
        if key.startswith(head):
            pid, name = key[len(head):].split(".", 1)
            state.setdefault(int(pid), {})[name] = t
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def read_state_info(directory: Path) -> Optional[Dict[str, Any]]:
    """The parsed ``trainer_state.json`` in ``directory``; None when missing or unreadable."""
    try:
        return json.loads((directory / STATE_JSON).read_text())
    except (OSError, ValueError):
        return None


__all__ = ["STATE_FORMAT", "STATE_JSON", "STATE_TENSORS", "flatten_optimizer",
           "read_state_info", "unflatten_optimizer"]
