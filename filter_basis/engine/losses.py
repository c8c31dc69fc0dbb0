"""Loss strings: ``--loss 1*L1+0.5*MSE`` is the weighted sum of terms looked up in a tree's LOSS_TYPES."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from ..errors import OptionError
from ..registry import Registry


def parse_loss_string(text: str) -> list:
    """``"1*L1+0.5*MSE"`` -> ``[(1.0, "L1"), (0.5, "MSE")]``; the syntax only (types are checked per tree)."""
    terms = []
    for part in text.split("+"):
        weight, star, name = part.partition("*")
        try:
            value = float(weight)
        except ValueError:
            value = None
        if not star or not name or value is None:
            raise OptionError(f"--loss {text!r}: term {part!r} is not WEIGHT*TYPE (e.g. 1*L1+0.5*MSE)")
        terms.append((value, name))
    return terms


def check_loss_string(text: str, loss_types: Registry) -> list:
    """Parse ``text`` and check every type against ``loss_types``."""
    terms = parse_loss_string(text)
    for _, name in terms:
        if name not in loss_types:
            raise OptionError(f"--loss {text!r}: unknown loss type {name!r}; known: {', '.join(loss_types)}")
    return terms


class WeightedLoss(nn.Module):
    """The weighted sum of the loss terms; ``last`` holds each weighted term of the latest call (detached)."""

    def __init__(self, terms: list, modules: list):
        super().__init__()
        self.terms = terms
        self.parts = nn.ModuleList(modules)
        self.last: dict = {}

    def add_term(self, weight: float, name: str, module: nn.Module) -> None:
        """One more weighted term (e.g. a regulariser of the model: ``--loss_norm``), logged as ``name``."""
        self.terms.append((weight, name))
        self.parts.append(module)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0
        self.last = {}
        for (weight, name), part in zip(self.terms, self.parts):
            value = weight * part(output, target)
            self.last[name] = value.detach()
            total = total + value
        return total


def build_loss(text: str, loss_types: Registry, args: argparse.Namespace) -> WeightedLoss:
    terms = check_loss_string(text, loss_types)
    return WeightedLoss(terms, [loss_types.get(name)(args) for _, name in terms])
