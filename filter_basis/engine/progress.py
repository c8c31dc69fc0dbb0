"""Progress bars on a terminal; nothing per batch when output goes to a file or CI log."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def interactive() -> bool:
    """True when stderr (where tqdm draws) is a terminal."""
    return sys.stderr.isatty()


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0


def progress_bar(iterable, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar with rate and ETA; ``set_postfix`` shows the running loss. Disabled: a plain iterator.

    A terminal that reports no width (some pseudo-terminals, e.g. of job runners) would make tqdm draw
    nothing; it gets a fixed 100 x 40 instead.
    """
    resizable = _terminal_width() > 0
    return tqdm(iterable, desc=desc, disable=not enabled, leave=False, dynamic_ncols=resizable,
                ncols=None if resizable else 100, nrows=None if resizable else 40, unit="batch",
                mininterval=0.5)


def echo(line: str) -> None:
    """Print a line to stdout without breaking a bar that is being drawn."""
    tqdm.write(line, file=sys.stdout)
