"""Classification models by name (``--model``), and what the engine needs to know about them.

Every architecture is described once (``resnet.py``, ...); its ``_Basis``, ``_Factor`` and ``_Group``
variants are the same architecture built with another convolution.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from torch import nn

from filter_basis.engine.options import counts_string
from filter_basis.errors import OptionError
from filter_basis.registry import Registry, uncompressed_name

from . import densenet, resnet, vgg
from .checkpoint import load_checkpoint

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "--model")
MODELS.register("ResNet", resnet.build_resnet)
MODELS.register("ResNet_Basis", resnet.build_resnet_basis)
MODELS.register("ResNet_Factor", resnet.build_resnet_factor)
MODELS.register("ResNet_Group", resnet.build_resnet_group)
MODELS.register("VGG", vgg.build_vgg)
MODELS.register("VGG_Basis", vgg.build_vgg_basis)
MODELS.register("VGG_Factor", vgg.build_vgg_factor)
MODELS.register("VGG_Group", vgg.build_vgg_group)
MODELS.register("DenseNet", densenet.build_densenet)
MODELS.register("DenseNet_Basis", densenet.build_densenet_basis)
MODELS.register("DenseNet_Factor", densenet.build_densenet_factor)
MODELS.register("DenseNet_Group", densenet.build_densenet_group)

# --model name -> rules mapping the official state_dict keys onto ours (absent: identical keys).
OFFICIAL_KEYS: Dict[str, List[Tuple[str, str]]] = {**vgg.OFFICIAL_KEYS, **resnet.OFFICIAL_KEYS,
                                                   **densenet.OFFICIAL_KEYS}

def build_model(args) -> nn.Module:
    """The ``--model`` network for ``args``; OptionError for options it cannot be built with."""
    builder = MODELS.get(args.model)
    try:
        return builder(args)
    except ValueError as e:  # a layer refused its configuration: still the options' fault
        raise OptionError(f"--model {args.model}: {e}") from None


def baseline_name(args) -> str:
    """The uncompressed model the ``--model`` network is compared with (ResNet_Basis -> ResNet)."""
    return uncompressed_name(MODELS, args.model)


def summary_input_size(args) -> tuple:
    """The (C, H, W) of one input for complexity counting: every model here is a CIFAR model."""
    MODELS.get(args.model)
    return (3, 32, 32)


def basis_count_options(args, names: list, counts: list) -> dict:
    """The options that give the bases of ``--model`` these numbers of filters (--target_compression)."""
    if args.model.startswith("ResNet"):
        return resnet.basis_count_options(args, names, counts)
    return {"n_basis_str": counts_string(counts)}  # a basis per decomposed layer (VGG_Basis)


def load_pretrained(model: nn.Module, path: str, args) -> None:
    """Load ``path`` (our plain state_dict or the official layout of ``--model``) strictly into ``model``."""
    load_checkpoint(model, path, OFFICIAL_KEYS.get(args.model, ()))
