"""Finding a task tree by the name a run's record holds, without the library importing any tree.

The library never imports an application statically (``docs/design.md``); where it must rebuild the
model of a saved run it looks the tree up here, by the ``name`` of its :class:`~filter_basis.engine.Tree`.
"""

from __future__ import annotations

import importlib

from ..errors import OptionError

KNOWN_TREES = ("image_classification", "super_resolution")


def find_tree(name: str):
    """The :class:`~filter_basis.engine.Tree` called ``name`` (its package's ``tree.TREE``)."""
    if name not in KNOWN_TREES:
        raise OptionError(f"unknown tree {name!r}; known: {', '.join(KNOWN_TREES)}")
    return importlib.import_module(f"{name}.tree").TREE
