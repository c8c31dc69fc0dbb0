"""Classification models by name (``--model``), and what the engine needs to know about them.

Every architecture is described once (``resnet.py``, ...); its ``_Basis``, ``_Factor`` and ``_Group``
variants are the same architecture built with another convolution.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from torch import nn

from filter_basis import init_scale
from filter_basis.engine.checkpoint import load_state_dict_strict, read_state_dict
from filter_basis.engine.options import n_basis_str_options
from filter_basis.errors import OptionError
from filter_basis.registry import Registry, uncompressed_name

from . import densenet, resnet, torchvision_weights, vgg
from .checkpoint import key_renamer
from .init import dense_variance
from .options import is_imagenet

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
        model = builder(args)
    except ValueError as e:  # a layer refused its configuration: still the options' fault
        raise OptionError(f"--model {args.model}: {e}") from None
    # --init scaled: the compressed layers start with the gain the baseline's init gives its dense convs
    init_scale.apply(model, args, dense_variance(args), resnet.factor_target(args))
    return model


def baseline_name(args) -> str:
    """The uncompressed model the ``--model`` network is compared with (ResNet_Basis -> ResNet)."""
    return uncompressed_name(MODELS, args.model)


def summary_input_size(args) -> tuple:
    """The (C, H, W) of one input for complexity counting: 3x224x224 for ImageNet models, else 3x32x32."""
    MODELS.get(args.model)
    return (3, 224, 224) if is_imagenet(args) else (3, 32, 32)


def pretrained_keys(args) -> Callable[[str], str]:
    """How the keys of a weights file for ``--model`` map onto ours: torchvision's flat VGG layout for the
    ImageNet VGG, the official layout's renaming rules otherwise (our own keys pass unchanged)."""
    if is_imagenet(args) and args.model == "VGG":
        return vgg.torchvision_key(args)
    return key_renamer(OFFICIAL_KEYS.get(args.model, ()))


def basis_count_options(args, names: list, counts: list) -> dict:
    """The options that give the bases of ``--model`` these numbers of filters (--target_compression)."""
    if args.model.startswith("ResNet"):
        return resnet.basis_count_options(args, names, counts)
    return n_basis_str_options(args, names, counts)  # a basis per decomposed layer (VGG_Basis)


def load_pretrained(model: nn.Module, path: str, args) -> None:
    """Load ``path`` (our plain state_dict, the official layout of ``--model`` or, for the ImageNet models,
    torchvision's) strictly into ``model``; ``download``: torchvision's ImageNet weights."""
    if path == torchvision_weights.DOWNLOAD:
        state, source = torchvision_weights.download(args), f"torchvision's {args.model} weights"
    else:
        state, source = read_state_dict(path), f"checkpoint {path}"
    load_state_dict_strict(model, state, source, pretrained_keys(args))
