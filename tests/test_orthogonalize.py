"""Every orthogonalization backend against the exact SVD polar factor U Vᵀ.

Matrices are built with a known SVD G = U diag(s) Vᵀ, so the per-direction gain uᵢᵀ O vᵢ is exactly the
scalar map p(xᵢ) the backend applies to the normalized singular value xᵢ = sᵢ / ‖G‖_F. The bounds below are
the ones documented in docs/benchmarks.md (fp32 compute; the bf16 bounds are in test_newton_schulz.py).
"""

import pytest
import torch

from optimizers import BACKENDS, MuonConfigError, get_backend, orthogonalize
from optimizers.newton_schulz import EPS
from optimizers.orthogonalize import NS5_COEFFS, NS10_SCHEDULE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# backend: (x threshold, gain lo, gain hi on directions with x >= threshold,
#           max output singular value anywhere, max rel. Frobenius distance to U Vᵀ when all x >= 1e-2)
BOUNDS = {
    "newtonschulz5": (1e-2, 0.68, 1.14, 1.21, 0.21),
    "newtonschulz10": (1e-3, 0.999, 1.001, 1.001, 1e-3),
    "polar_express": (1e-3, 0.84, 1.13, 1.13, 0.10),
    "cayley": (1e-3, 0.999, 1.001, 1.001, 1e-3),
    "conservative": (1e-2, 0.998, 1.13, 1.13, 0.03),
    "aggressive": (1e-2, 0.53, 1.31, 1.31, 0.30),
}
SHAPES = [(48, 48), (96, 32), (32, 96), (3, 40, 56), (2, 64, 24)]


def known_svd(shape, decades: float, seed: int = 0):
    """G (fp64) with singular values log-spaced over ``decades`` decades, and its U, s, V."""
    gen = torch.Generator().manual_seed(seed)
    *batch, m, n = shape
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(*batch, m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(*batch, n, k, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -decades, k, dtype=torch.float64)
    return (U * s) @ V.mT, U, s, V


def test_registry_is_complete():
    assert set(BACKENDS) == set(BOUNDS)


@pytest.mark.parametrize("method", ["plain", "gram"])
@pytest.mark.parametrize("decades", [1, 3], ids=["well", "ill"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", sorted(BOUNDS))
def test_backend_against_svd_polar_factor(backend, shape, decades, method):
    """Both Newton–Schulz forms (plain and Gram-space) meet the same bounds in fp32 (cayley ignores method)."""
    thr, lo, hi, sv_max, max_dist = BOUNDS[backend]
    G, U, s, V = known_svd(shape, decades)
    O = orthogonalize(G.float(), backend, compute_dtype=torch.float32, method=method).double()
    assert O.shape == G.shape
    gains = torch.diagonal(U.mT @ O @ V, dim1=-2, dim2=-1)
    x = s / s.norm()
    assert gains[..., x >= thr].min() >= lo
    assert gains[..., x >= thr].max() <= hi
    assert torch.linalg.svdvals(O).max() <= sv_max
    if decades == 1:  # every x >= 1e-2 after the Frobenius normalization
        polar = U @ V.mT
        dist = torch.linalg.matrix_norm(O - polar) / torch.linalg.matrix_norm(polar)
        assert dist.max() <= max_dist


def test_ns5_does_not_converge_to_one():
    """KJ's coefficients trade accuracy for slope: singular values oscillate in ~[0.68, 1.13], not -> 1."""
    G, U, s, V = known_svd((64, 64), 1)
    gains = torch.diagonal(U.mT @ orthogonalize(G.float(), compute_dtype=torch.float32).double() @ V)
    assert gains.min() < 0.75 and gains.max() > 1.1


def test_small_singular_values_are_not_lifted_by_polynomials():
    """Below ~1e-3·‖G‖_F, five quintic steps cannot reach the band: that is the documented limit."""
    G, U, s, V = known_svd((64, 64), 5)
    gains = torch.diagonal(U.mT @ orthogonalize(G.float(), compute_dtype=torch.float32).double() @ V)
    assert gains[s / s.norm() < 1e-4].max() < 0.5


def test_tall_is_the_transpose_of_wide():
    G = torch.randn(3, 24, 80)
    for backend in BACKENDS:
        assert torch.equal(orthogonalize(G.mT, backend), orthogonalize(G, backend).mT)


def test_batched_equals_per_matrix():
    G = torch.randn(4, 32, 48)
    for backend in BACKENDS:
        batched = orthogonalize(G, backend, compute_dtype=torch.float32)
        single = torch.stack([orthogonalize(g, backend, compute_dtype=torch.float32) for g in G])
        torch.testing.assert_close(batched, single, atol=2e-5, rtol=0)


def test_dtypes():
    G = torch.randn(32, 48)
    assert orthogonalize(G).dtype == torch.float32  # whatever the compute dtype, the result has G's dtype
    assert orthogonalize(G.bfloat16()).dtype == torch.bfloat16
    assert orthogonalize(G.double(), compute_dtype=torch.float64).dtype == torch.float64
    bf16, fp32 = orthogonalize(G, compute_dtype=torch.bfloat16), orthogonalize(G, compute_dtype=torch.float32)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0.05)
    # cayley has no half-precision Cholesky: it promotes, so bf16 compute still converges
    assert torch.linalg.svdvals(orthogonalize(G, "cayley", compute_dtype="bfloat16")).min() > 0.99


def test_zero_matrix_maps_to_zero():
    for backend in BACKENDS:
        assert torch.equal(orthogonalize(torch.zeros(8, 12), backend), torch.zeros(8, 12))


def test_coefficient_tuples():
    G = torch.randn(2, 24, 40)
    assert torch.equal(orthogonalize(G, NS5_COEFFS), orthogonalize(G, "newtonschulz5"))
    assert torch.equal(orthogonalize(G, [tuple(c) for c in NS10_SCHEDULE]), orthogonalize(G, "newtonschulz10"))
    # the first 5 steps of the NS10 schedule are KJ's: truncating it gives NS5
    assert torch.equal(orthogonalize(G, "newtonschulz10", steps=5), orthogonalize(G, "newtonschulz5"))
    # a list longer than steps is truncated; steps past its end repeat the last tuple
    two = [(2.0, -1.5, 0.5), (1.875, -1.25, 0.375)]
    assert torch.equal(orthogonalize(G, two, steps=3), orthogonalize(G, two + [two[-1]]))


def scalar_map(x, schedule):
    """Apply p(x) = a x + b x³ + c x⁵ per step of ``schedule``, elementwise."""
    for a, b, c in schedule:
        x = a * x + b * x**3 + c * x**5
    return x


@pytest.mark.parametrize("method", ["plain", "gram"])
@pytest.mark.parametrize("shape", [(40, 56), (56, 40), (3, 24, 32)], ids=lambda s: "x".join(map(str, s)))
def test_custom_backend_is_its_scalar_map_on_the_exact_svd(shape, method):
    """get_backend(coefficients) returns U p(Σ/‖G‖_F) Vᵀ for G = U Σ Vᵀ (the module's documented contract),
    p iterated 5 times for one (a, b, c), once per tuple for a list, ``steps`` times when given: checked in
    fp64 against the SVD the matrix was built from, so only fp64 round-off separates them."""
    G, U, s, V = known_svd(shape, 2)
    x = s / (s.norm() + EPS)  # the input scaling: G / (‖G‖_F + EPS)
    one, two = (3.0, -3.2, 1.2), [(3.4445, -4.7750, 2.0315), (1.875, -1.25, 0.375)]
    cases = [(get_backend(one), None, [one] * 5), (get_backend(one), 2, [one] * 2),
             (get_backend(list(one)), None, [one] * 5), (get_backend(two), None, two),
             (get_backend(two), 4, two + [two[-1]] * 2)]
    for backend, steps, schedule in cases:
        O = backend(G, steps, method=method)
        assert O.dtype == torch.float64 and O.shape == G.shape
        torch.testing.assert_close(O, (U * scalar_map(x, schedule)) @ V.mT, atol=1e-12, rtol=0)
    # p(1) = 1 with |p'(1)| = 0.6 < 1: five steps bring every x in [0.1, 1] within 2% of 1 (max 1.85% on the scalar
    # map), so on those directions the output is the polar factor U Vᵀ to 2%
    gains = torch.diagonal(U.mT @ get_backend(one)(G, method=method) @ V, dim1=-2, dim2=-1)
    assert (x >= 0.1).sum() >= 5 and ((gains - 1).abs()[..., x >= 0.1] < 0.02).all()
    # a registry name returns the registered function itself
    assert all(get_backend(name) is fn for name, fn in BACKENDS.items())


@pytest.mark.parametrize("bad", ["newton", "", (1.0, 2.0), [(1.0, 2.0, 3.0), (1.0,)], ("a", "b", "c"), 5])
def test_unknown_backend_is_one_line_with_valid_names(bad):
    with pytest.raises(MuonConfigError) as err:
        orthogonalize(torch.randn(4, 4), bad)
    message = str(err.value)
    assert "\n" not in message
    assert all(name in message for name in BACKENDS)


def test_bad_steps_and_dtype():
    with pytest.raises(MuonConfigError, match="ns_steps"):
        orthogonalize(torch.randn(4, 4), steps=0)
    with pytest.raises(MuonConfigError, match="compute_dtype"):
        orthogonalize(torch.randn(4, 4), compute_dtype="int8")
