"""SRResNet (Ledig et al. 2017) and its compressed variants: one architecture, three kinds of block convs.

head conv 9x9 -> P; body: R residual blocks ``conv -> BN -> P -> conv -> BN`` + input, then conv -> BN;
+ head output; upsampler with its own PReLUs; tail conv.  P is ONE PReLU (a single scalar) shared by the
head and every block, as in the official code; --res_scale is ignored (docs/official-code.md#srresnet).
"""

from __future__ import annotations

from torch import nn

from filter_basis.layers import norm_act

from .block_convs import BlockConvs, basis_convs, block_basis_counts, dense_convs, factor_convs
from .common import ResidualBlock, Upsampler, conv3x3


class SRResNet(nn.Module):
    """``block_norm_act=False`` drops the block's own BN/P layers, for convs that bring their own
    (SRResNet_Basis --bn_every)."""

    def __init__(self, *, scale: int, n_resblocks: int, n_feats: int, block_convs: BlockConvs,
                 act: nn.Module, block_norm_act: bool = True, n_colors: int = 3):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 9, padding=4), act)
        blocks = []
        for _ in range(n_resblocks):
            conv1, conv2 = block_convs(n_feats)
            if block_norm_act:
                layers = [conv1, nn.BatchNorm2d(n_feats), act, conv2, nn.BatchNorm2d(n_feats)]
            else:
                layers = [conv1, conv2]
            blocks.append(ResidualBlock(layers))
        self.body = nn.Sequential(*blocks, conv3x3(n_feats, n_feats), nn.BatchNorm2d(n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats, act=nn.PReLU), conv3x3(n_feats, n_colors))

    def forward(self, x):
        h = self.head(x)
        return self.tail(self.body(h) + h)


def _srresnet(args, block_convs: BlockConvs, act: nn.Module, block_norm_act: bool = True) -> SRResNet:
    return SRResNet(scale=args.scale[0], n_resblocks=args.n_resblocks, n_feats=args.n_feats,
                    block_convs=block_convs, act=act, block_norm_act=block_norm_act,
                    n_colors=args.n_colors)


def build_srresnet(args) -> SRResNet:
    return _srresnet(args, dense_convs, nn.PReLU())


def build_srresnet_basis(args) -> SRResNet:
    """Each basis layer is basis conv -> BN -> act -> 1x1 -> BN -> act.  With --bn_every the act is P
    and the block is just the two layers; without it the act is a second PReLU Q shared by all basis
    layers (the official default-argument PReLU, docs/official-code.md#defects, D12) and the block keeps its
    BN/P layers."""
    shared_act = nn.PReLU()
    layer_act = shared_act if args.bn_every else nn.PReLU()
    convs = basis_convs(args.n_feats, args.basis_size, block_basis_counts(args), args.share_basis,
                        mid=norm_act(layer_act), post=norm_act(layer_act), default_projection_init=True)
    return _srresnet(args, convs, shared_act, block_norm_act=not args.bn_every)


def build_srresnet_factor(args) -> SRResNet:
    shared_act = nn.PReLU()
    return _srresnet(args, factor_convs(args.sic_layer, act=shared_act), shared_act)
