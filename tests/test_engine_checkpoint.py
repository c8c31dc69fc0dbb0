"""Atomic writes (permissions as the umask says), refusal of checkpoints that carry code, errors reported
as what they are, and RNG state round trips."""

import os
import random
import stat

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from filter_basis.engine.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_atomic,
)
from filter_basis.errors import CheckpointError


def test_a_failure_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "model_latest.pt"
    save_checkpoint({"w": torch.arange(3.0)}, path)

    def dies_half_way(f):
        f.write(b"partial bytes of a new checkpoint")
        raise KeyboardInterrupt  # stands for the process being killed in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, dies_half_way)
    torch.testing.assert_close(load_checkpoint(path)["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["model_latest.pt"]  # no temporary file left behind


def test_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path, code_payload):
    payload, marker = code_payload
    path = tmp_path / "evil.pt"
    torch.save({"model": payload}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    assert "refused" in str(info.value) and "\n" not in str(info.value)


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "cut.pt"
    save_checkpoint({"w": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("keep", [-1, -100, 50], ids=["last-byte", "last-record", "early"])
def test_a_truncated_checkpoint_says_so_with_its_size_not_an_errno(tmp_path, keep):
    """Cut inside its last record the zip reader only says "[Errno 22] Invalid argument"."""
    path = tmp_path / "cut.pt"
    save_checkpoint({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:keep])
    size = path.stat().st_size
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"cannot be read: truncated or damaged ({size:,} bytes" in message, message
    assert "Errno" not in message and "miniz" not in message and "\n" not in message


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    save_checkpoint({"rng": rng_state()}, tmp_path / "state.pt")
    first = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(load_checkpoint(tmp_path / "state.pt")["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    torch.testing.assert_close(first[0], again[0])
    assert first[1:] == again[1:]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_files_and_their_folders_follow_the_umask(tmp_path, umask_027):
    write_atomic(tmp_path / "results.json", lambda f: f.write(b"[]\n"))
    save_checkpoint({"w": torch.zeros(2)}, tmp_path / "model" / "model_latest.pt")
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o640  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "model" / "model_latest.pt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o750


def test_generated_lr_folder_follows_the_umask(tmp_path, umask_027):
    from super_resolution.data.bicubic import make_lr_images

    hr = tmp_path / "HR" / "0001.png"
    hr.parent.mkdir()
    iio.imwrite(hr, np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    lr_dir = tmp_path / "LR_bicubic" / "X2"
    made = make_lr_images([hr], lr_dir, lambda p: p.name, 2)
    assert made[hr] == lr_dir / "0001.png" and made[hr].is_file()
    assert stat.S_IMODE(lr_dir.stat().st_mode) == 0o750  # not mkdtemp's 0700
    assert stat.S_IMODE(made[hr].stat().st_mode) == 0o640


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"), KeyboardInterrupt(),
                                   ZeroDivisionError("a bug, not a damaged file")],
                         ids=["cuda-oom", "interrupt", "bug"])
def test_errors_that_are_not_about_the_file_propagate_as_themselves(tmp_path, monkeypatch, error):
    path = tmp_path / "fine.pt"
    save_checkpoint({"w": torch.zeros(2)}, path)

    def load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(type(error)):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n" * 8], ids=["empty", "text"])
def test_damaged_files_are_checkpoint_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
