"""The experiment engine both task trees share: options, devices, DDP, experiment folders, the loop.

A tree describes itself with a :class:`Tree` (its option parser, model, data, loss types and
:class:`Trainer` subclass) and hands it to :func:`cli_main`; ``image_classification/tree.py`` is the
worked example.
"""

from .runner import Tree, cli_main, run
from .trainer import Trainer, TrainingStopped
from .trees import KNOWN_TREES, find_tree

__all__ = ["KNOWN_TREES", "Tree", "Trainer", "TrainingStopped", "cli_main", "find_tree", "run"]
