"""``--template NAME``: named option presets, matched by substring as in the official template.py files."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Collection

from ..errors import OptionError
from ..registry import Registry
from ..suggest import did_you_mean
from .options import is_given

Rule = Callable[[argparse.Namespace, str], None]


class TemplateTable:
    """Rules keyed by a substring of ``--template``; every rule whose key occurs in it applies, in order.

    ``"ResNet50"`` therefore applies the ``ResNet`` rule and then the ``ResNet50`` rule, and
    ``"DenseNet_BC"`` the ``DenseNet`` rule, which looks for ``BC`` itself (the rule gets the template).
    """

    def __init__(self):
        self._rules: Registry[Rule] = Registry("template", "--template")

    def rule(self, key: str) -> Callable[[Rule], Rule]:
        return self._rules.register(key)

    def names(self) -> list:
        """The template keys, in the order they apply."""
        return self._rules.names()

    def apply(self, args: argparse.Namespace, given: Collection[str] = ()) -> None:
        """Apply the matching rules.  As officially, a template's value wins over the command line's; each
        option of ``given`` (those set on the command line) that a rule changes gets a note on stderr."""
        template = args.template
        if not is_given(template):
            return
        matched = [rule for key, rule in self._rules.items() if key in template]
        if not matched:
            raise OptionError(f"unknown --template {template!r}; known (matched as substrings): "
                              f"{', '.join(self._rules)}" + did_you_mean(template, self._rules))
        before = dict(vars(args))
        for rule in matched:
            rule(args, template)
        for name, value in before.items():
            if name in given and getattr(args, name) != value:
                print(f"note: --template {template} sets --{name} {getattr(args, name)}, overriding the "
                      f"command line's {value}", file=sys.stderr)
