"""Errors that reach the user as one line on standard error and exit status 2 (docs/design.md#errors)."""

import sys
from typing import Callable


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


class RunStopped(Exception):
    """Work that started but could not finish (a diverging loss, a failed run): one line, exit status 1."""

    exit_code = 1


def report_errors(action: Callable[[], object]) -> int:
    """Call ``action()``; a :class:`UserError` or :class:`RunStopped` becomes one line on standard error
    and its exit status (no traceback), anything else propagates. 0 when it returns."""
    try:
        action()
    except (UserError, RunStopped) as error:
        print(f"{getattr(error, 'label', 'error')}: {error}", file=sys.stderr)
        return error.exit_code
    return 0
