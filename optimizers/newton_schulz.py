"""The odd-quintic Newton–Schulz iteration in two forms — plain and Gram-space — and the rule that picks one.

Every polynomial backend (newtonschulz5, newtonschulz10, polar_express, coefficient tuples) runs
X <- a X + (b A + c A²) X with A = X Xᵀ, one (a, b, c) per step, on the wide orientation (m <= n).

**plain** does exactly that: per step XXᵀ (2m²n FLOPs), A² (2m³) and BX (2m²n): 4m²n + 2m³.

**gram** never touches the wide matrix inside the loop. With X_k = Q_k X_0, every X_k X_kᵀ is a polynomial
in A_0 = X_0 X_0ᵀ, and so are P_k = a I + b A_k + c A_k², Q_{k+1} = P_k Q_k and A_{k+1} = P_k A_k P_k — all
m x m. Per step: A² (2m³), P·Q (2m³, not on the first step, where Q = P) and P·A·P (4m³, not on a segment's
last step); the m x n work is A_0 once and Q·X_0 once per segment. In exact arithmetic the result is the
plain iteration's. In finite precision it is not self-correcting as the plain form is: rounding can
leave an eigenvalue of A slightly *negative*, and a negative λ grows like a²ᵏ·λ with no saturation (p(λ)
grows for λ < 0), so Q blows that direction up. Hence "restarts": every `restart_every` steps the
iteration forms X = Q X_0 and a fresh, positive semi-definite A = X Xᵀ. Measured, and asserted by
tests/test_newton_schulz.py, over newtonschulz5,
polar_express, aggressive and newtonschulz10 on tall, wide, square-ish and batched matrices with condition
numbers 10 to 1e5 and low-rank-plus-noise gradients:

* fp32/fp64, restart every 5 steps (none for a 5-step backend): largest output singular value equal to
  the plain iteration's (newtonschulz10 without a restart reaches 6e6); within 2e-3 (relative Frobenius)
  of the plain iteration in fp64.
* bf16/fp16, restart every 2 steps: largest output singular value within 0.05 of plain bf16's; distance
  to the fp64 result at most 3x plain bf16's (+0.005) — worst measured 2.5x, on
  well-conditioned input where plain bf16's is 0.015-0.05 (NS5: 0.032 vs 0.015); on ill-conditioned input
  the two are alike. Every 3 steps is not enough: polar_express reached σ_max 55, newtonschulz10 overflowed.

**The rule** (`choose_method`, method="auto"): gram when its FLOPs, restarts counted, are at most
`GRAM_MARGIN` of plain's. For 5 steps: fp32 4m²n + 34m³ vs 20m²n + 10m³, gram from n/m ≈ 1.63; bf16
(restarts at 2 and 4) 12m²n + 22m³, gram from n/m ≈ 1.79. Mamba2's in_proj (n/m ≈ 4.3) then costs 47% (fp32)
/ 23% (bf16) fewer FLOPs, a 2:1 MLP/out_proj 16% / 8%; square matrices stay plain.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from optimizers.errors import MuonConfigError

Coeffs = tuple[float, float, float]

METHODS = ("auto", "plain", "gram")
EPS = 1e-7  # added to ‖G‖_F (as torch.optim.Muon's eps): an all-zero G maps to zero instead of NaN
# gram must save at least 5% of the FLOPs. Measured on a 2-core EPYC (AVX-512 BF16), batches of 4-25:
# fp32 time ratios follow the FLOP ratio (512x2192: 0.56 vs 0.535; 512x1024: 0.88 vs 0.84; n/m = 1.5:
# 1.01 vs 1.0); bf16 ones run ~5% under it (512x1024: 0.86-0.93 vs 0.92; 640x960: 0.94 vs 1.0; 1024²:
# 1.06-1.13 vs 1.13). 0.95 takes the sure wins in both and leaves the ties to plain.
GRAM_MARGIN = 0.95
HALF_RESTART_EVERY = 2  # half precision: re-form A = X Xᵀ after every 2 Gram steps (see the module doc)
FULL_RESTART_EVERY = 5  # fp32 and up: after every 5 (a 5-step backend never restarts)


def restart_every(dtype: torch.dtype) -> int:
    """Gram steps between restarts in ``dtype``: 2 in bf16/fp16, 5 at fp32 and above."""
    return HALF_RESTART_EVERY if dtype in (torch.bfloat16, torch.float16) else FULL_RESTART_EVERY


def _segments(steps: int, every: int | None) -> list[int]:
    """Step counts of the Gram segments: [5] or, restarting every 3, [3, 2]."""
    if not every or every >= steps:
        return [steps]
    return [every] * (steps // every) + ([steps % every] if steps % every else [])


def _dims(shape: Sequence[int]) -> tuple[int, int, int]:
    """(matrices in the batch, short side m, long side n) of a (..., a, b) shape."""
    *batch, a, b = shape
    k = 1
    for d in batch:
        k *= d
    return k, min(a, b), max(a, b)


def plain_flops(shape: Sequence[int], steps: int) -> int:
    """FLOPs of ``steps`` plain steps on (..., a, b): 4m²n + 2m³ per step, m <= n.

    >>> plain_flops((64, 256), 1), plain_flops((256, 64), 1), plain_flops((3, 64, 256), 1)
    (4718592, 4718592, 14155776)
    """
    k, m, n = _dims(shape)
    return k * steps * (4 * m * m * n + 2 * m**3)


def gram_flops(shape: Sequence[int], steps: int, every: int | None = None) -> int:
    """FLOPs of the Gram form: per segment of s steps, A = XXᵀ and X <- QX (4m²n) plus s A² (2m³ each),
    s-1 Q updates (2m³) and s-1 A updates (4m³).

    >>> gram_flops((512, 2048), 5) / plain_flops((512, 2048), 5) < 0.6
    True
    """
    k, m, n = _dims(shape)
    total = sum(4 * m * m * n + 2 * s * m**3 + 6 * (s - 1) * m**3 for s in _segments(steps, every))
    return k * total


def choose_method(shape: Sequence[int], steps: int, dtype: torch.dtype, method: str = "auto") -> str:
    """"plain" or "gram" for a matrix (batch) of ``shape`` run for ``steps`` in ``dtype`` (see the rule above).

    >>> choose_method((2192, 512), 5, torch.float32), choose_method((1024, 1024), 5, torch.bfloat16)
    ('gram', 'plain')
    """
    if method != "auto":
        return method
    if steps < 2:
        return "plain"
    return "gram" if gram_flops(shape, steps, restart_every(dtype)) <= GRAM_MARGIN * plain_flops(shape, steps) \
        else "plain"


def ns_flops(shape: Sequence[int], steps: int, dtype: torch.dtype = torch.float32, method: str = "auto") -> int:
    """FLOPs the iteration really runs on ``shape`` under ``method`` ("auto" applies `choose_method`)."""
    if choose_method(shape, steps, dtype, method) == "gram":
        return gram_flops(shape, steps, restart_every(dtype))
    return plain_flops(shape, steps)


class Workspace:
    """Reusable scratch tensors, one flat buffer per role, grown to the largest request and viewed to shape.

    The optimizer processes its buckets one after another, so one buffer per role serves them all. On CPU a
    fresh multi-MB tensor every step is page-faulted in anew (the allocator returns large blocks to the OS):
    measured ~10% of a hybrid-small step. Not thread-safe; a view is valid until the same role is requested
    again.
    """

    def __init__(self):
        self._buffers: dict[str, Tensor] = {}

    def get(self, role: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
        numel = 1
        for d in shape:
            numel *= d
        buf = self._buffers.get(role)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = self._buffers[role] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(*shape)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


def _new(ws: Workspace | None, role: str, shape, like: Tensor) -> Tensor:
    if ws is None:
        return like.new_empty(shape)
    return ws.get(role, shape, like.dtype, like.device)


def wide_normalized_(X: Tensor, scale: float = 1.0) -> Tensor:
    """X /= scale·‖X‖_F + EPS per matrix, in place (X already in the wide orientation and the compute dtype)."""
    return X.div_(torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True) * scale + EPS)


def _ops(X: Tensor):
    return (torch.mm, torch.addmm) if X.ndim == 2 else (torch.bmm, torch.baddbmm)


def plain_iteration(X: Tensor, schedule: Sequence[Coeffs], ws: Workspace | None = None) -> Tensor:
    """The plain iteration on a normalized wide (..., m, n) X (2-D or 3-D), in X's dtype.

    Three GEMMs per step fused as mm/addmm (2-D) or bmm/baddbmm (batched), exactly torch.optim.Muon's
    arithmetic; ping-pong buffers preallocated (fresh multi-MB tensors would be page-faulted in anew).
    May overwrite X.
    """
    mm, addmm = _ops(X)
    gram_shape = (*X.shape[:-1], X.size(-2))
    A, B, Y = _new(ws, "A", gram_shape, X), _new(ws, "B", gram_shape, X), _new(ws, "Y", X.shape, X)
    for a, b, c in schedule:
        mm(X, X.mT, out=A)
        addmm(A, A, A, beta=b, alpha=c, out=B)
        addmm(X, B, X, beta=a, out=Y)
        X, Y = Y, X
    return X


def gram_iteration(X: Tensor, schedule: Sequence[Coeffs], every: int | None, ws: Workspace | None = None) -> Tensor:
    """The Gram-space iteration on a normalized wide (..., m, n) X (2-D or 3-D), restarting every ``every``
    steps (None: never). May overwrite X."""
    mm, addmm = _ops(X)
    m = X.size(-2)
    small = (*X.shape[:-1], m)
    A, P, Q, T = (_new(ws, role, small, X) for role in ("A", "B", "Q", "T"))
    Y = _new(ws, "Y", X.shape, X)
    schedule = list(schedule)
    start = 0
    for s in _segments(len(schedule), every):
        mm(X, X.mT, out=A)
        for i, (a, b, c) in enumerate(schedule[start:start + s]):
            addmm(A, A, A, beta=b, alpha=c, out=P)  # P = b A + c A² (+ a I below)
            P.diagonal(dim1=-2, dim2=-1).add_(a)
            Pk = P
            if i == 0:  # Q = P: swap the buffers instead of copying (the next step rewrites P anyway)
                Q, P = P, Q
            else:
                mm(Pk, Q, out=T)
                Q, T = T, Q
            if i < s - 1:  # A <- P A P (P and A commute: the result is symmetric)
                mm(Pk, A, out=T)
                mm(T, Pk, out=A)
        mm(Q, X, out=Y)
        X, Y = Y, X
        start += s
    return X


def newton_schulz(G: Tensor, schedule: Sequence[Coeffs], *, scale: float = 1.0, method: str = "auto") -> Tensor:
    """The polynomial iteration on G (..., m, n) in G's dtype: normalize by scale·‖G‖_F, iterate on the wide
    orientation (plain or gram, per `choose_method`), and return a result of G's shape (a transposed view
    for tall G). G itself is not modified."""
    if G.ndim < 2:
        raise MuonConfigError(f"orthogonalize needs a (..., m, n) matrix batch, got shape {tuple(G.shape)}")
    tall = G.size(-2) > G.size(-1)
    # a contiguous wide copy: a transposed view would reach every GEMM with transposed strides
    X = (G.mT if tall else G).clone(memory_format=torch.contiguous_format)
    batch_shape = X.shape[:-2]
    if X.ndim > 3:
        X = X.reshape(-1, *X.shape[-2:])
    out = iterate_(wide_normalized_(X, scale), schedule, method)
    out = out.reshape(*batch_shape, *out.shape[-2:])
    return out.mT if tall else out


def iterate_(X: Tensor, schedule: Sequence[Coeffs], method: str = "auto", ws: Workspace | None = None) -> Tensor:
    """Run the iteration on an already normalized, contiguous wide X (2-D or 3-D); may overwrite X. With a
    `Workspace`, the scratch (and the result, which may be its "Y" buffer) lives there."""
    chosen = choose_method(X.shape, len(schedule), X.dtype, method)
    if chosen == "gram":
        return gram_iteration(X, schedule, restart_every(X.dtype), ws)
    return plain_iteration(X, schedule, ws)
