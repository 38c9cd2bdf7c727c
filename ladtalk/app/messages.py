"""Every failure reaches the user as a ``gr.Error`` with a specific message in the app's terms.

The package's messages are written for the command line: they quote file paths and flags
(``--box Y1 Y2 X1 X2``, ``python -m ladtalk enroll ...``). :func:`user_message` rewrites them
for the app, in one place: every absolute path becomes its quoted file name (Gradio keeps an
upload as ``<temp>/gradio/<hash>/<the user's file name>``, so the base name is the name the
user knows), every flag becomes the label of the control that sets it, and secrets (a Hub
token) are masked. The CLI keeps the original messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
import traceback
from typing import Callable, Iterator, List, Match, Sequence, Tuple, Union

import gradio as gr

from ladtalk.errors import LadTalkError

log = logging.getLogger("ladtalk.app")

_SEP = r"[\\/]"
_START = r"(?:[A-Za-z]:[\\/]|[\\/]{1,2}|~[\\/])"  # /x, //host, C:\x, C:/x, \\host, ~/x
#: an absolute path inside quotes (it may hold spaces): the quotes are kept
_QUOTED_PATH = re.compile(r"""(['"`])(""" + _START + r"""[^'"`\n]*)\1""")
#: an absolute path without quotes: directories without spaces, then an optional last part
_BARE_PATH = re.compile(r"""(?<![\w.:/\\~-])(?P<dirs>""" + _START + r"""(?:[^\s\\/'"`]+"""
                        + _SEP + r""")+)(?P<name>[^\s\\/'"`,;:()\[\]]*[^\s\\/'"`,;:()\[\].])?""")
_FILE_NAME = re.compile(r"\S+\.[A-Za-z0-9]{1,8}")

DETECTOR = "Face detector"
BOX = "'Fixed face box Y1 Y2 X1 X2' field (Advanced options)"
LOOP = "'When the audio is longer than the video'"
_NUM = r"[-+0-9.eEinfa]+"
_TAB = {"enroll": "the Enroll tab", "generate": "the Generate tab",
        "robustness": "the Robustness tab"}

Rule = Tuple["re.Pattern[str]", Union[str, Callable[[Match], str]]]


def _cmd(m: Match) -> str:
    return _TAB.get(m[1], "the command-line tool")


#: CLI wording -> the app's, in order (specific phrases first, any other flag last)
_RULES: List[Rule] = [(re.compile(p), r) for p, r in [
    (r"\s*The CLI can still [^.]*\.", ""),
    (r"`?python -m ladtalk (\w+)[^`\n]*`, the Enroll tab", "the Enroll tab"),
    (r"(?:with|using|via) `?python -m ladtalk enroll\b[^`\n]*`?", "in the Enroll tab"),
    (r"`python -m ladtalk (\w+)[^`\n]*`", _cmd),
    (r"python -m ladtalk (\w+)(?: --?[\w-]+(?: [A-Z][A-Z_]*)?)*", _cmd),
    (r" or pass a directory", ""),
    (r"`?--no-enhance`?\s*/\s*", ""),
    (r"`?--no-enhance`?", "the identity 'none (Wav2Lip only)'"),
    (r"pass --[\w-]+ PATH or set (\w+)=PATH", r"set \1=PATH where the app is started"),
    (r"'?`?--detector (\w+)`?'?", rf"'\1' as the {DETECTOR}"),
    (r"'?`?--box Y1 Y2 X1 X2`?'?", "the " + BOX),
    (rf"--box ((?:{_NUM} ){{3}}{_NUM})", r"the fixed face box '\1'"),
    (r"--box", "the " + BOX),
    (r"--resize-factor (\d+)", r"resize factor \1"),
    (r"--resize-factor", "the resize factor (Advanced options)"),
    (r"--pads", "the pads (pad top / bottom / left / right)"),
    (r"--loop (\w+)", rf"'\1' for {LOOP}"),
    (r"--loop", LOOP),
    (r"--restore-strength", "the 'Restore strength'"),
    (r"drop --config", "set 'Model config' to auto"),
    (r"pass --fresh", "tick 'Start over'"),
    (r"--fresh", "'Start over'"),
    (r"another --name", "another identity name"),
    (r"--seconds(?: N)?", "the training time budget"),
    (r"--name", "the identity name"),
    (r"--config", "the 'Model config'"),
    (r"--detector", "the " + DETECTOR),
    (r"--face", "the face video or photo"),
    (r"--audio", "the speech audio"),
    (r"--video", "the video"),
    (r"`?--([a-z][a-z0-9-]*)`?", lambda m: f"the {m[1].replace('-', ' ')} setting"),
]]


def _basename(path: str) -> str:
    return re.split(r"[\\/]+", path.rstrip("\\/"))[-1] or path


def _bare(m: Match) -> str:
    name = m["name"] or _basename(m["dirs"])
    return f"'{name}'" if _FILE_NAME.fullmatch(name) else name


def scrub_paths(text: str) -> str:
    """Every absolute path in ``text`` (POSIX, Windows, ``~``) -> its quoted file name."""
    text = _QUOTED_PATH.sub(lambda m: f"{m[1]}{_basename(m[2])}{m[1]}", text)
    return _BARE_PATH.sub(_bare, text)


def app_terms(text: str) -> str:
    """The CLI's flags and commands in ``text`` -> the app's control labels and tabs."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def ui_text(text: str) -> str:
    """A library message in the app's terms: file names for paths, controls for flags."""
    return app_terms(scrub_paths(text))


def _mask(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def user_message(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """Message for the UI: LadTalkError text (it already names input and fix), other errors
    with their type and a pointer to the logs; in the app's terms (:func:`ui_text`).
    ``secrets`` (e.g. a Hub token) are masked wherever they appear."""
    if isinstance(exc, LadTalkError):
        msg = str(exc)
    elif isinstance(exc, MemoryError):
        msg = ("out of memory: use a shorter or smaller video (or a lower resolution via the "
               "resize factor)")
    else:
        msg = (f"internal error ({type(exc).__name__}: {exc}). This is a bug; please report "
               "it with the inputs that caused it")
    return ui_text(_mask(msg, secrets))


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
        log.info("user error: %s", _mask(str(exc), secrets))
        raise gr.Error(user_message(exc, secrets), print_exception=False) from None
    except Exception as exc:  # noqa: BLE001 - the UI must get a message, not a crash
        log.error("%s", format_exception_for_log(exc, secrets))
        raise gr.Error(user_message(exc, secrets), print_exception=False) from None
