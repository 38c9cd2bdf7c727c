"""Pretrained checkpoints: the registry of defaults, resolution (flag, env var, Hub cache),
safe loading and conversion to ``.safetensors``. See docs/models.md."""

from ladtalk.checkpoints.convert import (
    ConversionReport,
    convert_to_safetensors,
    count_parameters,
    extract_state_dict,
    read_pickle,
    read_safetensors,
    read_state_dict,
    save_safetensors,
    strip_key_prefix,
)
from ladtalk.checkpoints.digest import file_sha256, verify_sha256
from ladtalk.checkpoints.load import converted_cache_path, load_into, load_state_dict
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
