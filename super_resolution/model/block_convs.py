"""The one choice that separates a baseline from its compressed variants: the residual-block convs.

An architecture (EDSR, SRResNet) asks a ``BlockConvs`` for the two 3x3 convolutions of each residual
block; the dense, basis and factor versions below are the only difference between, say, EDSR,
EDSR_Basis and EDSR_Factor.  Being asked once per block is what lets ``--share_basis`` hand both convs
of a block one :class:`~filter_basis.layers.Basis` (never shared across blocks).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

from torch import nn

from filter_basis.engine.options import basis_counts
from filter_basis.errors import OptionError
from filter_basis.layers import Basis, BasisConv2d, FactorConv2d
from filter_basis.layers.norm_act import Activation

from .common import conv3x3

BlockConvs = Callable[[int], Tuple[nn.Module, nn.Module]]
"""``f(n_feats) -> (conv1, conv2)``: the two n_feats -> n_feats convs of one residual block."""


def dense_convs(n_feats: int) -> Tuple[nn.Module, nn.Module]:
    """Two plain 3x3 convolutions with bias (the baselines)."""
    return conv3x3(n_feats, n_feats), conv3x3(n_feats, n_feats)


def basis_convs(n_feats: int, basis_size: int, n_basis: Union[int, Sequence[int]],
                share_basis: bool = False, *,
                mid: Optional[Callable[[int], nn.Module]] = None,
                post: Optional[Callable[[int], nn.Module]] = None,
                default_projection_init: bool = False) -> BlockConvs:
    """Basis convolutions (3x3 basis, 1x1 projection); ``share_basis``: one Basis per block.

    ``n_basis`` is one number for every basis or the numbers of the bases in the order they are made
    (``--n_basis_str``: two per block, or one per block with ``share_basis``).

    ``mid``/``post`` are the norm/activation factories inside each layer (SRResNet_Basis).
    ``default_projection_init`` keeps PyTorch's default init of the projection, as the official
    SRResNet_Basis did (EDSR_Basis used Kaiming-uniform, the layer's own default).
    """
    if n_feats % basis_size:
        raise OptionError(f"--basis_size {basis_size} does not divide --n_feats {n_feats}; use a divisor "
                          f"of {n_feats}")

    counts = iter(n_basis) if not isinstance(n_basis, int) else None

    def next_count() -> int:
        return n_basis if counts is None else next(counts)

    def make(width: int) -> Tuple[nn.Module, nn.Module]:
        if share_basis:
            basis = Basis(next_count(), basis_size)
            layers = tuple(BasisConv2d(width, width, 3, basis_size, None, basis=basis, mid=mid, post=post)
                           for _ in range(2))
        else:
            layers = tuple(BasisConv2d(width, width, 3, basis_size, next_count(), mid=mid, post=post)
                           for _ in range(2))
        if default_projection_init:
            for layer in layers:
                layer.projection.reset_parameters()
        return layers

    return make


def block_basis_counts(args) -> list:
    """Filters of every basis in model order: ``--n_basis_str`` or ``--n_basis`` everywhere."""
    per_block = 1 if args.share_basis else 2
    return basis_counts(args, args.n_resblocks * per_block,
                        f"--model {args.model} with --n_resblocks {args.n_resblocks}"
                        f"{' --share_basis' if args.share_basis else ''}")



def factor_convs(sic_layers: int, act: Activation) -> BlockConvs:
    """Chains of ``sic_layers`` SIC layers (depthwise 3x3 + 1x1 + identity, then ``act``)."""
    def make(width: int) -> Tuple[nn.Module, nn.Module]:
        return tuple(FactorConv2d(width, width, 3, n_layers=sic_layers, act=act) for _ in range(2))

    return make
