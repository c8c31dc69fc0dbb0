"""Reading a CIFAR batch file without running anything it carries.

The CIFAR folders are pickles, and ``pickle.load`` calls whatever function a pickle names: a ``test_batch``
with a ``__reduce__`` payload would run a shell command.  A CIFAR batch only holds a dict of lists,
strings, bytes, numbers and numpy arrays, so the unpickler here admits exactly the globals those need
(numpy's array and scalar rebuilders under their numpy 1 ``numpy.core`` and numpy 2 ``numpy._core``
names, ``numpy.dtype``, ``numpy.ndarray``, and ``_codecs.encode``, which Python 3 writes for bytes at
protocol 2) and refuses every other one before it is looked up: the promise of ``weights_only``
checkpoints, for data.
"""

from __future__ import annotations

import pickle
from typing import BinaryIO

import numpy as np


def _numpy_rebuilders() -> dict:
    """The functions numpy's own pickles call, taken from numpy itself (so no deprecated module is
    imported), keyed by their name under both numpy 1 and numpy 2 module paths."""
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.uint8(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 arrays
    allowed = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


def _codecs_encode():
    import _codecs

    return _codecs.encode


ALLOWED = {**_numpy_rebuilders(), ("_codecs", "encode"): _codecs_encode()}
"""(module, name) -> the object a CIFAR pickle may name; nothing else is ever imported."""


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED`; ``name`` is ``module.name``."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def load_cifar_pickle(file: BinaryIO):
    """``pickle.load(file, encoding="latin1")`` (the Python 2 batches need latin1) restricted to
    :data:`ALLOWED`; any other global raises :class:`RefusedGlobal` and nothing is called."""
    return _CifarUnpickler(file, encoding="latin1").load()
