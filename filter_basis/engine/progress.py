"""Progress bars on a terminal; nothing per batch when output goes to a file or CI log."""

from __future__ import annotations

import sys

from tqdm import tqdm


def interactive() -> bool:
    """True when stderr (where tqdm draws) is a terminal."""
    return sys.stderr.isatty()


def progress_bar(iterable, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar with rate and ETA; ``set_postfix`` shows the running loss. Disabled: a plain iterator."""
    return tqdm(iterable, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True, unit="batch",
                mininterval=0.5)


def echo(line: str) -> None:
    """Print a line to stdout without breaking a bar that is being drawn."""
    tqdm.write(line, file=sys.stdout)
