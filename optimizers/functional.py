"""The Muon update, in one place: `muon_update`, a pure function over buckets of same-shaped matrices.

Per bucket, as the reference Muon's ``muon_update(grad, momentum, beta, ns_steps, nesterov)``: momentum ->
Nesterov blend -> orthogonalize (backend, Newton–Schulz form, compute dtype) -> optional NorMuon row
normalization -> scale -> apply (decoupled weight decay, then the update). Every option is read from the
param group it is given, so a new group option reaches the update without plumbing. One process, per-block
row views (`Muon._per_block_step`), DDP and FSDP2 all call it; `optimizers.distributed` only passes a
`Route`, which chooses the matrices this rank orthogonalizes and moves the bytes.

The AdamW kernels live in `optimizers.adamw` (re-exported here).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

import torch
from torch import Tensor

from optimizers.adamw import FUSED_MIN_NUMEL, adamw_, adamw_8bit_  # noqa: F401  (re-exported)
from optimizers.newton_schulz import Workspace, iterate_, wide_normalized_
from optimizers.orthogonalize import get_backend, polynomial_plan
from optimizers.precision import resolve_dtype

ADJUST_LR = ("original", "match_rms_adamw", "none")
NORMUON_EPS = 1e-10  # NorMuon's reference value; only guards rows whose update is exactly zero


class UpdateOption(NamedTuple):
    default: Any
    valid: Any  # value -> bool
    expected: str  # what a valid value is, for the one-line error


#: Muon group options that only this update reads, declared beside it: `Muon`, `create_muon_optimizer` and
#: ``mamba-train`` (a ``configs.settings.MuonArguments`` field of the same name) take them by name, and
#: `optimizers.groups` checks them. A new knob is an entry here, its use below, that field, and a test.
UPDATE_OPTIONS: dict[str, UpdateOption] = {
    # Cautious weight decay (Chen et al. 2025, arXiv 2510.12402): decay only the entries where the update moves
    # the weight the way decay would (sign(update) == sign(weight)); off by default until the convergence bench
    # says otherwise
    "cautious_wd": UpdateOption(False, lambda v: isinstance(v, bool), "True or False"),
}


def option(group: Mapping[str, Any], name: str) -> Any:
    """``group[name]``, or the option's default for groups saved before the option existed."""
    return group.get(name, UPDATE_OPTIONS[name].default)


def momentum_at_step(step: int, start: float = 0.85, end: float = 0.95, warmup_steps: int = 300) -> float:
    """Muon momentum warmup: linear from ``start`` at step 0 to ``end`` at ``warmup_steps``, then constant.

    >>> momentum_at_step(0), round(momentum_at_step(150), 6), momentum_at_step(10_000)
    (0.85, 0.9, 0.95)
    """
    if warmup_steps <= 0:
        return end
    frac = min(max(step, 0) / warmup_steps, 1.0)
    return start + frac * (end - start)


def update_scale(shape: Sequence[int], adjust_lr: str) -> float:
    """Multiplier on lr for a matrix with ``shape[-2]`` rows (fan-out) and ``shape[-1]`` columns (fan-in).

    "original": √max(1, rows/cols) (KellerJordan/Muon and torch.optim.Muon's "original"): keeps the
    update's RMS-to-RMS operator norm equal for tall matrices. "match_rms_adamw": 0.2·√max(rows, cols)
    (Moonshot, "Muon is Scalable"): update RMS ≈ 0.2, like AdamW, so AdamW's lr and wd carry over.
    "none": 1.
    """
    rows, cols = shape[-2], shape[-1]
    if adjust_lr == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def normuon_(O: Tensor, second_moment: Tensor, beta2: float) -> Tensor:
    """NorMuon (Li et al. 2025, arXiv:2510.05491), in place on an orthogonalized batch O (..., m, n).

    Keeps an EMA (no bias correction, as the reference) of each row's mean square — one value per
    output neuron, ``second_moment`` (..., m, 1), fp32 — divides every row by its root, then rescales
    each matrix back to its pre-normalization Frobenius norm, so only the direction changes and lr keeps
    its meaning.
    """
    norm_before = torch.linalg.vector_norm(O, dim=(-2, -1), keepdim=True)
    second_moment.lerp_(O.square().mean(dim=-1, keepdim=True), 1 - beta2)
    O.div_(second_moment.sqrt().add_(NORMUON_EPS))
    norm_after = torch.linalg.vector_norm(O, dim=(-2, -1), keepdim=True)
    return O.mul_(norm_before / norm_after.add_(NORMUON_EPS))


class Bucket(NamedTuple):
    """k same-shaped matrices of one Muon group, as the update reads and writes them. Every list holds k tensors
    of one layout: whole parameters, row views of a fused projection (per-block; an interleaved block is a
    (pieces, rows/pieces, cols) view), or FSDP2 local shards."""

    params: list[Tensor]  # updated in place
    grads: list[Tensor]
    bufs: list[Tensor]  # momentum buffers, updated in place
    shape: tuple[int, ...]  # the matrix (or stack of matrices) each element is orthogonalized and scaled as
    moments: list[Tensor] | None = None  # NorMuon's second moments (..., m, 1), when the group sets beta2

    def add(self, param: Tensor, grad: Tensor, buf: Tensor, moment: Tensor | None = None) -> None:
        self.params.append(param)
        self.grads.append(grad)
        self.bufs.append(buf)
        if self.moments is not None:
            self.moments.append(moment)


class Route(Protocol):
    """How a group's buckets travel between processes (`optimizers.distributed`); ``route=None``: one process."""

    def gather(self, blended: list[Tensor]) -> list[Tensor]:
        """Per bucket, the blended (k, *grad shape) batch -> the whole matrices this rank orthogonalizes."""

    def scatter(self, updates: list[Tensor]) -> list[Sequence[Tensor]]:
        """Per bucket, this rank's orthogonalized matrices -> the update of every matrix, in the bucket's layout."""


def muon_update(group: Mapping[str, Any], buckets: Sequence[Bucket], *, ws: Workspace | None = None,
                route: Route | None = None) -> None:
    """One Muon step of ``buckets`` under the options of ``group`` (momentum, nesterov, backend, ns_steps,
    compute_dtype, ns_method, beta2, adjust_lr, fan_in_first, lr, weight_decay, decoupled_wd).

    One process (``route=None``): bucket by bucket, through the workspace ``ws`` — the blend is written straight
    into a stacked batch in the compute dtype and the wide orientation, orthogonalized in place and never cast
    back: adding it to the parameters promotes, exactly as torch.optim.Muon does. With a `Route`: every bucket is
    blended (in the gradients' layout), the route hands this rank the matrices it orthogonalizes, and hands back
    every matrix's update; the rest (NorMuon, scale, apply) then runs on every rank.
    """
    if route is None:  # one bucket at a time: the workspace holds one batch, valid until the next bucket's
        for b in buckets:
            _apply(group, b, _orthogonalized(group, _blend(group, b.grads, b.bufs, b.shape, ws), _tall(b.shape), ws))
        return
    batches = route.gather([_blend(group, b.grads, b.bufs, b.shape, wide=False) for b in buckets])
    results = [_orthogonalized(group, _wide(X, resolve_dtype(group["compute_dtype"], X.device)), _tall(X.shape))
               for X in batches]
    for b, updates in zip(buckets, route.scatter(results)):
        _apply(group, b, updates)


def _wide(X: Tensor, dtype: torch.dtype) -> Tensor:
    """A gathered batch as the iteration wants it: contiguous, wide orientation, compute dtype (one copy at most;
    a transposed view would reach every GEMM with transposed strides, and round differently)."""
    X = X.mT if _tall(X.shape) else X
    if X.dtype == dtype and X.is_contiguous():
        return X
    return torch.empty(X.shape, dtype=dtype, device=X.device).copy_(X)


def _tall(shape: Sequence[int]) -> bool:
    return shape[-2] > shape[-1]


def _blend(group: Mapping[str, Any], grads: list[Tensor], bufs: list[Tensor], shape: Sequence[int],
           ws: Workspace | None = None, *, wide: bool = True) -> Tensor:
    """Momentum on ``bufs`` (in place), then the k matrices to orthogonalize stacked in the compute dtype: with
    ``wide`` as (k, *wide shape), tall matrices transposed (what the iteration runs on); else (k, *grad shape)."""
    dtype = resolve_dtype(group["compute_dtype"], grads[0].device)
    device, tall = grads[0].device, wide and _tall(shape)
    layout = (*shape[:-2], shape[-1], shape[-2]) if tall else tuple(shape if wide else grads[0].shape)
    U = ws.get("U", (len(grads), *layout), dtype, device) if ws else torch.empty((len(grads), *layout), dtype=dtype,
                                                                                    device=device)
    # tall: blend into a contiguous scratch in the parameter's orientation, then one transposing copy in the
    # compute dtype — 4.8x faster on CPU than writing the blend through transposed views (24 x 2192x512 bf16:
    # 24 ms vs 116 ms); same bits
    scratch = (ws.get("scratch", shape, dtype, device) if ws else torch.empty(shape, dtype=dtype, device=device)) \
        if tall else None
    return _momentum_into(U, grads, bufs, momentum=group["momentum"], nesterov=group["nesterov"], scratch=scratch)


def _momentum_into(U: Tensor, grads: list[Tensor], bufs: list[Tensor], *, momentum: float, nesterov: bool,
                   scratch: Tensor | None = None) -> Tensor:
    """The momentum EMA on ``bufs`` (in place: buf <- momentum·buf + (1-momentum)·grad, as torch.optim.Muon and
    KellerJordan/Muon), then each matrix to orthogonalize written into a row of ``U`` (Nesterov:
    grad.lerp(buf, momentum); else the buffer), in ``U``'s dtype. With ``scratch`` (a contiguous matrix of the
    bucket's shape) ``U`` holds the transposes: each blend goes to the scratch, then one transposing copy."""
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    for g, b, u in zip(grads, bufs, U.unbind(0)):
        dst = (u if scratch is None else scratch).view(g.shape)  # a row view may be (pieces, rows, cols)
        torch.lerp(g, b, momentum, out=dst) if nesterov else dst.copy_(b)
        if scratch is not None:
            u.copy_(scratch.mT)
    return U


def _orthogonalized(group: Mapping[str, Any], U: Tensor, tall: bool, ws: Workspace | None = None) -> Tensor:
    """One batched orthogonalization of a contiguous wide batch U (k, ..., m, n) in the compute dtype (may be
    overwritten): the (k, *shape) results in that dtype, tall ones as transposed views. With a workspace the
    result lives there, valid until the next call with it."""
    if U.shape[0] == 0:  # a rank that owns no matrix of this bucket
        return U.mT if tall else U
    plan = polynomial_plan(group["backend"], group["ns_steps"])
    if plan is None:  # cayley: its own normalization and dtype handling
        O = get_backend(group["backend"])(U, group["ns_steps"]).to(U.dtype)
    else:
        schedule, scale = plan
        # always one batched call, even for k = 1: bmm's per-matrix result does not depend on the batch
        # size, so a rank orthogonalizing a subset of a bucket (optimizers.distributed) gets the same bits
        X = U.reshape(-1, *U.shape[-2:])
        O = iterate_(wide_normalized_(X, scale), schedule, group["ns_method"], ws).reshape(U.shape)
    return O.mT if tall else O


def _apply(group: Mapping[str, Any], b: Bucket, O: Tensor | Sequence[Tensor]) -> None:
    """NorMuon (if the group sets beta2), then per matrix decay and add ``-lr·scale·update``."""
    if group["beta2"] is not None:
        V = torch.stack(b.moments)
        O = normuon_((O if isinstance(O, Tensor) else torch.stack(list(O))).float(), V, group["beta2"])
        torch._foreach_copy_(b.moments, list(V.unbind(0)))
    shape = b.shape  # fan_in_first: stored (in, out), as transformers' Conv1D; the map's (out, in) shape scales
    map_shape = (*shape[:-2], shape[-1], shape[-2]) if group["fan_in_first"] else shape
    lr, wd = group["lr"], group["weight_decay"]
    alpha = -lr * update_scale(map_shape, group["adjust_lr"])
    decay = 1 - lr * wd if wd and group["decoupled_wd"] else None  # with the unscaled lr, as torch.optim.Muon
    # per tensor, decay then add, torch.optim.Muon's two ops: the tensor is still in cache for the second, and
    # adding the compute-dtype update promotes it without a separate cast pass
    cautious = decay is not None and option(group, "cautious_wd")
    for p, o in zip(b.params, O.unbind(0) if isinstance(O, Tensor) else O):
        o = o.reshape(p.shape)
        if cautious:  # p -= lr·wd·p where the step (-o) and the decay (-p) point the same way
            p.sub_(p * (o * p >= 0), alpha=lr * wd)
        elif decay is not None:
            p.mul_(decay)
        p.add_(o, alpha=alpha)


# ------------------------------------------------------------------ the update's parts, for tests and benchmarks

def muon_momentum_(grads: list[Tensor], bufs: list[Tensor], *, momentum: float, nesterov: bool) -> Tensor:
    """The momentum step alone: updates ``bufs`` in place and returns the stacked (k, *shape) matrices to
    orthogonalize, in the grads' dtype."""
    U = torch.empty((len(grads), *grads[0].shape), dtype=grads[0].dtype, device=grads[0].device)
    return _momentum_into(U, grads, bufs, momentum=momentum, nesterov=nesterov)


def muon_bucket_update(grads: list[Tensor], bufs: list[Tensor], *, momentum: float, nesterov: bool,
                       backend, ns_steps: int | None, compute_dtype, method: str = "auto",
                       ws: Workspace | None = None) -> Tensor:
    """`muon_update`'s momentum and orthogonalization of one bucket, without scale and apply: the (k, *shape)
    updates in the compute dtype (tall matrices as transposed views of a wide result)."""
    group = dict(momentum=momentum, nesterov=nesterov, backend=backend, ns_steps=ns_steps,
                 compute_dtype=compute_dtype, ns_method=method)
    shape = tuple(grads[0].shape)
    return _orthogonalized(group, _blend(group, grads, bufs, shape, ws), _tall(shape), ws)
