"""Several processes (and nodes) run one experiment: the same options and one shared experiment folder.

Under torchrun every process parses its own command line, and only rank 0 writes the experiment folder;
the others read the training state from it when a run continues.  Two nodes whose ``--dir_save`` are
different folders (a path that is local on each node instead of on a shared file system) would silently
fork the run: rank 0 would train in its folder while another node continued from, or started in, its
own.  Before anything is read or written, :func:`check_one_run` makes every process agree on the options
and proves that they see one folder: rank 0 writes a token file into ``--dir_save``, every process looks
for it (waiting up to ``FILTER_BASIS_SHARED_WAIT`` seconds, default 10, for a file system that shows new
files late), and a process that does not see it stops the whole run with one line naming its folder.
See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import uuid
from pathlib import Path

from ..errors import OptionError
from .checkpoint import write_text_atomic
from .distributed import DistEnv, barrier, gather_objects
from .resume import plain_options

# Options that may differ between the processes of one run: paths as each node mounts them, and the
# number of loader workers (each node's CPUs).
PER_NODE_OPTIONS = ("dir_data", "dir_save", "n_threads")
TOKEN_PREFIX = ".filter_basis-shared-"
DEFAULT_WAIT_S = 10.0


def _wait_s() -> float:
    try:
        return max(0.0, float(os.environ.get("FILTER_BASIS_SHARED_WAIT", DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def _sees(root: Path, name: str, token: str, wait_s: float) -> bool:
    """Whether ``root/name`` holding ``token`` shows up within ``wait_s`` seconds (listing the folder
    first makes a network file system revalidate it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if name in os.listdir(root) and (root / name).read_text() == token:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def check_one_run(args: argparse.Namespace, env: DistEnv) -> None:
    """Refuse (every process, one line, nothing written) options that differ between processes, and a
    ``--dir_save`` that is not one folder for all of them.  A no-op for a single process."""
    if not env.enabled:
        return
    host = socket.gethostname()
    options = gather_objects(env, plain_options(args))
    differ = sorted({name for theirs in options[1:] for name, value in theirs.items()
                     if name not in PER_NODE_OPTIONS and options[0].get(name) != value})
    if differ:
        name = differ[0]
        values = ", ".join(f"rank {r}: {o.get(name)!r}" for r, o in enumerate(options))
        raise OptionError(f"the processes of this run were given different options ({', '.join(differ)}; "
                          f"--{name}: {values}); give every node the same command line")
    root = Path(args.dir_save)
    token = gather_objects(env, uuid.uuid4().hex if env.is_main else None)[0]
    name = f"{TOKEN_PREFIX}{token}"
    created = False
    if env.is_main:
        created = not root.exists()
        write_text_atomic(root / name, token)
    barrier(env)
    seen = _sees(root, name, token, _wait_s()) if not env.is_main else True
    views = gather_objects(env, (seen, host, str(root.resolve())))
    if env.is_main:
        (root / name).unlink(missing_ok=True)
        if created and not all(ok for ok, _, _ in views):
            with_nothing = not any(root.iterdir())
            if with_nothing:
                root.rmdir()
    blind = [(rank, view) for rank, view in enumerate(views) if not view[0]]
    if blind:
        rank, (_, their_host, their_root) = blind[0]
        _, main_host, main_root = views[0]
        raise OptionError(f"--dir_save {their_root!r} of rank {rank} (host {their_host}) is not the folder "
                          f"rank 0 writes to ({main_root!r} on host {main_host}): it does not see the file "
                          f"rank 0 wrote there; every node needs the same --dir_save on a shared file "
                          f"system (nothing was written)")


def check_same_decision(env: DistEnv, resuming: bool, folder: Path) -> None:
    """Every process continues, or every process starts, the same folder (not some of each)."""
    if not env.enabled:
        return
    views = gather_objects(env, (bool(resuming), folder.name))
    if len(set(views)) > 1:
        listed = ", ".join(f"rank {r}: {'continue' if going_on else 'start'} {name!r}"
                           for r, (going_on, name) in enumerate(views))
        raise OptionError(f"the processes of this run disagree about the experiment folder ({listed}); "
                          f"every node needs the same --dir_save on a shared file system")
