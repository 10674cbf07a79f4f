"""Errors the command line reports as one clear line instead of a traceback."""


class UserError(Exception):
    """Bad input or configuration from the user: the message says what was received and what
    was expected. `medgan-tf` prints it as `error: <message>` and exits with status 2."""


class TrainingDiverged(UserError):
    """A loss became NaN or inf; the last good checkpoint is left intact."""
