"""Construction-time checks shared by the layers: bad numbers fail at once, naming the layer."""

from __future__ import annotations


def check_positive_ints(label: str, **values) -> None:
    """Raise ``ValueError`` naming ``label`` unless every value is an integer >= 1 (bools refused)."""
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label}: {key} must be an integer >= 1, got {value!r}")
