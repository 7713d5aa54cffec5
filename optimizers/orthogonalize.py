"""Orthogonalization backends: pure functions mapping a batch of matrices G (..., m, n) to ~ U Vᵀ.

If G = U Σ Vᵀ is the (reduced) SVD, every backend returns U p(Σ) Vᵀ for a scalar map p that pushes each
singular value towards 1; the backends differ in how far (accuracy) and at what cost. Measured bounds
are in docs/benchmarks.md and asserted by tests/test_orthogonalize.py.

Shared conventions (all backends):
* Tall matrices (m > n) are transposed first, so the Gram matrix X Xᵀ is min(m, n)² — never the big side.
* Input is scaled by its Frobenius norm (≥ the spectral norm, so all singular values start in [0, 1]);
  singular values below ~1e-3 of ‖G‖_F are only partly lifted by the polynomial backends.
* Each backend computes in the dtype it is given; `orthogonalize` picks that dtype (`optimizers.precision`:
  bf16 where the device multiplies bf16 faster than fp32, fp32 elsewhere, or `compute_dtype`) and casts the
  result back to G's dtype.
* The polynomial backends run plain or Gram-space Newton–Schulz (`optimizers.newton_schulz`), per shape.

Registry: ``BACKENDS[name](G, steps=None, method="auto") -> X``; ``get_backend`` also accepts coefficient tuples.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from optimizers.errors import MuonConfigError
from optimizers.newton_schulz import METHODS, newton_schulz, wide_normalized_
from optimizers.precision import resolve_dtype

Coeffs = tuple[float, float, float]
Backend = Callable[..., Tensor]

# Keller Jordan's quintic: maximal slope at 0 while staying bounded. Does NOT converge to 1: singular
# values >= 1e-2·‖G‖_F end in ~[0.68, 1.13] after 5 steps, which Muon tolerates.
NS5_COEFFS: Coeffs = (3.4445, -4.7750, 2.0315)
# Classical quintic Newton-Schulz (15x - 10x³ + 3x⁵)/8: p(1)=1, p'(1)=p''(1)=0, so it converges cubically
# once singular values are near 1, but grows small ones only 1.875x per step.
POLISH_COEFFS: Coeffs = (1.875, -1.25, 0.375)
# 10 steps: 7 fast KJ steps lift small singular values (3.44x per step), then 3 polishing steps collapse
# KJ's [0.68, 1.13] band onto 1: scalar error < 1e-9 for x >= 1e-2 and < 1e-3 for x >= 7e-5 (x = σ/‖G‖_F).
# Splits 6+4 / 5+5 converge only from x >= 1.3e-4 / 6e-4.
NS10_SCHEDULE: list[Coeffs] = [NS5_COEFFS] * 7 + [POLISH_COEFFS] * 3
# Sweep variants, found by a grid search over (a, b, c) on the scalar map (see the docs):
# conservative has p(1)=1 and p'(1)≈0, so it converges to 1 (band after 5 steps [0.998, 1.13] for
# x >= 1e-2) at the price of a lower slope at 0 (2.8 vs 3.44): small singular values lag.
CONSERVATIVE_COEFFS: Coeffs = (2.8, -3.05, 1.25)
# aggressive has a steeper slope at 0 (3.8) and a wider final band (~[0.53, 1.30] for x >= 1e-2).
AGGRESSIVE_COEFFS: Coeffs = (3.8, -5.4, 2.2)

# Polar Express (Amsel, Persson, Musco, Gower 2025, arXiv:2505.16932, Algorithm 1): a minimax-optimal
# degree-5 polynomial per iteration. All but the last are divided by a 1.01 safety factor (a/1.01,
# b/1.01³, c/1.01⁵) so round-off cannot push singular values past the region the next polynomial was
# designed for; the input is scaled by 1.01·‖G‖_F for the same reason. Iterations past 8 reuse the last.
_PE_RAW: list[Coeffs] = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]
POLAR_EXPRESS_SCHEDULE: list[Coeffs] = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in _PE_RAW[:-1]]
POLAR_EXPRESS_SCHEDULE.append(_PE_RAW[-1])

# "cayley": dynamically weighted Halley (DWH, Nakatsukasa-Bai-Gygi 2010), a rational iteration
# X <- X (a I + b XᵀX)(I + c XᵀX)⁻¹ with (a, b, c) re-chosen each step from a lower bound l on the
# singular values. With l0 = 1e-3 three steps map [1e-3, 1] onto 1 to within 1e-6 in exact arithmetic.
CAYLEY_L0 = 1e-3
CAYLEY_STEPS = 3


def _wide_side(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Run ``fn`` on the wide orientation (m <= n) so its Gram matrix X Xᵀ is the small one."""

    def wrapped(G: Tensor) -> Tensor:
        if G.ndim < 2:
            raise MuonConfigError(f"orthogonalize needs a (..., m, n) matrix batch, got shape {tuple(G.shape)}")
        if G.size(-2) > G.size(-1):
            return fn(G.mT).mT
        return fn(G)

    return wrapped


def _schedule(coeffs: Sequence[Coeffs], steps: int | None) -> list[Coeffs]:
    """The per-iteration coefficient list: ``steps`` truncates it or repeats its last entry."""
    coeffs = list(coeffs)
    steps = len(coeffs) if steps is None else steps
    return coeffs[:steps] + [coeffs[-1]] * max(0, steps - len(coeffs))


def _dwh_weights(l: float) -> tuple[float, float, float, float]:
    """DWH coefficients (a, b, c) for singular values in [l, 1], and the next lower bound."""
    if l >= 1.0 - 1e-9:  # converged: Halley's fixed weights
        return 3.0, 1.0, 3.0, 1.0
    d = (4.0 * (1.0 - l * l) / l**4) ** (1.0 / 3.0)
    a = math.sqrt(1.0 + d) + 0.5 * math.sqrt(8.0 - 4.0 * d + 8.0 * (2.0 - l * l) / (l * l * math.sqrt(1.0 + d)))
    b = (a - 1.0) ** 2 / 4.0
    c = a + b - 1.0
    return a, b, c, min(1.0, l * (a + b * l * l) / (1.0 + c * l * l))


def cayley(G: Tensor, steps: int | None = None, method: str = "auto") -> Tensor:
    """Rational (DWH/Halley) polar iteration with a Cholesky solve on the small Gram matrix per step.

    X <- (b/c) X + (a - b/c) (I + c XXᵀ)⁻¹ X. Per step: XXᵀ (2m²n), Cholesky (m³/3), two triangular
    solves with n right-hand sides (2m²n). LAPACK has no bf16/fp16 Cholesky, so half-precision input is
    promoted to fp32 for the whole iteration.
    """

    @_wide_side
    def run(X: Tensor) -> Tensor:
        dtype = X.dtype
        if dtype in (torch.bfloat16, torch.float16):
            X = X.float()
        X = wide_normalized_(X.clone(memory_format=torch.contiguous_format))
        eye = torch.eye(X.size(-2), dtype=X.dtype, device=X.device)
        l = CAYLEY_L0
        for _ in range(CAYLEY_STEPS if steps is None else steps):
            a, b, c, l = _dwh_weights(l)
            M = torch.matmul(X, X.mT).mul_(c).add_(eye)
            L, _ = torch.linalg.cholesky_ex(M)  # M >= I, so SPD; _ex: NaN input propagates, never raises
            X = torch.cholesky_solve(X, L).mul_(a - b / c).add_(X, alpha=b / c)
        return X.to(dtype)

    return run(G)


# The polynomial backends as data: (per-step coefficients, steps when steps=None, input scale). `polynomial_plan`
# reads this; the registry functions below, custom coefficients and `default_steps` all go through it.
_POLYNOMIAL: dict[str, tuple[list[Coeffs], int | None, float]] = {
    "newtonschulz5": ([NS5_COEFFS], 5, 1.0),  # Keller Jordan's Muon iteration
    "newtonschulz10": (NS10_SCHEDULE, None, 1.0),  # 7 KJ + 3 polishing steps: converges to U Vᵀ
    "polar_express": (POLAR_EXPRESS_SCHEDULE, 5, 1.01),  # the paper's Muon runs use 5 steps, input / 1.01‖G‖
    "conservative": ([CONSERVATIVE_COEFFS], 5, 1.0),  # smaller overshoot, slower on small singular values
    "aggressive": ([AGGRESSIVE_COEFFS], 5, 1.0),  # lifts small singular values faster, wider band
}


def _polynomial_backend(name: str) -> Backend:
    def backend(G: Tensor, steps: int | None = None, method: str = "auto") -> Tensor:
        schedule, scale = polynomial_plan(name, steps)
        return newton_schulz(G, schedule, scale=scale, method=method)

    backend.__name__ = backend.__qualname__ = name
    return backend


BACKENDS: dict[str, Backend] = {**{name: _polynomial_backend(name) for name in _POLYNOMIAL}, "cayley": cayley}


def _valid_names() -> str:
    return ", ".join(sorted(BACKENDS)) + ", or NS coefficients (a, b, c) / a list of (a, b, c) per step"


def _as_coeffs(spec) -> list[Coeffs] | None:
    """A coefficient spec as a per-step list, or None if it is not one."""
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or len(spec) == 0:
        return None
    rows = [spec] if all(isinstance(v, (int, float)) for v in spec) else list(spec)
    try:
        out = [tuple(float(v) for v in row) for row in rows]
    except (TypeError, ValueError):
        return None
    if any(len(row) != 3 or not all(math.isfinite(v) for v in row) for row in out):
        return None
    return out  # type: ignore[return-value]


def get_backend(name_or_coeffs) -> Backend:
    """The backend ``fn(G, steps=None)`` for a registry name or NS coefficients.

    Coefficients: one (a, b, c) (repeated; 5 steps by default) or a list of per-step tuples (one step
    each by default; ``steps`` truncates or repeats the last).
    """
    if isinstance(name_or_coeffs, str):
        if name_or_coeffs in BACKENDS:
            return BACKENDS[name_or_coeffs]
        raise MuonConfigError(f"unknown orthogonalization backend {name_or_coeffs!r}; valid: {_valid_names()}")
    schedule = _as_coeffs(name_or_coeffs)
    if schedule is None:
        raise MuonConfigError(f"bad orthogonalization backend {name_or_coeffs!r}; valid: {_valid_names()}")

    def custom(G: Tensor, steps: int | None = None, method: str = "auto") -> Tensor:
        return newton_schulz(G, polynomial_plan(name_or_coeffs, steps)[0], method=method)

    return custom


def polynomial_plan(name_or_coeffs, steps: int | None) -> tuple[list[Coeffs], float] | None:
    """(per-step coefficients, input scale) of a polynomial backend, None for cayley: lets the optimizer run
    the iteration on a batch it has already written in the compute dtype and wide orientation."""
    if isinstance(name_or_coeffs, str):
        get_backend(name_or_coeffs)
        if name_or_coeffs not in _POLYNOMIAL:
            return None
        coeffs, default, scale = _POLYNOMIAL[name_or_coeffs]
        return _schedule(coeffs, default if steps is None else steps), scale
    schedule = _as_coeffs(name_or_coeffs)
    if schedule is None:
        get_backend(name_or_coeffs)  # raises with the valid names
    single = all(isinstance(v, (int, float)) for v in name_or_coeffs)
    return _schedule(schedule, 5 if steps is None and single else steps), 1.0


def default_steps(name_or_coeffs) -> int:
    """How many iterations a backend runs when ``steps`` is None."""
    plan = polynomial_plan(name_or_coeffs, None)
    return CAYLEY_STEPS if plan is None else len(plan[0])


def check_method(method: str) -> str:
    if method not in METHODS:
        raise MuonConfigError(f"unknown ns_method {method!r}; valid: {', '.join(METHODS)}")
    return method


def orthogonalize(G: Tensor, backend="newtonschulz5", steps: int | None = None, compute_dtype=None,
                  method: str = "auto") -> Tensor:
    """Approximate the polar factor U Vᵀ of every matrix in G (..., m, n); same shape and dtype as G.

    ``steps`` overrides the backend's iteration count; ``compute_dtype`` the dtype it runs in (None: see
    `optimizers.precision`); ``method`` "plain", "gram" or "auto" (see `optimizers.newton_schulz`).
    """
    fn = get_backend(backend)
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise MuonConfigError(f"ns_steps must be a positive integer, got {steps!r}")
    X = fn(G.to(resolve_dtype(compute_dtype, G.device)), steps, method=check_method(method))
    return X.to(G.dtype)
