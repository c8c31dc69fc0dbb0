"""The SR models: ``--model NAME`` -> builder, and what the engine needs to know about them."""

from __future__ import annotations

from torch import nn

from filter_basis import init_scale
from filter_basis.engine.options import n_basis_str_options as basis_count_options
from filter_basis.errors import OptionError
from filter_basis.registry import Registry, uncompressed_name

from . import bicubic, edsr, srresnet
from .checkpoint import load_pretrained, load_state
from .official_keys import official_key_map

MODELS: Registry = Registry("model", "--model")

MODELS.register("EDSR", edsr.build_edsr)
MODELS.register("EDSR_Basis", edsr.build_edsr_basis)
MODELS.register("EDSR_Factor", edsr.build_edsr_factor)
MODELS.register("SRResNet", srresnet.build_srresnet)
MODELS.register("SRResNet_Basis", srresnet.build_srresnet_basis)
MODELS.register("SRResNet_Factor", srresnet.build_srresnet_factor)
MODELS.register("Bicubic", bicubic.build_bicubic)


def build_model(args) -> nn.Module:
    """The network ``--model`` names, built from the options (OptionError for combinations that do
    not fit, e.g. a basis_size that does not divide n_feats)."""
    builder = MODELS.get(args.model)
    if len(args.scale) != 1:
        raise OptionError(f"--scale {'+'.join(map(str, args.scale))}: the SR models here upscale by one "
                          "factor; give a single scale such as 4")
    model = builder(args)
    # --init scaled: the compressed layers start with the gain of the dense convs they replace, which all
    # SR models initialise with PyTorch's default (docs/initialisation.md)
    init_scale.apply(model, args, init_scale.pytorch_default)
    return model


def baseline_name(args) -> str:
    """The uncompressed model the ``--model`` network is compared with (EDSR_Basis -> EDSR)."""
    return uncompressed_name(MODELS, args.model)


def summary_input_size(args) -> tuple:
    """An LR image that upscales to 720p (1280x720) at the first scale (docs/design.md#summary-json)."""
    s = args.scale[0]
    return (args.n_colors, 720 // s, 1280 // s)


def first_block_path(args) -> str:
    """Module path of the first residual block (both families keep their blocks in ``body``); Bicubic has
    no blocks, so its whole (parameter-free) self stands for one and the block counts are 0."""
    return "" if args.model == "Bicubic" else "body.0"


__all__ = ["MODELS", "basis_count_options",
           "build_model", "baseline_name", "summary_input_size", "first_block_path",
           "load_pretrained", "load_state", "official_key_map"]
