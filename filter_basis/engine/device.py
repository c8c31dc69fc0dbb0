"""The one place that decides the device, the number format and the opt-in speed options."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .distributed import DistEnv

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def use_cuda(args: argparse.Namespace) -> bool:
    """CUDA if available, unless --cpu."""
    return not args.cpu and torch.cuda.is_available()


@dataclass
class Runtime:
    """Where and in which format the model runs: device, --precision, --amp, --channels_last."""

    device: torch.device
    half: bool = False
    amp_dtype: torch.dtype = None
    channels_last: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: DistEnv) -> Runtime:
        device = torch.device(f"cuda:{env.local_rank}") if use_cuda(args) else torch.device("cpu")
        return cls(device, args.precision == "half", AMP_DTYPES.get(args.amp), args.channels_last)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move the model to the device and the chosen format (in place)."""
        model.to(self.device)
        if self.half:
            model.half()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def to_device(self, tensor: torch.Tensor, cast: bool = True) -> torch.Tensor:
        """Move a batch tensor; with ``cast``, floats follow --precision and 4-D ones --channels_last."""
        tensor = tensor.to(self.device, non_blocking=True)
        if cast and tensor.is_floating_point():
            if self.half:
                tensor = tensor.half()
            if self.channels_last and tensor.dim() == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for float16 autocast on CUDA; a pass-through scaler otherwise."""
        enabled = self.amp_dtype == torch.float16 and self.device.type == "cuda"
        return torch.amp.GradScaler(self.device.type, enabled=enabled)

    def synchronize(self) -> None:
        """Wait for queued device work (for honest timings); nothing to wait for on the CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
