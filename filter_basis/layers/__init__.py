"""Convolution layers: the basis convolution and the paper's two comparison methods."""

from .basis_conv import Basis, BasisConv2d

__all__ = ["Basis", "BasisConv2d"]
