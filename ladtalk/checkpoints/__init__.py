"""Pretrained checkpoints: the registry of defaults, resolution (flag, env var, Hub cache),
safe loading and conversion to ``.safetensors``. See docs/models.md.

Resolving a checkpoint needs no torch; loading and converting one do, so those names import
their modules (and torch) on first use: a run through a prepared OpenVINO model, which never
loads the weights into torch, does not import it (docs/performance.md)."""

from importlib import import_module
from typing import Any

from ladtalk.checkpoints.digest import file_sha256, verify_sha256
from ladtalk.checkpoints.reference import parse_checkpoint, parse_hub_reference
from ladtalk.checkpoints.registry import (
    CHECKPOINT_SUFFIXES,
    DEFAULTS,
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    CheckpointSpec,
    DefaultCheckpoint,
    add_checkpoint_argument,
)
from ladtalk.checkpoints.resolve import (
    PROXY_VARS,
    REACHABILITY_TTL_S,
    hub_cache_dir,
    hub_endpoint,
    hub_offline,
    hub_reachable,
    reset_reachability,
    resolve_checkpoint,
)

_LAZY = {name: "ladtalk.checkpoints.convert" for name in (
    "ConversionReport", "convert_to_safetensors", "count_parameters", "extract_state_dict",
    "read_pickle", "read_safetensors", "read_state_dict", "save_safetensors",
    "strip_key_prefix")}
_LAZY.update({name: "ladtalk.checkpoints.load" for name in (
    "converted_cache_path", "load_into", "load_state_dict")})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHECKPOINT_SUFFIXES", "DEFAULTS", "PICKLE_SUFFIXES", "PROXY_VARS", "REACHABILITY_TTL_S",
    "SAFETENSORS_SUFFIXES", "CheckpointSpec", "ConversionReport", "DefaultCheckpoint",
    "add_checkpoint_argument", "convert_to_safetensors", "converted_cache_path",
    "count_parameters", "extract_state_dict", "file_sha256", "hub_cache_dir", "hub_endpoint",
    "hub_offline", "hub_reachable", "load_into", "load_state_dict", "parse_checkpoint",
    "parse_hub_reference", "read_pickle", "read_safetensors", "read_state_dict",
    "reset_reachability", "resolve_checkpoint", "save_safetensors", "strip_key_prefix",
    "verify_sha256",
]
