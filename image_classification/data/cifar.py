"""CIFAR-10 and CIFAR-100 read from the python-pickle folders that torchvision downloads.

The folders are read here rather than through ``torchvision.datasets.CIFAR10`` so that a missing or
incomplete folder gives a one-line :class:`DataError` naming the file, and a folder with other contents
(for instance a small subset made for tests) is read as it is, and so that the batches are unpickled by
:mod:`.cifar_pickle`, which runs nothing they carry.  ``--download`` fetches torchvision's archive.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path
from urllib.error import URLError

import torch

from filter_basis.engine.checkpoint import current_umask, make_temp_dir
from filter_basis.errors import DataError

from .cifar_pickle import RefusedGlobal, load_cifar_pickle
from .in_memory import InMemoryImages

# name (also the torchvision class that downloads it) -> (folder, training files, test files, label key)
LAYOUTS = {
    "CIFAR10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "CIFAR100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}

log = logging.getLogger(__name__)


def _read_batch(path: Path, label_key: str):
    if not path.is_file():
        raise DataError(f"missing CIFAR file {path}")
    try:
        with open(path, "rb") as f:
            entry = load_cifar_pickle(f)
        data = torch.as_tensor(entry["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
        labels = torch.as_tensor(entry[label_key], dtype=torch.long)
    except RefusedGlobal as refused:
        raise DataError(f"CIFAR file {path} is refused: it names {refused.name}, which a CIFAR batch does "
                        "not hold (only dicts, lists, strings, bytes, numbers and numpy arrays are read); "
                        "nothing in it was run") from None
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError, AttributeError, TypeError, ValueError,
            RuntimeError) as e:
        raise DataError(f"unreadable CIFAR file {path}: expected a pickled dict with 'data' (N x 3072 uint8) "
                        f"and '{label_key}' ({type(e).__name__}: {e})") from None
    if len(labels) != len(data):
        raise DataError(f"CIFAR file {path} has {len(data)} images but {len(labels)} labels")
    return data, labels


def _ordinary_permissions(folder: Path) -> None:
    """The modes of a folder and files made here (0777 / 0666 & ~umask), not those stored in the archive."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def download(name: str, dir_data: str) -> None:
    """Fetch torchvision's archive of ``name`` into ``dir_data`` unless its folder is already there.

    An existing folder is never replaced or re-fetched (it may be a subset made on purpose).  The archive
    is fetched and checked against torchvision's MD5 with torchvision's own download code, unpacked in a
    staging folder and renamed into place, so the folder appears complete or not at all, with the modes the
    umask gives (a shared ``datasets/`` stays readable to the group as it allows).  The files are
    read later like any folder, with the restricted unpickler (torchvision's reader uses plain pickle).
    """
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    folder = LAYOUTS[name][0]
    root = Path(dir_data) / folder
    if root.is_dir():
        log.info("%s: %s exists, nothing downloaded", name, root)
        return
    source = getattr(datasets, name)  # the class attributes url, filename, tgz_md5 describe the archive
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = make_temp_dir(root.parent, prefix=f".{folder}-")
    except OSError as error:
        raise DataError(f"--download {name}: cannot write to {root.parent} ({error})") from None
    try:
        try:
            download_and_extract_archive(source.url, str(staging), filename=source.filename,
                                         md5=source.tgz_md5)
        except URLError as error:
            raise DataError(f"--download {name}: cannot fetch {source.url} ({error.reason}); place "
                            f"torchvision's '{folder}' folder under {dir_data} instead") from None
        except RuntimeError as error:  # torchvision: "File not found or corrupted." (MD5 mismatch)
            raise DataError(f"--download {name}: the archive from {source.url} does not match its MD5 "
                            f"{source.tgz_md5} ({error}); nothing was written to {dir_data}") from None
        except OSError as error:  # e.g. the disk is full: said as what it is, in one line
            raise DataError(f"--download {name}: {error}") from None
        if not (staging / folder).is_dir():
            raise DataError(f"--download {name}: the archive from {source.url} holds no '{folder}' folder")
        _ordinary_permissions(staging / folder)
        try:
            os.replace(staging / folder, root)
        except OSError:
            if not root.is_dir():  # not merely another process (a DDP rank) that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class CIFAR(InMemoryImages):
    """CIFAR10 or CIFAR100 (``name``) from ``dir_data/<torchvision folder>``: uint8 images, int labels."""

    def __init__(self, name: str, dir_data: str, train: bool, transform=None):
        folder, train_files, test_files, label_key = LAYOUTS[name]
        root = Path(dir_data) / folder
        if not root.is_dir():
            raise DataError(f"{name} folder {root} not found: expected torchvision's '{folder}' folder "
                            f"({', '.join(train_files + test_files)}) under --dir_data, or add --download")
        batches = [_read_batch(root / f, label_key) for f in (train_files if train else test_files)]
        super().__init__(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), transform)
