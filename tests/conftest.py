"""Test-suite set-up: repository root on sys.path, CUDA-only tests skipped on machines without CUDA."""

import os
import sys
from pathlib import Path

import pytest
import torch
from reference_paths import REFERENCE, ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run by scripts/gpu_check.sh)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The reference facts shipped as test data (paper tables, official counts, golden vectors)."""
    return REFERENCE


@pytest.fixture
def one_thread():
    """Run torch on one thread: tiny models train faster on a busy machine, and in-process runs then
    compute the same floats as subprocesses started with OMP_NUM_THREADS=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _TouchesMarker:
    """Unpickling it runs ``touch MARKER``: the stand-in for a checkpoint that carries code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def code_payload(tmp_path):
    """``(obj, marker)``: loading a pickle of ``obj`` would create the file ``marker`` (it must not)."""
    marker = tmp_path / "marker"
    return _TouchesMarker(marker), marker
