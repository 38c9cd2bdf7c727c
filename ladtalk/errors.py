"""Exception types shared by the whole package.

Every error a user can cause derives from :class:`LadTalkError`, so the CLI and the app can
show its message as-is (it always says which input is wrong and what to do) instead of a
traceback.
"""


class LadTalkError(Exception):
    """Base class for errors with a user-facing, actionable message."""


class InputError(LadTalkError, ValueError):
    """A user-supplied file or argument is unusable (names the file / frame and the fix)."""


class CheckpointError(LadTalkError, RuntimeError):
    """A checkpoint is missing, unsafe, corrupt, or does not fit the model."""
