"""Publish an identity to a user's own Hugging Face Hub repository.

The write token is passed straight to :class:`huggingface_hub.HfApi` for this one upload; it is
never stored, logged or put in an error message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Union

from ladtalk.errors import InputError, LadTalkError
from ladtalk.identities.meta import META_JSON
from ladtalk.identities.store import resolve_identity
from ladtalk.models.sovqae import CONFIG_NAME, WEIGHTS_NAME

#: the files of an identity that go to the Hub (no trainer state)
PUBLISHED_FILES = (CONFIG_NAME, WEIGHTS_NAME, META_JSON)
COMMIT_MESSAGE = "LaDTalk identity (SOVQAE) from the LaDTalk app"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_args(repo_id: str, token: str) -> str:
    repo_id = (repo_id or "").strip()
    if not _REPO_RE.match(repo_id) or ".." in repo_id or len(repo_id) > 96:
        raise InputError(f"invalid Hub repository {repo_id!r}: use 'your-user/your-repo' "
                         "(letters, digits, '_', '-', '.')")
    if not (token or "").strip():
        raise InputError("to publish to the Hub, give a write token for your account "
                         "(it is used once and never stored)")
    return repo_id


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def publish_identity(identity: Union[str, Path], repo_id: str, token: str,
                     private: bool = True) -> str:
    """Upload an identity (name or directory) to the model repo ``repo_id``; returns its URL.

    The repository is created when missing (``private`` applies only then).
    """
    repo_id = _check_args(repo_id, token)
    path = resolve_identity(identity)
    token = token.strip()
    from huggingface_hub import HfApi
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=bool(private), exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(path), repo_type="model",
                          allow_patterns=list(PUBLISHED_FILES), commit_message=COMMIT_MESSAGE)
    except Exception as exc:  # noqa: BLE001 - any Hub failure becomes one clear error
        detail = _scrub(f"{type(exc).__name__}: {exc}", token)
        raise LadTalkError(f"publishing identity '{path.name}' to the Hub repo {repo_id} "
                         f"failed ({detail}); check the repository name and that the token "
                         "has write access") from None
    return str(url)


__all__ = ["publish_identity", "PUBLISHED_FILES"]
