"""Optimiser factory and learning-rate schedules with the official option names and epoch semantics.

The scheduler is stepped once per epoch, after the evaluation that follows it, so epoch ``e`` (1-based)
trains with ``lr * factor(e - 1)``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ..errors import OptionError

WARMUP_EPOCHS = 5


def build_optimizer(args: argparse.Namespace, params) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), ADAM (--betas or --beta1/--beta2, --epsilon) or RMSprop; decay on all."""
    params = [p for p in params if p.requires_grad] or [{"params": []}]  # none: a test-only model (Bicubic)
    if args.optimizer == "SGD":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                               weight_decay=args.weight_decay)
    if args.optimizer == "ADAM":
        betas = args.betas or (args.beta1, args.beta2)
        return torch.optim.Adam(params, lr=args.lr, betas=betas, eps=args.epsilon,
                                weight_decay=args.weight_decay)
    return torch.optim.RMSprop(params, lr=args.lr, eps=args.epsilon, weight_decay=args.weight_decay)


@dataclass(frozen=True)
class Schedule:
    """Learning-rate factor after ``t`` completed epochs: multi-step decay, optionally after a warm-up.

    The two trees spell it differently, so each tree's ``Tree.schedule`` is one of the two readers below:
    classification ``--decay step-150-225`` (``warm`` in the string adds the --linear warm-up),
    super-resolution ``--decay_type step --lr_decay 200`` (every 200 epochs) or ``--decay_type step_150_225``.
    """

    milestones: tuple = ()
    every: int = 0
    gamma: float = 0.1
    warmup_scale: int = 0

    def factor(self, t: int) -> float:
        if self.warmup_scale and t < WARMUP_EPOCHS:
            return (1 + t * (self.warmup_scale - 1) / WARMUP_EPOCHS) / self.warmup_scale
        steps = t // self.every if self.every else sum(m <= t for m in self.milestones)
        return self.gamma ** steps

    @classmethod
    def from_decay(cls, args: argparse.Namespace) -> Schedule:
        """The classification spelling: ``--decay step-150-225`` (``warm`` adds the ``--linear`` warm-up)
        with ``--gamma``."""
        text, linear = args.decay, args.linear
        parts = text.split("-")
        if "step" not in parts[0] or not all(p.isdigit() for p in parts[1:]):
            raise OptionError(f"--decay {text!r}: expected 'step' or 'warmstep' followed by -EPOCH "
                              f"milestones, e.g. step-150-225")
        return cls(milestones=_increasing(text, "--decay", parts[1:]), gamma=args.gamma,
                   warmup_scale=linear if "warm" in parts[0] else 0)

    @classmethod
    def from_decay_type(cls, args: argparse.Namespace) -> Schedule:
        """The super-resolution spelling: ``--decay_type step`` (every ``--lr_decay`` epochs) or
        ``--decay_type step_150_225`` (milestones), with ``--gamma``."""
        text = args.decay_type
        if text == "step":
            return cls(every=args.lr_decay, gamma=args.gamma)
        parts = text.split("_")
        if parts[0] != "step" or len(parts) < 2 or not all(p.isdigit() for p in parts[1:]):
            raise OptionError(f"--decay_type {text!r}: expected 'step' (every --lr_decay epochs) or "
                              f"step_A_B... (milestones)")
        return cls(milestones=_increasing(text, "--decay_type", parts[1:]), gamma=args.gamma)


def _increasing(text: str, option: str, parts: list) -> tuple:
    milestones = tuple(int(p) for p in parts)
    if list(milestones) != sorted(set(milestones)) or any(m < 1 for m in milestones):
        raise OptionError(f"{option} {text!r}: milestones must be increasing epochs >= 1")
    return milestones


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule):
    """Each tree reads its own schedule options (its ``Tree.schedule``); the engine only steps it."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
