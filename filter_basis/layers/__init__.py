"""Convolution layers: the basis convolution and the paper's two comparison methods."""

from .basis_conv import FORMS, Basis, BasisConv2d, forced_form, set_basis_form
from .factor import SIC, FactorConv2d
from .group import GroupConv2d
from .norm_act import norm_act

__all__ = ["FORMS", "Basis", "BasisConv2d", "FactorConv2d", "GroupConv2d", "SIC", "forced_form", "norm_act",
           "set_basis_form"]
