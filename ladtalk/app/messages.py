"""Every failure reaches the user as a ``gr.Error`` with a specific message (secrets masked)."""

from __future__ import annotations

import contextlib
import logging
import traceback
from typing import Iterator, Sequence

import gradio as gr

from ladtalk.errors import LadTalkError

log = logging.getLogger("ladtalk.app")


def _mask(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def user_message(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """Message for the UI: LadTalkError text as-is (it already names input and fix), other
    errors with their type and a pointer to the logs. ``secrets`` (e.g. a Hub token) are
    masked wherever they appear."""
    if isinstance(exc, LadTalkError):
        msg = str(exc)
    elif isinstance(exc, MemoryError):
        msg = ("out of memory: use a shorter or smaller video (or a lower resolution via the "
               "resize factor)")
    else:
        msg = (f"internal error ({type(exc).__name__}: {exc}). This is a bug; please report "
               "it with the inputs that caused it")
    return _mask(msg, secrets)


def format_exception_for_log(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return _mask(text, secrets)


@contextlib.contextmanager
def user_errors(*secrets: str) -> Iterator[None]:
    """Turn every failure into a ``gr.Error`` with a specific, actionable message."""
    try:
        yield
    except gr.Error:
        raise
    except LadTalkError as exc:
        log.info("user error: %s", user_message(exc, secrets))
        raise gr.Error(user_message(exc, secrets), print_exception=False) from None
    except Exception as exc:  # noqa: BLE001 - the UI must get a message, not a crash
        log.error("%s", format_exception_for_log(exc, secrets))
        raise gr.Error(user_message(exc, secrets), print_exception=False) from None
