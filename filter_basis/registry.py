"""Explicit name -> builder tables for ``--model``, ``--data_train``, ``--template`` and friends."""

from __future__ import annotations

from typing import Dict, Generic, Iterator, TypeVar

from .errors import UserError
from .suggest import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table; looking up an unknown name raises :class:`UserError` listing the known ones."""

    def __init__(self, kind: str, option: str = ""):
        self.kind = kind
        self.option = option
        self._items: Dict[str, T] = {}

    def register(self, name: str, obj: T = None):
        """``reg.register("ResNet", builder)`` or, as a decorator, ``@reg.register("ResNet")``."""
        if obj is None:
            def deco(o: T) -> T:
                self.register(name, o)
                return o
            return deco
        if name in self._items:
            raise KeyError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            where = f"{self.option} " if self.option else ""
            raise UserError(f"unknown {self.kind} {where}{name!r}; known: {', '.join(sorted(self._items))}"
                            + did_you_mean(str(name), self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list:
        return list(self._items)

    def items(self):
        return self._items.items()


# Compressed models are named <baseline>_<method> in both trees (ResNet_Basis, EDSR_Factor, VGG_Group).
COMPRESSION_SUFFIXES = ("_Basis", "_Factor", "_Group")


def uncompressed_name(models: Registry, name: str) -> str:
    """The registered uncompressed model ``name`` is compared with (ResNet_Basis -> ResNet); a baseline
    maps to itself.  Unknown names fail with the list of known ones."""
    models.get(name)
    baseline = next((name[: -len(s)] for s in COMPRESSION_SUFFIXES if name.endswith(s)), name)
    models.get(baseline)  # a compressed model always has its baseline registered beside it
    return baseline
