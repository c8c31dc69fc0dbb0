""""Did you mean ...?" for a misspelt name (option, model, data set, template), with :mod:`difflib`.

Python 3.11's argparse suggests nothing (``suggest_on_error`` came in 3.14), so the option parser and the
registries use this one helper.
"""

from __future__ import annotations

import difflib
from typing import Iterable


def close_matches(word: str, candidates: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list:
    """The candidates closest to ``word``, best first; letter case is ignored (``resnet`` -> ``ResNet``)."""
    by_folded: dict = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), candidate)
    return [by_folded[m] for m in difflib.get_close_matches(word.casefold(), list(by_folded), n, cutoff)]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'ResNet_Basis'?"`` (the closest candidate), ``""`` when nothing is close."""
    matches = close_matches(word, candidates)
    return f"; did you mean {matches[0]!r}?" if matches else ""
