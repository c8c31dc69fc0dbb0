"""Closed-form fitting of a filter basis to trained dense filters (truncated SVD / least squares).

A dense weight ``W`` of shape ``(C_out, G * b, k, k)`` is cut into ``G`` splits of ``b`` input channels.
Every split's filters are rows of length ``b * k * k``; stacking the rows of all splits (and of all the
convolutions that will share the basis) gives a matrix whose top right-singular vectors are the basis
minimising the total squared reconstruction error (Eckart-Young).  The coefficients of each split are
then its projection onto that orthonormal basis, which is the least-squares optimum for a fixed basis.
"""

from __future__ import annotations

from typing import Sequence

import torch


def split_rows(weight: torch.Tensor, basis_size: int) -> torch.Tensor:
    """``(C_out, G*b, k, k)`` -> ``(G, C_out, b*k*k)``: the filter rows of every split."""
    c_out, c_in, kh, kw = weight.shape
    if c_in % basis_size:
        raise ValueError(f"basis_size {basis_size} does not divide the {c_in} input channels")
    g = c_in // basis_size
    return weight.reshape(c_out, g, basis_size * kh * kw).transpose(0, 1)


def fit_basis(weights: Sequence[torch.Tensor], basis_size: int, n_basis: int) -> torch.Tensor:
    """The ``n_basis`` filters of shape ``(basis_size, k, k)`` that best span the splits of ``weights``.

    Rows beyond the rank of the stacked filters (``n_basis > basis_size * k * k``) are zero.
    """
    if not weights:
        raise ValueError("fit_basis needs at least one weight")
    kh, kw = weights[0].shape[-2:]
    rows = torch.cat([split_rows(w.detach().double(), basis_size).reshape(-1, basis_size * kh * kw)
                      for w in weights])
    if rows.shape[0] > rows.shape[1]:
        # Same right-singular vectors from the small triangular factor, without forming the tall U.
        rows = torch.linalg.qr(rows, mode="r").R
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    basis = torch.zeros(n_basis, basis_size * kh * kw, dtype=torch.float64, device=rows.device)
    m = min(n_basis, vh.shape[0])
    basis[:m] = vh[:m]
    return basis.reshape(n_basis, basis_size, kh, kw).to(weights[0].dtype)


def coefficients(weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Least-squares projection weights ``(C_out, G*n_basis)`` in split-major order.

    ``basis`` is ``(n_basis, b, k, k)``; the result ``P`` satisfies
    ``W[o, g*b + c] ~= sum_j P[o, g*n_basis + j] * basis[j, c]``.
    """
    n_basis, b = basis.shape[:2]
    rows = split_rows(weight.detach().double(), b)  # (G, C_out, b*k*k)
    g, c_out, d = rows.shape
    flat = basis.detach().double().reshape(n_basis, d)
    # One least-squares solve for the filter rows of all splits.  The pseudo-inverse handles
    # rank-deficient bases (zero filters beyond the rank) on every device, unlike CUDA's lstsq.
    sol = torch.linalg.pinv(flat.T) @ rows.reshape(g * c_out, d).T  # (n, G*C_out)
    return sol.reshape(n_basis, g, c_out).permute(2, 1, 0).reshape(c_out, g * n_basis).to(weight.dtype)


def compose(basis: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """The dense weight ``(C_out, G*b, k, k)`` that basis ``(n, b, k, k)`` and projection
    ``(C_out, G*n)`` represent together (split-major order)."""
    n_basis, b, kh, kw = basis.shape
    c_out = proj.shape[0]
    g = proj.shape[1] // n_basis
    return torch.einsum("ogj,jckl->ogckl", proj.reshape(c_out, g, n_basis), basis).reshape(
        c_out, g * b, kh, kw)


def relative_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """``||reference - approx||_F / ||reference||_F`` (0 for an all-zero reference)."""
    ref = reference.detach().double()
    norm = torch.linalg.vector_norm(ref)
    diff = torch.linalg.vector_norm(ref - approx.detach().double())
    return float(diff / norm) if norm > 0 else float(diff)
