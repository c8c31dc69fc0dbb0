"""Classification loss terms by name (the TYPE of ``--loss 1*TYPE``): CE, NLL, MSE.

Each factory takes ``args`` and returns a module mapping ``(logits (N, C), labels (N,))`` to the batch
mean.  The engine parses the ``+``-separated ``weight*TYPE`` string and sums the weighted terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from filter_basis.registry import Registry

LOSS_TYPES: Registry = Registry("loss type", "--loss")


class OneHotMSE(nn.Module):
    """Mean squared error between the logits and the one-hot encoding of the labels."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, F.one_hot(target, output.shape[1]).to(output.dtype))


LOSS_TYPES.register("CE", lambda args: nn.CrossEntropyLoss())
# As in the official code: NLLLoss applied to the model output, which is meant for models that
# return log-probabilities (on raw logits it is minus the mean target logit).
LOSS_TYPES.register("NLL", lambda args: nn.NLLLoss())
LOSS_TYPES.register("MSE", lambda args: OneHotMSE())
