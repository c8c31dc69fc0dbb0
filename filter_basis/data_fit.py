"""Fit a basis model to what its trained dense baseline *computes* on calibration data.

:mod:`filter_basis.init_from_dense` fits the basis layers to the dense *filters*; here every part of the
basis model is fitted to reproduce the dense network's activations on a few calibration batches
(``--basis_fit data``, see docs/compressing.md):

1. **Bases** from the dense network's inputs: for every basis the filter splits of all the layers that
   share it are whitened by the (split-averaged) covariance of the input patches each layer sees, and the
   basis is the top of that spectrum mapped back (:func:`whitened_basis`).  Filters that never see signal
   cost nothing; those carrying it are kept.
2. **Units in network order**, each on the inputs produced by the already-fitted earlier units (so each
   also corrects the error it inherits), against the dense network's activation at the same place:

   - ``linear`` basis layers (a dense convolution in disguise): the projection by least squares on the
     data, in closed form (exact at full rank, as the weights fit is);
   - ``layer``: a basis layer with BatchNorm/activations inside or a ``k x k`` projection, whose dense
     counterpart is one convolution (maybe followed by its activation): SVD start, inner BatchNorm set
     from the data so that the activation passes the signal, PReLUs only basis layers use set to slope 1,
     least-squares projection, then a bounded number of Adam steps on the unit's output error;
   - ``block``: a module whose insides differ from the dense module at the same path (DenseNet_Basis'
     residual transitions, SRResNet_Basis --bn_every blocks): SVD start of its basis layers, then Adam
     steps on the block's output error;
   - ``norm``: a BatchNorm the baseline does not have (VGG_Basis' plain layers): the identity of its data.

   Every step keeps the better of start and fit, so a unit's output error never rises.  Parameters shared
   with modules outside a unit (a stage basis, SRResNet's PReLU) are left as they are while it is fitted.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import decompose
from .layers.basis_conv import Basis, BasisConv2d

Forward = Callable[[nn.Module, torch.Tensor], object]
NORMS = nn.modules.batchnorm._BatchNorm
SHIFT = 3.0  # inner BatchNorm outputs are moved this many standard deviations up, past the ReLU's knee
STEPS = 100  # default Adam steps per non-linear unit
CACHE_BYTES = 1 << 30  # dense-model outputs captured ahead of the units that fit them, at most
LR = 1e-3


def _call(model: nn.Module, x: torch.Tensor):
    return model(x)


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


# ---------------------------------------------------------------------------- where things are
def _modules_by_path(model: nn.Module) -> Dict[str, nn.Module]:
    return dict(model.named_modules())


def _get(model: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _same_geometry(layer: BasisConv2d, conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.groups == 1
        and tuple(conv.weight.shape)
        == (layer.out_channels, layer.in_channels, layer.kernel_size, layer.kernel_size)
        and tuple(conv.stride) == tuple(layer.stride)
        and tuple(conv.padding) == tuple(layer.padding)
    )


def _parameter_free(module: nn.Module) -> bool:
    return not any(True for _ in module.parameters()) and not any(True for _ in module.buffers())


def _internal_acts(model: nn.Module) -> set:
    """ids of the PReLU modules used only inside basis layers' mid/post slots (safe to set to slope 1)."""
    uses: Dict[int, List[bool]] = {}
    slots = set()
    for path, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, BasisConv2d):
            slots.update(f"{path}.{s}" for s in ("mid", "post"))
    for path, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, nn.PReLU):
            uses.setdefault(id(m), []).append(any(path.startswith(s + ".") for s in slots))
    return {key for key, inside in uses.items() if all(inside)}


def _post_can_be_identity(layer: BasisConv2d, internal: set) -> bool:
    if layer.post is None:
        return True
    for m in layer.post.modules():
        if isinstance(m, nn.PReLU) and id(m) not in internal:
            return False
        if isinstance(m, (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU)):
            return False
    return True


@dataclass
class Unit:
    """One piece of the basis model fitted against the module at the same path of the baseline."""

    path: str
    kind: str  # linear, layer, block, norm
    dense: Optional[nn.Conv2d] = None  # the dense convolution (linear, layer)
    after: Optional[nn.Module] = None  # what follows it in the dense module (layer: its ReLU)
    inner: Dict[str, Optional[nn.Conv2d]] = field(default_factory=dict)  # block: basis layer -> dense conv


def plan_units(model: nn.Module, baseline: nn.Module, skip: Sequence[str] = ()) -> List[Unit]:
    """The units of ``model`` (registration order) that :func:`fit_by_data` fits, or ValueError saying in
    one line what cannot be fitted and why.  ``skip``: state_dict keys copied from the baseline already."""
    ours = _modules_by_path(model)
    internal = _internal_acts(model)
    units: Dict[str, Unit] = {}
    blocks: List[str] = []

    def enclosing(path: str, why: str) -> str:
        parts = path.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:cut])
            theirs = _get(baseline, parent)
            if theirs is not None and not isinstance(theirs, (nn.ModuleList, nn.ModuleDict)):
                return parent
        raise ValueError(
            f"{path!r} cannot be fitted: {why}, and no module enclosing it has a counterpart "
            f"in the dense baseline"
        )

    for path, layer in ours.items():
        if not isinstance(layer, BasisConv2d):
            continue
        theirs = _get(baseline, path)
        conv, after = None, None
        if theirs is not None and _same_geometry(layer, theirs):
            conv = theirs
        elif (
            isinstance(theirs, nn.Sequential)
            and len(theirs)
            and _same_geometry(layer, theirs[0])
            and all(_parameter_free(m) for m in list(theirs)[1:])
        ):
            conv, after = theirs[0], nn.Sequential(*list(theirs)[1:])
        if conv is not None and after is None and not _post_can_be_identity(layer, internal):
            why = "its output passes an activation the dense convolution does not have"
            blocks.append(enclosing(path, why))
        elif conv is not None:
            kind = "linear" if layer.is_linear and after is None else "layer"
            units[path] = Unit(path, kind, conv, after)
        else:
            found = "nothing" if theirs is None else type(theirs).__name__
            blocks.append(enclosing(path, f"the baseline has {found} there, not its convolution"))

    covered = set(units) | set(blocks)
    theirs_state = baseline.state_dict()
    for key, tensor in model.state_dict().items():
        if key in skip:
            continue
        owner = key.rsplit(".", 1)[0]
        if any(owner == p or owner.startswith(p + ".") for p in covered):
            continue
        source = theirs_state.get(key)
        if source is not None and source.shape == tensor.shape:
            continue
        if isinstance(ours.get(owner), Basis):
            continue
        module = ours.get(owner)
        if isinstance(module, NORMS):
            units[owner] = Unit(owner, "norm")
        else:
            found = "nothing" if source is None else f"shape {tuple(source.shape)}"
            blocks.append(enclosing(owner, f"the baseline has {found} under {key!r}"))
        covered = set(units) | set(blocks)

    for block in sorted(set(blocks), key=len):  # outermost first; units inside a block belong to it
        if any(block.startswith(b + ".") for b in blocks if b != block):
            continue
        for path in [p for p in units if p == block or p.startswith(block + ".")]:
            del units[path]
        inner_layers = [
            p for p, m in ours.items() if isinstance(m, BasisConv2d) and p.startswith(block + ".")
        ]
        convs = [m for m in _get(baseline, block).modules() if type(m) is nn.Conv2d]
        inner: Dict[str, Optional[nn.Conv2d]] = {}
        for p in inner_layers:  # pair by order and geometry
            match = next((c for c in convs if _same_geometry(ours[p], c)), None)
            if match is not None:
                convs.remove(match)
            inner[p] = match
        units[block] = Unit(block, "block", inner=inner)
    order = {p: i for i, p in enumerate(ours)}
    return sorted(units.values(), key=lambda u: order[u.path])


def dense_convs(units: Sequence[Unit]) -> Dict[str, Optional[nn.Conv2d]]:
    """``{basis layer path: its dense convolution (None: none found)}`` over all units."""
    out: Dict[str, Optional[nn.Conv2d]] = {}
    for unit in units:
        if unit.kind in ("linear", "layer"):
            out[unit.path] = unit.dense
        out.update(unit.inner)
    return out


# ---------------------------------------------------------------------------- capturing activations
def _capture(model: nn.Module, module: nn.Module, x: torch.Tensor, forward: Forward, output: bool):
    """The first input (or output) of ``module`` in a forward pass of ``model`` on ``x``."""
    box = {}

    def pre(_, args):
        box["v"] = args[0]
        raise _Stop

    def post(_, args, out):
        box["v"] = out
        raise _Stop

    handle = module.register_forward_hook(post) if output else module.register_forward_pre_hook(pre)
    try:
        forward(model, x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "v" not in box:
        raise ValueError(f"{type(module).__name__} was not called by the forward pass")
    return box["v"].detach()


def call_order(
    model: nn.Module, paths: Iterable[str], x: torch.Tensor, forward: Forward = _call
) -> List[str]:
    """``paths`` in the order a forward pass of ``model`` first calls them (never-called ones last)."""
    paths = list(paths)
    seen: List[str] = []
    handles = []
    for path in paths:

        def hook(_, args, path=path):
            if path not in seen:
                seen.append(path)

        handles.append(model.get_submodule(path).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return seen + [p for p in paths if p not in seen]


# ---------------------------------------------------------------------------- bases
def _patches(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``(positions, C * k * k)`` input patches of ``conv`` (channel-major, as its weight is flattened)."""
    cols = F.unfold(
        x.double(), conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride
    )
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def split_covariances(
    baseline: nn.Module,
    convs: Dict[str, nn.Conv2d],
    split: Dict[str, int],
    batches: Sequence[torch.Tensor],
    forward: Forward = _call,
) -> Dict[str, torch.Tensor]:
    """Per dense conv, the covariance of its input patches averaged over its channel splits (float64)."""
    sums: Dict[str, list] = {p: [None, None, 0] for p in convs}
    handles = []
    for path, conv in convs.items():

        def hook(module, args, path=path):
            b = split[path]
            rows = _patches(args[0], module)
            rows = rows.reshape(rows.shape[0], -1, b * module.kernel_size[0] * module.kernel_size[1])
            rows = rows.reshape(-1, rows.shape[-1])  # every split's patch is a sample
            acc = sums[path]
            acc[0] = rows.T @ rows if acc[0] is None else acc[0] + rows.T @ rows
            acc[1] = rows.sum(0) if acc[1] is None else acc[1] + rows.sum(0)
            acc[2] += rows.shape[0]

        handles.append(conv.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for x in batches:
                forward(baseline, x)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for path, (xx, s, n) in sums.items():
        if n:
            mean = s / n
            out[path] = xx / n - torch.outer(mean, mean)
    return out


def _cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Lower factor ``L`` with ``L L^T = cov + ridge`` (a small ridge keeps it invertible)."""
    d = cov.shape[0]
    ridge = 1e-4 * float(cov.trace()) / d + 1e-12
    return torch.linalg.cholesky(cov + ridge * torch.eye(d, dtype=cov.dtype, device=cov.device))


def _top_right_singular(matrix: torch.Tensor) -> tuple:
    """``(singular values descending, right-singular vectors as rows)`` through the smaller Gram matrix's
    eigendecomposition (much cheaper than an SVD of a wide or tall float64 matrix on the CPU)."""
    rows, cols = matrix.shape
    if rows >= cols:
        eigenvalues, vectors = torch.linalg.eigh(matrix.T @ matrix)
        order = eigenvalues.flip(0).clamp_min(0)
        return order.sqrt(), vectors.flip(1).T
    eigenvalues, left = torch.linalg.eigh(matrix @ matrix.T)
    values = eigenvalues.flip(0).clamp_min(0).sqrt()
    left = left.flip(1)
    keep = values > values[0] * 1e-12 if values.numel() else values > 0
    vh = (left[:, keep].T @ matrix) / values[keep, None]
    return values, vh


def whitened_basis(
    weights: Sequence[torch.Tensor], covs: Sequence[Optional[torch.Tensor]], basis_size: int, n_basis: int
) -> tuple:
    """``(basis (n_basis, b, k, k), spectrum)``: the filters minimising the output error of all splits of
    ``weights`` for inputs of covariance ``covs`` (one per weight, pooled in shape, weighted by scale).

    With no covariance (``None``) this is :func:`decompose.fit_basis` (the weights fit)."""
    kh, kw = weights[0].shape[-2:]
    d = basis_size * kh * kw
    rows = [decompose.split_rows(w.detach().double(), basis_size).reshape(-1, d) for w in weights]
    if any(c is None for c in covs):
        stacked = torch.cat(rows)
        return decompose.fit_basis(weights, basis_size, n_basis), torch.linalg.svdvals(stacked)
    scales = [float(c.trace()) / d for c in covs]
    shape = sum(c / max(s, 1e-300) for c, s in zip(covs, scales)) / len(covs)
    # ||(W - P B) L||^2 = output error for inputs of covariance L L^T: the top right-singular vectors of
    # W L, mapped back by L^-1, are the basis
    factor = _cholesky(shape)
    stacked = torch.cat([r * math.sqrt(max(s, 0.0)) for r, s in zip(rows, scales)]) @ factor
    values, vh = _top_right_singular(stacked)
    basis = torch.zeros(n_basis, d, dtype=torch.float64, device=stacked.device)
    m = min(n_basis, vh.shape[0])
    basis[:m] = torch.linalg.solve_triangular(factor, vh[:m], upper=False, left=False)
    basis[:m] /= basis[:m].norm(dim=1, keepdim=True).clamp_min(1e-300)
    return basis.reshape(n_basis, basis_size, kh, kw).to(weights[0].dtype), values


# ---------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class UnitFit:
    path: str
    kind: str
    error_start: float  # relative output error of the start (weights fit / SVD start)
    error_fit: float  # after the data fit
    steps: int = 0


@dataclass
class DataFitReport:
    units: List[UnitFit]
    bases: List[dict]
    copied: int
    batches: int
    # --fit_rounds: per round, the mean relative output error of the linear layers before the round and
    # after its basis steps and projection refit ({"round", "before", "after", "steps"})
    rounds: List[dict] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(u.error_fit < 1e-5 for u in self.units if u.kind != "norm")

    def to_dict(self) -> dict:
        return {
            "fit": "data",
            "calibration_batches": self.batches,
            "copied_tensors": self.copied,
            "bases": self.bases,
            "units": [vars(u) for u in self.units],
            "rounds": self.rounds,
        }

    def lines(self) -> List[str]:
        out = [
            f"basis_init: data fit on {self.batches} calibration batches, {len(self.units)} units, "
            f"{self.copied} tensors copied (relative output error: start -> fitted)"
        ]
        out += [
            f"  basis {b['name']}: {b['n_basis']} filters ({len(b['layers'])} layer(s))" for b in self.bases
        ]
        out += [
            f"    {u.path} [{u.kind}]: {u.error_start:.4f} -> {u.error_fit:.4f}"
            + (f" ({u.steps} Adam steps)" if u.steps else "")
            for u in self.units
        ]
        out += [
            f"  refinement round {r['round']}: mean linear output error {r['before']:.4f} -> {r['after']:.4f}"
            f" ({r['steps']} Adam steps on the bases, projections refitted)"
            for r in self.rounds
        ]
        return out


# ---------------------------------------------------------------------------- least squares on pixels
def normal_equations(pairs: Iterable, constant: bool = False) -> tuple:
    """``(gram, cross, sum of squared targets)`` (float64) of the per-pixel regression of targets on inputs
    over ``pairs`` of ``(input (N, C, H, W), target (N, D, H, W))``; ``constant`` appends a column of ones
    to the inputs (a bias)."""
    gram = cross = None
    y_sq = 0.0
    for z, y in pairs:
        z = z.double().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if constant:
            z = torch.cat([z, torch.ones_like(z[:, :1])], 1)
        y = y.double().permute(0, 2, 3, 1).reshape(-1, y.shape[1])
        gram = z.T @ z if gram is None else gram + z.T @ z
        cross = y.T @ z if cross is None else cross + y.T @ z
        y_sq += float(y.square().sum())
    return gram, cross, y_sq


def relative_ridge(gram: torch.Tensor, relative: float, floor: float = 1e-30) -> float:
    """``relative`` times the mean diagonal of ``gram``, plus ``floor``."""
    return relative * float(gram.trace()) / gram.shape[0] + floor


def ridge_solve(gram: torch.Tensor, cross: torch.Tensor, ridge: float, prior=None) -> torch.Tensor:
    """``W`` minimising ``||Y - W Z||^2 + ridge ||W - prior||^2`` from :func:`normal_equations` (``prior``
    0 when not given)."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    right = cross if prior is None else cross + ridge * prior
    return torch.linalg.solve(gram + ridge * eye, right.T).T


def reduced_rank_fit(inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], rank: int) -> tuple:
    """``(up (D, rank), down (rank, C))`` (float64): the rank-``rank`` 1x1 map ``up @ down`` that best maps
    ``inputs`` (N, C, H, W) to ``targets`` (N, D, H, W) per pixel -- the least-squares map projected on the
    top principal directions of its fitted values (reduced-rank regression)."""
    gram, cross, _ = normal_equations(zip(inputs, targets))
    full = ridge_solve(gram, cross, relative_ridge(gram, 1e-6, floor=1e-12))
    _, vectors = torch.linalg.eigh(full @ gram @ full.T)  # covariance of the fitted values
    top = vectors[:, -rank:]
    return top, top.T @ full


# ---------------------------------------------------------------------------- the fit
def _relative(out: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> float:
    num = sum(float((o.double() - t.double()).square().sum()) for o, t in zip(out, target))
    den = sum(float(t.double().square().sum()) for t in target)
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def _channel_stats(tensors: Sequence[torch.Tensor]) -> tuple:
    n = sum(t.numel() // t.shape[1] for t in tensors)
    s = sum(t.double().transpose(0, 1).reshape(t.shape[1], -1).sum(1) for t in tensors)
    ss = sum(t.double().transpose(0, 1).reshape(t.shape[1], -1).square().sum(1) for t in tensors)
    mean = s / n
    return mean, (ss / n - mean.square()).clamp_min(0)


def _set_norm(norm: nn.Module, mean: torch.Tensor, var: torch.Tensor, shift: float = 0.0) -> None:
    """Running statistics from the data; affine so that eval output = input - mean + mean (or + shift sd)."""
    std = (var + norm.eps).sqrt()
    norm.running_mean.copy_(mean)
    norm.running_var.copy_(var)
    if norm.affine:
        norm.weight.copy_(std)
        norm.bias.copy_(std * shift if shift else mean)


def _norms(slot: Optional[nn.Module]) -> List[nn.Module]:
    return [] if slot is None else [m for m in slot.modules() if isinstance(m, NORMS)]


def _outside_params(model: nn.Module, path: str) -> set:
    out = set()
    for p, m in model.named_modules(remove_duplicate=False):
        if not (p == path or p.startswith(path + ".")):
            out.update(id(t) for t in m.parameters(recurse=False))
    return out


def _adam(module: nn.Module, params: List[nn.Parameter], inputs, targets, steps: int) -> int:
    if not params or steps <= 0:
        return 0
    opt = torch.optim.Adam(params, lr=LR)
    with torch.enable_grad():
        for step in range(steps):
            x, t = inputs[step % len(inputs)], targets[step % len(targets)]
            loss = (module(x) - t).square().mean() / t.square().mean().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return steps


def _refresh_norms(module: nn.Module, inputs) -> None:
    """Recompute every BatchNorm's running statistics from its real inputs, keeping the eval function."""
    norms = [m for m in module.modules() if isinstance(m, NORMS) and m.track_running_stats]
    if not norms:
        return
    seen: Dict[int, list] = {id(m): [] for m in norms}
    handles = [
        m.register_forward_pre_hook(lambda mod, args: seen[id(mod)].append(args[0].detach())) for m in norms
    ]
    try:
        for x in inputs:
            module(x)
    finally:
        for h in handles:
            h.remove()
    for m in norms:
        if not seen[id(m)]:
            continue
        mean, var = _channel_stats(seen[id(m)])
        mean, var = mean.to(m.running_mean), var.to(m.running_var)
        old_std = (m.running_var + m.eps).sqrt()
        new_std = (var + m.eps).sqrt()
        if m.affine:
            m.bias.add_(m.weight * (mean - m.running_mean) / old_std)
            m.weight.mul_(new_std / old_std)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)


@torch.no_grad()
def _svd_start(layer: BasisConv2d, dense: nn.Conv2d, shared_basis: bool) -> None:
    """Projection (centre tap for a k x k projection) by least squares to the dense filters for the
    layer's basis; the dense bias on the projection, zero basis bias."""
    basis = layer.basis_weight()
    if not shared_basis:
        basis = decompose.fit_basis([dense.weight], layer.basis_size, layer.n_basis).to(basis)
        layer.basis.weight.copy_(basis)
    proj = decompose.coefficients(dense.weight, basis.to(dense.weight))
    weight = layer.projection.weight
    weight.zero_()
    c = layer.kernel_size2 // 2
    weight[:, :, c, c] = proj.to(weight)
    if layer.projection.bias is not None:
        layer.projection.bias.copy_(
            dense.bias if dense.bias is not None else torch.zeros_like(weight[:, 0, 0, 0])
        )
    if layer.basis_bias is not None:
        layer.basis_bias.zero_()


class _Fitter:
    def __init__(self, model, baseline, batches, forward, steps):
        self.model, self.baseline, self.batches, self.forward, self.steps = (
            model,
            baseline,
            batches,
            forward,
            steps,
        )
        self.internal = _internal_acts(model)
        self.frozen_acts: set = set()
        self.targets: Dict[int, list] = {}
        self.teachers: List[nn.Module] = []  # the baseline modules whose outputs the units fit, in order

    def plan(self, units: Sequence[Unit]) -> None:
        for unit in units:
            if unit.kind in ("linear", "layer"):
                self.teachers.append(unit.dense)
            elif unit.kind == "block":
                self.teachers.append(self.baseline.get_submodule(unit.path))

    def inputs(self, module: nn.Module) -> list:
        return [_capture(self.model, module, x, self.forward, output=False) for x in self.batches]

    def dense_outputs(self, module: nn.Module) -> list:
        """The outputs of the baseline's ``module`` on every batch.  One partial pass over the batches
        captures them for this module and the modules of the next units too (up to ``CACHE_BYTES``), so
        a deep network is not run from its start once per unit."""
        if id(module) not in self.targets:
            self._fill_targets(module)
        return self.targets.pop(id(module))

    @torch.no_grad()
    def _fill_targets(self, first: nn.Module) -> None:
        ahead = self.teachers[self.teachers.index(first) :] if first in self.teachers else [first]
        per_batch = CACHE_BYTES / len(self.batches)
        found: List[dict] = []
        for x in self.batches:
            box: dict = {}
            used = [0]

            def post(module, args, out, box=box, used=used):
                if id(module) in box:
                    return
                if box and used[0] + out.numel() * out.element_size() > per_batch:
                    raise _Stop
                box[id(module)] = out.detach()
                used[0] += out.numel() * out.element_size()
                if len(box) == len(ahead):
                    raise _Stop

            handles = [m.register_forward_hook(post) for m in ahead]
            try:
                self.forward(self.baseline, x)
            except _Stop:
                pass
            finally:
                for h in handles:
                    h.remove()
            if id(first) not in box:
                raise ValueError(f"{type(first).__name__} was not called by the forward pass")
            found.append(box)
        for m in ahead:  # kept where every batch has it (a smaller last batch may reach further)
            if all(id(m) in box for box in found):
                self.targets[id(m)] = [box[id(m)] for box in found]

    @torch.no_grad()
    def norm(self, unit: Unit) -> UnitFit:
        norm = self.model.get_submodule(unit.path)
        mean, var = _channel_stats(self.inputs(norm))
        _set_norm(norm, mean.to(norm.running_mean), var.to(norm.running_var))
        return UnitFit(unit.path, "norm", 0.0, 0.0)

    @torch.no_grad()
    def linear(self, unit: Unit) -> UnitFit:
        layer: BasisConv2d = self.model.get_submodule(unit.path)
        conv = unit.dense
        w_proj = layer.projection.weight.detach().reshape(layer.out_channels, -1).double()
        bias = (
            conv.bias.detach().double()
            if conv.bias is not None
            else torch.zeros(layer.out_channels, dtype=torch.float64, device=w_proj.device)
        )
        w_aug = torch.cat([w_proj, bias[:, None]], 1)  # the weights fit, as (out, G*n + 1)
        saved_bias = None if layer.basis_bias is None else layer.basis_bias.detach().clone()
        if layer.basis_bias is not None:
            layer.basis_bias.zero_()
        gram, cross, y_sq = normal_equations(
            ((layer.basis_forward(x), y) for x, y in zip(self.inputs(layer), self.dense_outputs(conv))),
            constant=True,
        )

        def error(w):
            value = y_sq - 2 * float((w * cross).sum()) + float(((w @ gram) * w).sum())
            return math.sqrt(max(value, 0.0) / y_sq) if y_sq > 0 else 0.0

        start = error(w_aug)
        fitted = ridge_solve(gram, cross, relative_ridge(gram, 1e-7), prior=w_aug)
        after = error(fitted)
        if after > start:
            fitted, after = w_aug, start
            if saved_bias is not None:
                layer.basis_bias.copy_(saved_bias)
        layer.projection.weight.copy_(fitted[:, :-1].reshape(layer.projection.weight.shape))
        if layer.projection.bias is not None:
            layer.projection.bias.copy_(fitted[:, -1])
        return UnitFit(unit.path, "linear", start, after)

    def layer(self, unit: Unit, shared_basis: bool) -> UnitFit:
        layer: BasisConv2d = self.model.get_submodule(unit.path)
        after = unit.after if unit.after is not None else nn.Identity()
        with torch.no_grad():
            inputs = self.inputs(layer)
            pre = self.dense_outputs(unit.dense)
            targets = [after(t) for t in pre]
            _svd_start(layer, unit.dense, shared_basis=True)
            if layer.basis_bias is not None:
                layer.basis_bias.zero_()
            z = [layer.basis_forward(x) for x in inputs]
            for norm in _norms(layer.mid):  # SVD start: inner BatchNorm = identity on the data
                mean, var = _channel_stats(z)
                _set_norm(norm, mean.to(norm.running_mean), var.to(norm.running_var))
            self._identity_post(layer, inputs)
            layer.eval()
            start = _relative([layer(x) for x in inputs], targets)
            snapshot = copy.deepcopy(layer.state_dict())
            # data start: move the inner activations' input past their knee, internal PReLUs to slope 1
            for m in layer.mid.modules() if layer.mid is not None else []:
                if isinstance(m, nn.PReLU) and id(m) in self.internal:
                    m.weight.fill_(1.0)
            for norm in _norms(layer.mid):
                mean, var = _channel_stats(z)
                _set_norm(norm, mean.to(norm.running_mean), var.to(norm.running_var), shift=SHIFT)
            if layer.kernel_size2 == 1:
                self._least_squares_projection(layer, inputs, pre)
            else:
                self._compensate_shift(layer, inputs, pre)
            self._identity_post(layer, inputs)
            initial = _relative([layer(x) for x in inputs], targets)
            if initial <= start:  # the better of the SVD start and the data start goes on
                best, snapshot = initial, copy.deepcopy(layer.state_dict())
            else:
                best = start
                layer.load_state_dict(snapshot)
        outside = _outside_params(self.model, unit.path) | self.frozen_acts
        params = [
            p
            for p in layer.parameters()
            if id(p) not in outside and not (p is layer.basis.weight and shared_basis)
        ]
        params = [
            p
            for p in params
            if not any(
                p is m.weight for m in layer.modules() if isinstance(m, nn.PReLU) and id(m) in self.internal
            )
        ]
        steps = _adam(layer, params, inputs, targets, self.steps if best > 1e-6 else 0)
        with torch.no_grad():
            if steps:
                _refresh_norms(layer, inputs)
            fitted = _relative([layer(x) for x in inputs], targets)
            if fitted > best:
                layer.load_state_dict(snapshot)
                fitted = best
        self.frozen_acts |= {id(m.weight) for m in layer.modules() if isinstance(m, nn.PReLU)}
        return UnitFit(unit.path, "layer", start, fitted, steps)

    @torch.no_grad()
    def _identity_post(self, layer: BasisConv2d, inputs) -> None:
        if layer.post is None:
            return
        for m in layer.post.modules():
            if isinstance(m, nn.PReLU) and id(m) in self.internal:
                m.weight.fill_(1.0)
        norms = _norms(layer.post)
        if norms:
            y = []
            for x in inputs:
                h = layer.basis_forward(x)
                y.append(layer.projection(layer.mid(h) if layer.mid is not None else h))
            mean, var = _channel_stats(y)
            for norm in norms:
                _set_norm(norm, mean.to(norm.running_mean), var.to(norm.running_var))

    @torch.no_grad()
    def _mid_outputs(self, layer: BasisConv2d, inputs) -> list:
        out = []
        for x in inputs:
            h = layer.basis_forward(x)
            out.append(layer.mid(h) if layer.mid is not None else h)
        return out

    @torch.no_grad()
    def _least_squares_projection(self, layer: BasisConv2d, inputs, pre) -> None:
        gram, cross, _ = normal_equations(zip(self._mid_outputs(layer, inputs), pre), constant=True)
        current = layer.projection.weight.detach().reshape(layer.out_channels, -1).double()
        bias = (
            layer.projection.bias.detach().double()
            if layer.projection.bias is not None
            else torch.zeros(layer.out_channels, dtype=torch.float64, device=current.device)
        )
        prior = torch.cat([current, bias[:, None]], 1)
        ridge = relative_ridge(gram, 1e-6)  # (of the whole gram, the constant column included)
        if layer.projection.bias is None:  # no constant column to fit
            gram, cross, prior = gram[:-1, :-1], cross[:, :-1], prior[:, :-1]
        fitted = ridge_solve(gram, cross, ridge, prior=prior)
        layer.projection.weight.copy_(fitted[:, : current.shape[1]].reshape(layer.projection.weight.shape))
        if layer.projection.bias is not None:
            layer.projection.bias.copy_(fitted[:, -1])

    @torch.no_grad()
    def _compensate_shift(self, layer: BasisConv2d, inputs, pre) -> None:
        """A k x k projection: take the bias error of the shifted inner signal back (interior exact)."""
        if layer.projection.bias is None:
            return
        num = None
        count = 0
        for u, y in zip(self._mid_outputs(layer, inputs), pre):
            diff = (y - layer.projection(u)).double()
            num = diff.sum((0, 2, 3)) if num is None else num + diff.sum((0, 2, 3))
            count += diff.shape[0] * diff.shape[2] * diff.shape[3]
        layer.projection.bias.add_((num / count).to(layer.projection.bias))

    def refine(self, units: Sequence[Unit], groups, round_no: int, before: float) -> dict:
        """One round of alternating refinement of the linear layers: each basis whose layers are all
        linear takes Adam steps on the summed output error of its layers (inputs from the current model,
        projections fixed; kept only if that error falls), then every linear layer's projection is refitted
        by least squares in network order.  ``before``: the linear layers' mean output error as the round
        finds them.  Returns the round's record with every linear layer's error after it."""
        linear = {u.path: u for u in units if u.kind == "linear"}
        steps = 0
        for group in groups if self.steps > 0 else ():
            members = [p for p in group.layers if p in linear]
            if not members or len(members) != len(group.layers):
                continue
            layers = [self.model.get_submodule(p) for p in members]
            with torch.no_grad():
                inputs = [self.inputs(layer) for layer in layers]
                targets = [self.dense_outputs(linear[p].dense) for p in members]
                start = self._group_error(layers, inputs, targets)
                snapshot = group.basis.weight.detach().clone()
            opt = torch.optim.Adam([group.basis.weight], lr=LR)
            with torch.enable_grad():
                for step in range(self.steps):
                    i = step % len(self.batches)
                    loss = sum(
                        (layer(x[i]) - t[i]).square().mean() / t[i].square().mean().clamp_min(1e-12)
                        for layer, x, t in zip(layers, inputs, targets)
                    ) / len(layers)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            steps += self.steps
            with torch.no_grad():
                if self._group_error(layers, inputs, targets) > start:
                    group.basis.weight.copy_(snapshot)
        errors = {}
        for unit in units:  # projections on the inputs the refined bases now produce, in network order
            if unit.kind == "linear":
                errors[unit.path] = self.linear(unit).error_fit
        return {"round": round_no, "before": before, "after": sum(errors.values()) / len(errors),
                "steps": steps, "errors": errors}

    @torch.no_grad()
    def _group_error(self, layers, inputs, targets) -> float:
        """The summed squared relative output error of ``layers`` on their captured inputs."""
        return sum(
            _relative([layer(x) for x in xs], ts) ** 2 for layer, xs, ts in zip(layers, inputs, targets)
        )

    def block(self, unit: Unit, shared: set) -> UnitFit:
        block = self.model.get_submodule(unit.path)
        teacher = self.baseline.get_submodule(unit.path)
        with torch.no_grad():
            inputs = self.inputs(block)
            targets = self.dense_outputs(teacher)
            teacher_order = list(teacher.modules())
            theirs = [m for m in teacher_order if isinstance(m, NORMS)]
            done = set()
            for path, conv in unit.inner.items():
                if conv is None:
                    continue
                layer = self.model.get_submodule(path)
                _svd_start(layer, conv, shared_basis=id(layer.basis) in shared)
                # the norm after the dense conv becomes the layer's post norm; the mid one passes the signal
                following = [m for m in teacher_order[teacher_order.index(conv) :] if isinstance(m, NORMS)]
                for norm in _norms(layer.post)[:1]:
                    if following and following[0].num_features == norm.num_features:
                        norm.load_state_dict(following[0].state_dict())
                        theirs = [t for t in theirs if t is not following[0]]
                        done.add(id(norm))
                seen = [_capture(block, layer, x, _call, output=False) for x in inputs]
                z = [layer.basis_forward(x) for x in seen]
                for norm in _norms(layer.mid):
                    mean, var = _channel_stats(z)
                    _set_norm(norm, mean.to(norm.running_mean), var.to(norm.running_var), shift=SHIFT)
                    done.add(id(norm))
                self._compensate_shift(layer, seen, [conv(x) for x in seen])
            for norm in [m for m in block.modules() if isinstance(m, NORMS) and id(m) not in done]:
                match = next((t for t in theirs if t.num_features == norm.num_features), None)
                if match is not None and not any(
                    norm in lay.modules() for lay in block.modules() if isinstance(lay, BasisConv2d)
                ):
                    norm.load_state_dict(match.state_dict())
                    theirs.remove(match)
                    done.add(id(norm))
                    continue
                norm.reset_running_stats()
                if norm.affine:
                    norm.weight.fill_(1.0)
                    norm.bias.zero_()
            # a block that knows a closed-form start from its dense module (it sets its norms too)
            if getattr(block, "fit_start", None) is not None and block.fit_start(teacher, inputs):
                done |= {id(m) for m in block.modules() if isinstance(m, NORMS)}
            momenta = [(m, m.momentum) for m in block.modules() if isinstance(m, NORMS) and id(m) not in done]
            for m, _ in momenta:
                m.momentum = None
            if momenta:  # statistics of the norms nothing set, from the data (the set ones stay as they are)
                block.train()
                for m in block.modules():
                    if isinstance(m, NORMS) and id(m) in done:
                        m.eval()
                for x in inputs:
                    block(x)
            for m, momentum in momenta:
                m.momentum = momentum
            block.eval()
            start = _relative([block(x) for x in inputs], targets)
            snapshot = copy.deepcopy(block.state_dict())
        outside = _outside_params(self.model, unit.path)
        params = [p for p in block.parameters() if id(p) not in outside]
        steps = _adam(block, params, inputs, targets, self.steps if start > 1e-6 else 0)
        with torch.no_grad():
            _refresh_norms(block, inputs)
            fitted = _relative([block(x) for x in inputs], targets)
            if fitted > start:
                block.load_state_dict(snapshot)
                fitted = start
        return UnitFit(unit.path, "block", start, fitted, steps)


def matching_keys(model: nn.Module, baseline: nn.Module) -> set:
    """The state_dict keys :func:`copy_matching` copies (works on meta models)."""
    prefixes = [f"{p}." for p, m in model.named_modules() if isinstance(m, BasisConv2d)]
    bases = {id(m.weight) for m in model.modules() if isinstance(m, Basis)}
    theirs = baseline.state_dict()
    return {
        key
        for key, tensor in model.state_dict(keep_vars=True).items()
        if id(tensor) not in bases
        and not any(key.startswith(p) for p in prefixes)
        and key in theirs
        and theirs[key].shape == tensor.shape
    }


def copy_matching(model: nn.Module, baseline: nn.Module) -> set:
    """Copy every tensor outside basis layers and bases with an equal-shaped one under the same key;
    returns the keys copied."""
    prefixes = [f"{p}." for p, m in model.named_modules() if isinstance(m, BasisConv2d)]
    bases = {id(m.weight) for m in model.modules() if isinstance(m, Basis)}
    theirs = baseline.state_dict()
    copied = set()
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            if id(tensor) in bases or any(key.startswith(p) for p in prefixes):
                continue
            source = theirs.get(key)
            if source is not None and source.shape == tensor.shape:
                tensor.data.copy_(source)
                copied.add(key)
    return copied


def fit_by_data(
    model: nn.Module,
    baseline: nn.Module,
    batches: Sequence[torch.Tensor],
    forward: Forward = _call,
    steps: Optional[int] = None,
    rounds: int = 0,
) -> DataFitReport:
    """Fit every part of ``model`` to the activations of ``baseline`` on ``batches`` (in place; both in
    eval mode while fitting, ``model`` left in eval mode).  Raises ValueError naming what cannot be fitted.

    ``rounds`` > 0 then alternates the bases and projections of the linear layers that many times
    (:meth:`_Fitter.refine`): a basis shared by layers whose inputs differ, or fitted to pooled
    statistics, has no closed form; the projections do.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("the data fit needs at least one calibration batch")
    baseline.eval()
    model.eval()
    copied = copy_matching(model, baseline)
    units = plan_units(model, baseline, skip=copied)
    order = call_order(model, [u.path for u in units], batches[0], forward)
    units.sort(key=lambda u: order.index(u.path))
    convs = dense_convs(units)
    layers = {p: m for p, m in model.named_modules() if isinstance(m, BasisConv2d)}
    # 1. bases from the dense inputs
    from .init_from_dense import basis_groups

    groups = basis_groups(model)
    sliced_groups = {p for g in groups if any(layers[q].slices_basis for q in g.layers) for p in g.layers}
    # (a sliced basis is fitted to the zero-padded filters alone: no input statistics to gather for it)
    with_conv = {p: c for p, c in convs.items() if c is not None and p not in sliced_groups}
    covs = (
        split_covariances(baseline, with_conv, {p: layers[p].basis_size for p in with_conv}, batches, forward)
        if with_conv
        else {}
    )
    bases, shared = [], set()
    with torch.no_grad():
        for group in groups:
            members = [p for p in group.layers if convs.get(p) is not None]
            if len(group.layers) > 1:
                shared.add(id(group.basis))
            if not members:
                continue
            sliced = any(layers[p].slices_basis for p in members)
            if sliced:  # a slice of a wider basis: filters zero-padded to its width (first/last slice)
                width = group.basis.width
                weights = []
                for p in members:
                    w = convs[p].weight.detach()
                    g = layers[p].n_splits
                    w = w.reshape(w.shape[0], g, layers[p].basis_size, *w.shape[-2:])
                    pad = (
                        (0, 0, 0, 0, width - layers[p].basis_size, 0)
                        if layers[p].inverse_index
                        else (0, 0, 0, 0, 0, width - layers[p].basis_size)
                    )
                    weights.append(F.pad(w, pad).reshape(w.shape[0], g * width, *w.shape[-2:]))
                basis, values = whitened_basis(weights, [None] * len(weights), width, group.basis.n_basis)
            else:
                basis, values = whitened_basis(
                    [convs[p].weight for p in members],
                    [covs.get(p) for p in members],
                    group.basis.width,
                    group.basis.n_basis,
                )
            group.basis.weight.copy_(basis.to(group.basis.weight))
            bases.append(
                {
                    "name": group.name,
                    "layers": group.layers,
                    "n_basis": group.basis.n_basis,
                    "spectrum": [float(v) for v in values],
                }
            )
            for p in members:
                if layers[p].is_linear:
                    _svd_start(layers[p], convs[p], shared_basis=True)
    # 2. the units in network order, on the inputs the fitted earlier units produce
    fitter = _Fitter(model, baseline, batches, forward, STEPS if steps is None else steps)
    fitter.plan(units)
    fits = []
    for unit in units:
        if unit.kind == "norm":
            fits.append(fitter.norm(unit))
        elif unit.kind == "linear":
            fits.append(fitter.linear(unit))
        elif unit.kind == "layer":
            fits.append(fitter.layer(unit, shared_basis=id(layers[unit.path].basis) in shared))
        else:
            fits.append(fitter.block(unit, shared))
    refined = []
    for round_no in range(1, rounds + 1 if any(f.kind == "linear" for f in fits) else 1):
        # (each linear layer's error_fit is its error on the inputs the model now gives it: the units after
        # it do not change them)
        linear = [f.error_fit for f in fits if f.kind == "linear"]
        record = fitter.refine(units, groups, round_no, sum(linear) / len(linear))
        refined.append(record)
        errors = record.pop("errors")
        fits = [replace(f, error_fit=errors[f.path]) if f.path in errors else f for f in fits]
    model.eval()
    return DataFitReport(fits, bases, len(copied), len(batches), refined)
