"""Public mode and who is calling: a Gradio request (and login) -> an identities ``Access``.

Public mode is on when the app runs on a Hugging Face Space (``SPACE_ID`` is set), with
``--public``, or with ``LADTALK_PUBLIC=1``; a local ``python app.py`` is a single-user
workstation where everything is shared. In public mode the caller is the logged-in Hugging
Face user when OAuth login is enabled (``hf_oauth: true`` on a Space sets
``OAUTH_CLIENT_ID``) and they are logged in, else their Gradio session; an MCP client is
told apart by its MCP session (``mcp-session-id``).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from ladtalk.identities.owners import Access, Owner

TRUE = ("1", "true", "yes", "on")
#: the header Gradio's MCP bridge sets on the requests it makes for MCP clients
MCP_USER_HEADER = "x-gradio-user"


def public_mode(flag: Optional[bool] = None) -> bool:
    """``flag`` when given, else ``LADTALK_PUBLIC`` when set, else whether on a Space."""
    if flag is not None:
        return bool(flag)
    env = os.environ.get("LADTALK_PUBLIC", "").strip().lower()
    if env:
        return env in TRUE
    return bool(os.environ.get("SPACE_ID"))


def oauth_enabled() -> bool:
    """Whether Hugging Face login is configured (a Space with ``hf_oauth: true``)."""
    return bool(os.environ.get("OAUTH_CLIENT_ID"))


#: the session of MCP calls that carry no MCP session id (every such client shares one)
ANONYMOUS_MCP = "mcp-anonymous"


def session_key(request: Any) -> str:
    """The caller's session id ("local" outside a request, e.g. a direct call in a test).

    Gradio's MCP bridge makes every call through one client, so MCP callers are told apart by
    the ``mcp-session-id`` of their MCP connection; calls without one share
    :data:`ANONYMOUS_MCP`."""
    headers = getattr(request, "headers", None) or {}
    if headers.get(MCP_USER_HEADER) == "mcp":
        sid = headers.get("mcp-session-id")
        return f"mcp-{sid}" if sid else ANONYMOUS_MCP
    return str(getattr(request, "session_hash", None) or "local")


def caller_owner(request: Any, profile: Any = None) -> Optional[Owner]:
    """The logged-in user when there is one, else the session (None: an MCP caller without
    a session, who may use but not own identities)."""
    username = getattr(profile, "username", None) if profile is not None else None
    if username:
        return Owner.user(str(username))
    key = session_key(request)
    return None if key == ANONYMOUS_MCP else Owner.session(key)


def caller_access(public: bool, request: Any, profile: Any = None) -> Access:
    """What this caller may do (everything on a workstation)."""
    if not public:
        return Access(public=False)
    return Access(public=True, owner=caller_owner(request, profile))


#: the view of a visitor who has not enrolled anything (build-time pickers, schema defaults)
def visitor_access(public: bool) -> Access:
    return Access(public=public, owner=None)
