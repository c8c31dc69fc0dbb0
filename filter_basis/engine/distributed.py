"""DistributedDataParallel set-up under torchrun, data sharding and metric reduction over processes.

One process per device; ``torchrun`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``.  Without torchrun the
run is a single process and every function here is a no-op.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import OptionError


@dataclass(frozen=True)
class DistEnv:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_command(n: int) -> str:
    """The command line that runs this program with ``n`` processes (shown when --n_GPUs N lacks torchrun)."""
    argv = list(sys.argv)
    if "--n_GPUs" in argv:
        i = argv.index("--n_GPUs")
        del argv[i:i + 2]
    return f"torchrun --standalone --nproc_per_node {n} " + " ".join(shlex.quote(a) for a in argv)


def launched_processes() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(args: argparse.Namespace, use_cuda: bool) -> DistEnv:
    """Join the torchrun process group (NCCL on CUDA, Gloo on CPU), or check that none is needed."""
    world_size = launched_processes()
    if world_size == 1:
        if args.n_GPUs > 1:
            raise OptionError(f"--n_GPUs {args.n_GPUs} needs one process per GPU; run: "
                              f"{torchrun_command(args.n_GPUs)}")
        return DistEnv()
    env = DistEnv(world_size, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return env


def teardown(env: DistEnv) -> None:
    """Destroy the process group and collect what still refers to it (a DistributedDataParallel wrapper
    lives in reference cycles), so that its C++ threads (Gloo's work loops and TCP loop, rank 0's store
    server) are joined now, while the interpreter is fully alive: left to interpreter exit, one of them
    may abort the process ("terminate called without an active exception", SIGABRT)."""
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def all_reduce_sum(env: DistEnv, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes (in place; returned for convenience)."""
    if env.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(env: DistEnv, module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process, as DDP's forward would copy them."""
    if env.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def gather_objects(env: DistEnv, obj) -> list:
    """``obj`` of every process, in rank order."""
    if not env.enabled:
        return [obj]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_keys(env: DistEnv, keys: list) -> list:
    """The sorted union of metric names seen by all processes (a shard may see none of a kind)."""
    return sorted(set().union(*gather_objects(env, sorted(keys))))


class ShardSampler(Sampler):
    """Process ``rank`` takes indices ``rank, rank + world, ...``: every sample exactly once over all ranks.

    Unlike ``DistributedSampler`` it does not pad with repeated samples, so reduced test metrics count
    each test sample once.
    """

    def __init__(self, length: int, env: DistEnv):
        self.indices = range(env.rank, length, env.world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
