"""Files this tree derives from dataset images, keyed on the image they were made from.

The bicubic ``LR_bicubic/`` images and the ``.npy`` decode cache are made once and reused; without a
key, an image edited or replaced afterwards would go on being trained or tested through the copy made
from its old content.  Each folder that holds derived files keeps a small JSON record (``MANIFEST``
name per kind) of ``{derived file name: [source size, source mtime_ns]}``; a derived file is current only
while that record matches its source as it is now, and is remade otherwise.  The source is looked at
before it is read, so a source changed while being read is remade next time, never trusted.

Two processes (DDP ranks) may refresh the same folder at once: every file is written atomically, and the
record is merged with what is on disk when saved, so a race costs at most a second rebuild.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Dict, List

from filter_basis.engine.checkpoint import write_text_atomic
from filter_basis.errors import DataError

READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def is_read_only(error: OSError) -> bool:
    """Whether ``error`` says the folder cannot be written (the one failure worked around, with a note)."""
    return isinstance(error, PermissionError) or error.errno in READ_ONLY_ERRNOS


def source_key(source: Path) -> List[int]:
    """What identifies the content of ``source`` cheaply: its size in bytes and its mtime in ns."""
    stat = Path(source).stat()
    return [stat.st_size, stat.st_mtime_ns]


class SourceRecord:
    """The record ``folder/manifest`` of which source each derived file of ``folder`` was made from."""

    def __init__(self, folder: Path, manifest: str):
        self.path = Path(folder) / manifest
        self.entries: Dict[str, List[int]] = self._read()
        self.changed: Dict[str, List[int]] = {}

    def _read(self) -> Dict[str, List[int]]:
        if not self.path.is_file():
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read {self.path} ({error}); delete it to have the files it describes "
                            "remade") from None
        if not isinstance(entries, dict):
            raise DataError(f"{self.path} is not a JSON object; delete it to have the files it describes "
                            "remade")
        return entries

    def is_current(self, derived: str, key: List[int]) -> bool:
        """``folder/derived`` exists and was made from a source that had ``key``."""
        return (self.path.parent / derived).is_file() and self.entries.get(derived) == key

    def record(self, derived: str, key: List[int]) -> None:
        self.entries[derived] = self.changed[derived] = key

    def save(self) -> None:
        """Write the record atomically, merged with entries another process saved meanwhile."""
        if not self.changed:
            return
        merged = {**self._read(), **self.changed}
        write_text_atomic(self.path, json.dumps(merged, sort_keys=True, indent=0))
        self.entries, self.changed = merged, {}
