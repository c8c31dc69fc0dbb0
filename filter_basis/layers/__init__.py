"""Convolution layers: the basis convolution and the paper's two comparison methods."""

from .basis_conv import Basis, BasisConv2d
from .factor import SIC, FactorConv2d
from .group import GroupConv2d
from .norm_act import norm_act

__all__ = ["Basis", "BasisConv2d", "FactorConv2d", "GroupConv2d", "SIC", "norm_act"]
