"""approximation_loss: the official loss_norm regulariser (docs/official-code.md#loss_norm)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from filter_basis import Basis, BasisConv2d, approximation_loss, basisify
from filter_basis.layers import norm_act


def dense_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3))


def converted(n_basis: int):
    reference = dense_net().double()
    model = copy.deepcopy(reference)
    basisify(model, 4, n_basis, include=["2", "4"])
    return model, reference


def official_formula(model, reference_weights, weight, basis_weight):
    """Written out from docs/official-code.md#loss_norm, with an explicit loop over outputs and
    splits."""
    diff, norm = 0.0, 0.0
    for path, w_ref in reference_weights.items():
        layer = model.get_submodule(path)
        basis, proj = layer.basis_weight(), layer.projection.weight[:, :, 0, 0]
        n, b = basis.shape[:2]
        w = torch.zeros_like(w_ref)
        for o in range(w.shape[0]):
            for g in range(w.shape[1] // b):
                w[o, g * b:(g + 1) * b] = sum(proj[o, g * n + j] * basis[j] for j in range(n))
        diff = diff + ((w_ref - w) ** 2).mean()
        norm = norm + (basis ** 2).mean()
    return weight * diff + basis_weight * norm


def test_difference_term_is_zero_at_full_rank():
    model, reference = converted(36)
    only_difference = approximation_loss(model, reference, basis_weight=0.0)
    assert only_difference.item() < 1e-20
    basis_norm = sum(model[i].basis.weight.pow(2).mean() for i in (2, 4))
    torch.testing.assert_close(approximation_loss(model, reference), 0.05 * basis_norm)


@pytest.mark.parametrize("weight,basis_weight", [(1.0, 0.05), (2.0, 1.0)])
def test_low_rank_loss_matches_the_official_formula(weight, basis_weight):
    model, reference = converted(5)
    loss = approximation_loss(model, reference, weight, basis_weight)
    weights = {"2": reference[2].weight, "4": reference[4].weight}
    expected = official_formula(model, weights, weight, basis_weight)
    assert loss.item() > basis_weight * 1e-3
    torch.testing.assert_close(loss, expected)


def test_reference_can_be_a_state_dict_or_a_path_mapping():
    model, reference = converted(5)
    from_model = approximation_loss(model, reference)
    torch.testing.assert_close(approximation_loss(model, reference.state_dict()), from_model)
    by_path = {"2": reference[2].weight, "4": reference[4].weight}
    torch.testing.assert_close(approximation_loss(model, by_path), from_model)


def test_gradient_reaches_basis_and_projection_but_not_the_reference():
    model, reference = converted(5)
    approximation_loss(model, reference).backward()
    for i in (2, 4):
        assert model[i].basis.weight.grad.abs().sum() > 0
        assert model[i].projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in reference.parameters())


def test_training_with_the_regulariser_approaches_the_closed_form_fit():
    """Perturb a rank-5 closed-form fit (the least-squares optimum), then let the regulariser pull the
    layers back: most of the gap to the optimum closes."""
    model, reference = converted(5)
    optimum = approximation_loss(model, reference, basis_weight=0.0).item()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    params = [p for i in (2, 4) for p in (model[i].basis.weight, model[i].projection.weight)]
    optimizer = torch.optim.SGD(params, lr=100.0)
    before = approximation_loss(model, reference, basis_weight=0.0).item()
    for _ in range(30):
        optimizer.zero_grad()
        approximation_loss(model, reference).backward()
        optimizer.step()
    after = approximation_loss(model, reference, basis_weight=0.0).item()
    assert optimum < after < optimum + 0.2 * (before - optimum)


def test_nonlinear_and_shared_layers_compose_basis_and_projection():
    """VGG_Basis-style layers (BN/ReLU between and after) and a sliced shared basis: mid/post ignored,
    each layer's basis slice enters the basis term."""
    torch.manual_seed(0)
    shared = Basis(6, 8, 3)
    model = nn.ModuleDict({
        "vgg": BasisConv2d(8, 4, 3, 4, 6, mid=norm_act(), post=norm_act()),
        "first": BasisConv2d(4, 4, 3, 4, 6, basis=shared),
        "last": BasisConv2d(4, 4, 3, 4, 6, basis=shared, inverse_index=True),
    })
    reference = {"vgg.weight": torch.randn(4, 8, 3, 3), "first.weight": torch.randn(4, 4, 3, 3),
                 "last.weight": torch.randn(4, 4, 3, 3)}
    loss = approximation_loss(model, reference, basis_weight=0.5)
    weights = {k[:-len(".weight")]: v for k, v in reference.items()}
    torch.testing.assert_close(loss, official_formula(model, weights, 1.0, 0.5))
    loss.backward()
    assert shared.weight.grad[:, :4].abs().sum() > 0 and shared.weight.grad[:, 4:].abs().sum() > 0


def test_errors_name_the_layer():
    model, reference = converted(5)
    with pytest.raises(ValueError, match="no BasisConv2d layer"):
        approximation_loss(reference, reference)
    with pytest.raises(ValueError, match="no dense weight for basis layer '4'"):
        approximation_loss(model, {"2.weight": reference[2].weight})
    with pytest.raises(ValueError, match="the reference model has ReLU at '2'"):
        approximation_loss(model, nn.Sequential(nn.Identity(), nn.Identity(), nn.ReLU()))
    with pytest.raises(ValueError, match="the reference model has nothing at '2'"):
        approximation_loss(model, nn.Sequential())
    with pytest.raises(ValueError, match=r"layer '2' composes filters of shape \(8, 8, 3, 3\), "
                                         r"the reference has \(8, 8, 1, 1\)"):
        approximation_loss(model, {"2": torch.zeros(8, 8, 1, 1), "4": reference[4].weight})
    dense = nn.ModuleDict({"d": BasisConv2d(4, 4, 3, 4, 6, kernel_size2=3)})
    with pytest.raises(ValueError, match="layer 'd': .* 3x3 projection does not compose"):
        approximation_loss(dense, {"d": torch.zeros(4, 4, 3, 3)})


def test_reference_on_another_dtype_is_cast():
    model, reference = converted(36)
    loss = approximation_loss(model.float(), reference)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, approximation_loss(model, copy.deepcopy(reference).float()))
    assert F.mse_loss(model[2].composed_weight(), reference[2].weight.float()) < 1e-10
