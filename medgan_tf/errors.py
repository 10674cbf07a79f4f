"""Errors the command line reports as one clear line instead of a traceback."""

from __future__ import annotations

import errno

NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
NO_ROOM_TEXTS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


class UserError(Exception):
    """Bad input or configuration from the user: the message says what was received and what
    was expected. `medgan-tf` prints it as `error: <message>` and exits with status 2."""


class TrainingDiverged(UserError):
    """A loss became NaN or inf; the last good checkpoint is left intact."""


def no_room_error(error: BaseException, what: str | None = None) -> UserError | None:
    """The one-line UserError for a write that failed for want of room (a full disk, a quota, a
    read-only file system: an OSError or TensorFlow's ResourceExhaustedError and its kin), naming
    `what` (default: the file the error names); None for any other error. Every output is written
    under a temporary name first, so the message can promise that earlier outputs are intact."""
    if isinstance(error, OSError) and error.errno in NO_ROOM_ERRNOS:
        reason = error.strerror or NO_ROOM_TEXTS[NO_ROOM_ERRNOS.index(error.errno)]
    else:
        text = getattr(error, "message", None) or str(error)
        reason = next((known for known in NO_ROOM_TEXTS if known in text), None)
        if reason is None:
            return None
    where = what or getattr(error, "filename", None) or "the output"
    return UserError(f"could not write {where}: {reason}. Nothing was left half-written and earlier outputs are "
                     "intact; free space there (or choose another output folder) and run the command again")
