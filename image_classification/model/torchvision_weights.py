"""``--pretrained download``: torchvision's ImageNet weights of the dense ImageNet models.

The official code loaded them with torchvision's model zoo; here torchvision fetches them too (into
torch's hub cache, ``$TORCH_HOME/hub/checkpoints``, used without a connection once there).  A machine
that cannot reach the file stops at once with one line naming the file to get and pass as
``--pretrained FILE``.
"""

from __future__ import annotations

from typing import Dict

import torch
from torchvision import models

from filter_basis.errors import CheckpointError, OptionError

from .options import is_imagenet

DOWNLOAD = "download"  # the --pretrained value that asks for these weights

# (--model, --depth or --vgg_type) -> torchvision weights (the original ImageNet-1k release of each).
WEIGHTS = {
    ("ResNet", "18"): models.ResNet18_Weights.IMAGENET1K_V1,
    ("ResNet", "34"): models.ResNet34_Weights.IMAGENET1K_V1,
    ("ResNet", "50"): models.ResNet50_Weights.IMAGENET1K_V1,
    ("ResNet", "101"): models.ResNet101_Weights.IMAGENET1K_V1,
    ("ResNet", "152"): models.ResNet152_Weights.IMAGENET1K_V1,
    ("VGG", "16"): models.VGG16_Weights.IMAGENET1K_V1,
    ("VGG", "19"): models.VGG19_Weights.IMAGENET1K_V1,
}


def weights(args):
    """The torchvision weights entry for the options, or OptionError naming what has weights."""
    size = str(args.depth) if args.model == "ResNet" else str(args.vgg_type)
    if not is_imagenet(args) or (args.model, size) not in WEIGHTS:
        known = ", ".join(f"{m} --{'depth' if m == 'ResNet' else 'vgg_type'} {s}" for m, s in WEIGHTS)
        raise OptionError(f"--pretrained download: torchvision has ImageNet weights only for the dense "
                          f"ImageNet models ({known}, with --data_train ImageNet), not for --model "
                          f"{args.model} on {args.data_train}; pass --pretrained FILE instead")
    return WEIGHTS[(args.model, size)]


def download(args) -> Dict[str, torch.Tensor]:
    """The state_dict of :func:`weights`, from the hub cache or fetched (hash-checked) by torchvision."""
    entry = weights(args)
    filename = entry.url.rsplit("/", 1)[-1]
    try:
        return entry.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, HTTPError, socket errors, hash mismatch: all mean "no file"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"--pretrained download: cannot fetch {entry.url} ({reason}); download "
                              f"that file elsewhere and pass --pretrained /path/to/{filename}") from None
