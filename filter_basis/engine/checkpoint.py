"""Atomic checkpoint files, safe loading, and the random-number states needed to resume exactly.

A file is written next to its destination, flushed to disk and renamed over it, so a process killed
at any moment leaves either the previous file or the new one, never half of one.  Every load goes
through ``torch.load(weights_only=True)``: a file carrying pickled code is refused before anything in
it runs.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import struct
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError


def current_umask() -> int:
    """The process umask (read back at once: ``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent, prefix: str) -> Path:
    """``tempfile.mkdtemp`` with the permissions of an ordinary folder (0777 & ~umask, not 0700), for
    staging folders that are renamed into place and must then be as readable as ``mkdir``'s."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, 0o777 & ~current_umask())
    return folder


def write_atomic(path, write: Callable) -> None:
    """Call ``write(file)`` on a temporary file in the destination folder, fsync it, then rename it.

    The file gets the permissions of an ordinary new file (0666 & ~umask), not mkstemp's 0600, so a
    shared experiment or dataset folder stays readable by the group as the umask allows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


def _reason(error: Exception) -> str:
    """The line of torch's long weights-only message that says what was found (else its first line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    after = [i + 1 for i, line in enumerate(lines) if "WeightsUnpickler error" in line and i + 1 < len(lines)]
    return lines[after[0]] if after else lines[0] if lines else type(error).__name__


# What torch.load raises for a file that is not a whole checkpoint: a damaged zip archive (RuntimeError
# from the stream reader, zipfile/struct errors), an empty file (EOFError), a legacy file with a bad
# magic number (KeyError, ValueError) or an unreadable file (OSError).  Anything else propagates.
DAMAGED_FILE_ERRORS = (RuntimeError, EOFError, KeyError, IndexError, ValueError, struct.error,
                       zipfile.BadZipFile, OSError)


def load_checkpoint(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; unreadable or unsafe content is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if not found:  # not a pickle the safe reader knows (random bytes, text): damaged, not dangerous
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: not a PyTorch checkpoint "
                                  f"({_reason(error)})") from None
        raise CheckpointError(f"checkpoint {str(path)!r} is refused: it holds code or objects other than "
                              f"tensors and plain values ({found[0].rstrip('.')}); nothing in it was run") \
            from None
    except (torch.OutOfMemoryError, MemoryError):
        raise  # the file may be fine: out of memory is reported as what it is
    except DAMAGED_FILE_ERRORS as error:
        if isinstance(error, OSError) and error.errno not in (None, errno.EINVAL):  # e.g. EACCES: as it is
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {error}") from None
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {_damage(path, error)}") from None


def _damage(path: Path, error: Exception) -> str:
    """"truncated or damaged (N bytes)", with the reader's own reason when it says more than an errno.

    A file cut short inside its last record makes the zip reader fail with a bare ``[Errno 22] Invalid
    argument``; one cut earlier loses its central directory."""
    try:
        size = f"{path.stat().st_size:,} bytes"
    except OSError:
        size = "size unknown"
    first = (str(error).strip().splitlines() or [""])[0]
    reason = first.split(". This is an internal miniz error")[0].replace(
        "PytorchStreamReader failed reading zip archive: ", "")
    if isinstance(error, (OSError, EOFError)) or not reason:
        return f"truncated or damaged ({size})"
    return f"truncated or damaged ({size}: {reason.rstrip('.')})"


def read_state_dict(path) -> dict:
    """A plain ``{key: tensor}`` checkpoint (``--pretrained`` / ``--pre_train``), read safely."""
    state = load_checkpoint(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a state_dict (a mapping of names to tensors)")
    return dict(state)


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                           translate: Optional[Callable[[str], Optional[str]]] = None) -> None:
    """Load ``state`` into ``model`` strictly, with a one-line :class:`CheckpointError` on any misfit.

    ``translate`` maps a key of the file to the model's key (e.g. an official layout onto ours; ``None``
    for a key it does not know).  Every key must map, every model entry must be filled, shapes must
    agree, and entries the model shares (a shared basis, one PReLU) must hold equal values in the file:
    the official loaders were non-strict (docs/official-code.md#defects, D11), so a wrong option silently
    left weights untrained.
    """
    ours = model.state_dict(keep_vars=True)
    mapped = {}
    for key, value in state.items():
        target = translate(key) if translate is not None else key
        if target not in ours:
            raise CheckpointError(f"{source} has unexpected key {key!r} (the options do not build the model "
                                  "it was saved from: check --model and the model options)")
        if tuple(value.shape) != tuple(ours[target].shape):
            named = repr(target) if target == key else f"{target!r} (file key {key!r})"
            raise CheckpointError(f"{source}: {named} has shape {tuple(value.shape)}, the model needs "
                                  f"{tuple(ours[target].shape)} (check the model options)")
        mapped[target] = value
    missing = [key for key in ours if key not in mapped]
    if missing:
        raise CheckpointError(f"{source} lacks {missing[0]!r} ({len(missing)} missing in all; check --model "
                              "and the model options)")
    aliases = defaultdict(list)
    for key, tensor in ours.items():
        aliases[id(tensor)].append(key)
    for keys in aliases.values():
        for other in keys[1:]:
            if not torch.equal(mapped[keys[0]], mapped[other]):
                raise CheckpointError(f"{source}: {keys[0]!r} and {other!r} differ, but the model shares one "
                                      "tensor there (check the sharing options, e.g. --share_basis)")
    model.load_state_dict(mapped, strict=True)


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
