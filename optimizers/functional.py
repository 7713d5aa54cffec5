"""The update math of `Muon`, as pure functions over lists of tensors (no optimizer state objects).

Muon side (per group): momentum -> (Nesterov) -> orthogonalize same-shaped matrices in one batched call
-> optional NorMuon row normalization -> scale -> apply. AdamW side: torch's fused AdamW kernel
(= ``torch.optim.AdamW(fused=True)``) for large tensors, foreach ops for small ones, or bitsandbytes'
blockwise 8-bit kernel.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from optimizers.newton_schulz import Workspace, iterate_, wide_normalized_
from optimizers.orthogonalize import get_backend, polynomial_plan
from optimizers.precision import resolve_dtype

ADJUST_LR = ("original", "match_rms_adamw", "none")
FUSED_MIN_NUMEL = 32768  # torch's parallel grain size: smaller tensors never use more than one thread anyway
NORMUON_EPS = 1e-10  # NorMuon's reference value; only guards rows whose update is exactly zero


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


def muon_momentum_(grads: list[Tensor], bufs: list[Tensor], *, momentum: float, nesterov: bool) -> Tensor:
    """Momentum for same-shaped matrices: updates ``bufs`` in place (EMA: buf <- momentum·buf +
    (1-momentum)·grad, as torch.optim.Muon and KellerJordan/Muon) and returns the stacked (k, *shape)
    matrices to orthogonalize (Nesterov: grad.lerp(buf, momentum); else the buffers), in the grads' dtype."""
    U = torch.empty((len(grads), *grads[0].shape), dtype=grads[0].dtype, device=grads[0].device)
    return _momentum_into(U, grads, bufs, momentum=momentum, nesterov=nesterov)


def _momentum_into(U: Tensor, grads: list[Tensor], bufs: list[Tensor], *, momentum: float, nesterov: bool,
                   scratch: Tensor | None = None) -> Tensor:
    """The momentum EMA on ``bufs`` (in place), then each matrix to orthogonalize written into a row of ``U``
    (Nesterov: grad.lerp(buf, momentum); else the buffer), in ``U``'s dtype. With ``scratch`` (a contiguous
    matrix of the grads' shape) ``U`` holds the transposes: each blend goes to the scratch, then one transposing
    copy into ``U``."""
    torch._foreach_lerp_(bufs, grads, 1 - momentum)
    for g, b, u in zip(grads, bufs, U.unbind(0)):
        dst = u if scratch is None else scratch
        torch.lerp(g, b, momentum, out=dst) if nesterov else dst.copy_(b)
        if scratch is not None:
            u.copy_(scratch.mT)
    return U


def muon_bucket_update(grads: list[Tensor], bufs: list[Tensor], *, momentum: float, nesterov: bool,
                       backend, ns_steps: int | None, compute_dtype, method: str = "auto",
                       ws: Workspace | None = None) -> Tensor:
    """Momentum, then one batched orthogonalization of k same-shaped matrices: the (k, *shape) updates in
    the compute dtype (tall matrices come back as transposed views of a wide result).

    The Nesterov blend is written straight into a stacked batch in the compute dtype and the wide orientation
    (one pass, no fp32 copy, no cast), normalized in place, iterated (plain or Gram, per shape), and never
    cast back: the caller adds it to the parameters, which promotes, exactly as torch.optim.Muon does.
    With a `Workspace` the batch and the scratch are reused across calls: the result is valid until the next
    call with the same workspace.
    """
    dtype = resolve_dtype(compute_dtype, grads[0].device)
    shape = grads[0].shape
    tall = shape[-2] > shape[-1]
    wide = (*shape[:-2], shape[-1], shape[-2]) if tall else tuple(shape)
    device = grads[0].device
    U = ws.get("U", (len(grads), *wide), dtype, device) if ws else torch.empty((len(grads), *wide), dtype=dtype,
                                                                                   device=device)
    # tall: blend into a contiguous scratch in the parameter's orientation, then one transposing copy in the
    # compute dtype — 4.8x faster on CPU than writing the blend through transposed views (24 x 2192x512 bf16:
    # 24 ms vs 116 ms); same bits
    scratch = (ws.get("scratch", shape, dtype, device) if ws else torch.empty(shape, dtype=dtype, device=device)) \
        if tall else None
    _momentum_into(U, grads, bufs, momentum=momentum, nesterov=nesterov, scratch=scratch)
    plan = polynomial_plan(backend, ns_steps)
    if plan is None:  # cayley: its own normalization and dtype handling
        O = get_backend(backend)(U, ns_steps).to(dtype)
    else:
        schedule, scale = plan
        # always one batched call, even for k = 1: bmm's per-matrix result does not depend on the batch
        # size, so a rank orthogonalizing a subset of a bucket (optimizers.distributed) gets the same bits
        X = U.reshape(-1, *wide[-2:])
        O = iterate_(wide_normalized_(X, scale), schedule, method, ws).reshape(U.shape)
    return O.mT if tall else O


def adamw_(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
           steps: list[Tensor], *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
           decoupled_wd: bool) -> None:
    """AdamW (bias-corrected, decoupled wd) or, with ``decoupled_wd=False``, Adam with L2 (wd·p added to
    the gradient). ``steps`` are 0-dim float32 tensors on the params' device, incremented here.

    Large tensors go through torch's fused kernel, exactly ``torch.optim.AdamW(fused=True)``: one memory
    pass instead of ~8. Small CPU tensors (norms, biases, SSM vectors) go through `_adamw_foreach`, exactly
    the default single-tensor ``torch.optim.AdamW``: the fused CPU kernel opens one thread-parallel region
    per tensor, and on a busy CPU each region can wait milliseconds for its threads (measured 1.4 s for
    178 norm/bias tensors on the shared 2-core dev box, vs 0.05 s this way).
    """
    small = [i for i, p in enumerate(params) if p.device.type == "cpu" and p.numel() < FUSED_MIN_NUMEL]
    large = sorted(set(range(len(params))) - set(small))
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, decoupled_wd=decoupled_wd)
    for fn, idx in ((_adamw_fused, large), (_adamw_foreach, small)):
        if idx:
            fn(*([xs[i] for i in idx] for xs in (params, grads, exp_avgs, exp_avg_sqs, steps)), **hyper)


def _adamw_fused(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                 decoupled_wd) -> None:
    fused = torch._fused_adamw_ if decoupled_wd else torch._fused_adam_
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    for idx in groups.values():
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        torch._foreach_add_(pick(steps), 1)
        fused(pick(params), pick(grads), pick(exp_avgs), pick(exp_avg_sqs), [], pick(steps), amsgrad=False,
              lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, maximize=False)


def _adamw_foreach(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
                   decoupled_wd) -> None:
    """torch.optim.AdamW's single-tensor arithmetic op for op, as foreach calls."""
    for s in steps:
        s += 1
    if weight_decay:
        if decoupled_wd:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    # Python-float bias corrections, exactly as the single-tensor path computes them
    values = [s.item() for s in steps]
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, [(1 - beta2**v) ** 0.5 for v in values])
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [-(lr / (1 - beta1**v)) for v in values])


def adamw_8bit_(param: Tensor, grad: Tensor, state: dict, qmaps: tuple[Tensor, Tensor], *, lr: float,
                beta1: float, beta2: float, eps: float, weight_decay: float, decoupled_wd: bool) -> None:
    """One AdamW step with blockwise 8-bit moments through bitsandbytes' fused kernel (CPU and CUDA).

    ``state`` holds uint8 ``exp_avg_q``/``exp_avg_sq_q`` and their fp32 per-256-block ``absmax``; the
    kernel dequantizes, applies AdamW (decoupled wd) and requantizes — the same call bnb.optim.AdamW8bit
    makes, so results match it.
    """
    import bitsandbytes.functional as bnbF

    if weight_decay and not decoupled_wd:
        grad = grad.add(param, alpha=weight_decay)
    state["step"] += 1
    bnbF.optimizer_update_8bit_blockwise(
        "adam", grad.contiguous(), param, state["exp_avg_q"], state["exp_avg_sq_q"], beta1, beta2, 0.0, 0.0,
        eps, state["step"], lr, qmaps[0], qmaps[1], state["exp_avg_absmax"], state["exp_avg_sq_absmax"],
        weight_decay if decoupled_wd else 0.0, gnorm_scale=1.0, skip_zeros=False)
