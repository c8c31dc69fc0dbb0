"""Atomic checkpoint files, safe loading, and the random-number states needed to resume exactly.

A file is written next to its destination, flushed to disk and renamed over it, so a process killed
at any moment leaves either the previous file or the new one, never half of one.  Every load goes
through ``torch.load(weights_only=True)``: a file carrying pickled code is refused before anything in
it runs.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import CheckpointError


def write_atomic(path, write: Callable) -> None:
    """Call ``write(file)`` on a temporary file in the destination folder, fsync it, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(obj, path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; unreadable or unsafe content is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        reason = f" ({found[0].rstrip('.')})" if found else ""
        raise CheckpointError(f"checkpoint {str(path)!r} is refused: it holds code or objects other than "
                              f"tensors and plain values{reason}; nothing in it was run") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        lines = str(error).strip().splitlines() or ["truncated or corrupt file"]
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {lines[0]}") from None


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and plain values (weights_only safe)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
