"""Errors that reach the user as one line on standard error and exit status 2 (DESIGN.md contract 4)."""


class UserError(Exception):
    """Bad input from the user: an option value, a dataset folder, a checkpoint.

    The message is one line that names the bad value and what would be accepted.
    """

    exit_code = 2


class OptionError(UserError):
    """A command-line option has a value that is not accepted."""


class DataError(UserError):
    """A dataset is missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint cannot be read, is unsafe, or does not fit the model."""
