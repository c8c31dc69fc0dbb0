"""Test-suite set-up: repository root on sys.path, CUDA-only tests skipped on machines without CUDA."""

import os
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from reference_paths import REFERENCE, ROOT
from threads import single_thread

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
    with single_thread():
        yield


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


@pytest.fixture
def demo_folder(tmp_path):
    """Three inputs of different sizes and kinds (RGB png, greyscale png, RGBA png) and a text file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mine"
    folder.mkdir()
    iio.imwrite(folder / "a.png", rng.integers(0, 256, (10, 14, 3), dtype=np.uint8))
    iio.imwrite(folder / "grey.png", rng.integers(0, 256, (9, 7), dtype=np.uint8))
    iio.imwrite(folder / "alpha.png", rng.integers(0, 256, (8, 8, 4), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder
