"""Per-sample sums and counts of metrics, reduced over processes before dividing (not a mean of means)."""

from __future__ import annotations

import torch

from .distributed import DistEnv, all_keys, all_reduce_sum


class MetricSums:
    """``add(key, sum_over_samples, count)`` per batch; ``means(env)`` gives every key's mean over all ranks.

    Sums may be tensors (kept on their device, no synchronisation per batch) or numbers.
    """

    def __init__(self):
        self.sums: dict = {}
        self.counts: dict = {}

    def add(self, key: str, value_sum, count: int) -> None:
        if isinstance(value_sum, torch.Tensor):
            value_sum = value_sum.detach().double()
        self.sums[key] = self.sums.get(key, 0.0) + value_sum
        self.counts[key] = self.counts.get(key, 0) + count

    def totals(self, env: DistEnv, device: torch.device) -> dict:
        """``{key: (sum, count)}`` summed over all processes."""
        keys = all_keys(env, list(self.sums))
        table = torch.tensor([[float(self.sums.get(k, 0.0)), float(self.counts.get(k, 0))] for k in keys],
                             dtype=torch.float64, device=device).reshape(len(keys), 2)
        table = all_reduce_sum(env, table).cpu()
        return {k: (table[i, 0].item(), int(table[i, 1].item())) for i, k in enumerate(keys)}

    def means(self, env: DistEnv, device: torch.device) -> dict:
        return {k: s / n for k, (s, n) in self.totals(env, device).items() if n}


def nest(flat: dict) -> dict:
    """``{"Set5_x4/psnr": v}`` -> ``{"Set5_x4": {"psnr": v}}``; keys without '/' stay at the top."""
    nested: dict = {}
    for key, value in flat.items():
        *outer, last = key.split("/")
        node = nested
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def flatten(nested: dict, prefix: str = "") -> dict:
    """The inverse of :func:`nest`."""
    flat = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat
