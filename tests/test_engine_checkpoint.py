"""Atomic writes, refusal of checkpoints that carry code, and RNG state round trips."""

import random

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
