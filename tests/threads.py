"""Tiny in-process runs on one torch thread (faster on a busy machine, and the same floats as subprocesses
started with OMP_NUM_THREADS=1)."""

import contextlib

import torch


@contextlib.contextmanager
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
