"""Every trainable SR model takes a gradient step (a forward pass alone misses in-place autograd errors)."""

import shlex

import pytest
import torch

from super_resolution.model import build_model
from super_resolution.option import parse_args

SMALL = "--scale 2 --n_resblocks 2 --n_feats 16 --basis_size 16 --n_basis 4"


@pytest.mark.parametrize("model", ["EDSR", "EDSR_Basis", "EDSR_Factor", "EDSR_Factor --sic_layer 2",
                                   "SRResNet",
                                   "SRResNet_Basis", "SRResNet_Factor", "SRResNet_Factor --sic_layer 2"])
def test_backward_gives_finite_gradients_to_every_parameter(model):
    torch.manual_seed(0)
    net = build_model(parse_args(shlex.split(f"--model {model} {SMALL}")))
    net(torch.rand(2, 3, 8, 8) * 255).abs().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
