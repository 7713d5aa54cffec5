"""Gram-space Newton–Schulz against the plain iteration, the exact answer, and torch.optim.Muon; the rule that
picks between them; and the automatic compute dtype.

The bounds are the ones documented in optimizers/newton_schulz.py. "Exact" is the plain iteration in fp64,
which equals U p(Σ) Vᵀ to ~1e-12 for these sizes.
"""

import pytest
import torch
from torch import nn

from optimizers import Muon
from optimizers.newton_schulz import (GRAM_MARGIN, choose_method, gram_flops, gram_iteration, newton_schulz, plain_flops,
                                      restart_every, wide_normalized_)
from optimizers.orthogonalize import polynomial_plan
import optimizers.precision as precision
from optimizers.precision import BF16_MARGIN, auto_dtype, describe_dtype, resolve_dtype

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POLY = ["newtonschulz5", "polar_express", "aggressive", "newtonschulz10"]


def svd_matrix(shape, decades: float, seed: int = 0) -> torch.Tensor:
    """fp64 matrices (batch allowed) with singular values log-spaced over ``decades`` decades."""
    gen = torch.Generator().manual_seed(seed)
    *batch, m, n = shape
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(*batch, m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(*batch, n, k, generator=gen, dtype=torch.float64))
    return (U * torch.logspace(0, -decades, k, dtype=torch.float64)) @ V.mT


def low_rank_plus_noise(shape, seed: int = 3) -> torch.Tensor:
    """A gradient-like matrix: rank 8 plus 1% noise (a few large singular values, a long flat tail)."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape
    lr = torch.randn(m, 8, generator=gen, dtype=torch.float64) @ torch.randn(8, n, generator=gen, dtype=torch.float64)
    return lr + 0.01 * torch.randn(m, n, generator=gen, dtype=torch.float64)


CASES = {f"{'x'.join(map(str, s))}-d{d}": (s, d) for s in [(96, 32), (32, 200), (2, 48, 160)] for d in (1, 3, 5)}


def run(G, backend, dtype, method):
    schedule, scale = polynomial_plan(backend, None)
    return newton_schulz(G.to(dtype), schedule, scale=scale, method=method).double()


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("backend", POLY)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gram_equals_plain_in_fp64(backend, case):
    """In exact arithmetic both forms compute the same polynomial of the same matrix."""
    G = svd_matrix(*CASES[case])
    assert rel(run(G, backend, torch.float64, "gram"), run(G, backend, torch.float64, "plain")) < 1e-8


@pytest.mark.parametrize("backend", POLY)
@pytest.mark.parametrize("case", sorted(CASES) + ["lowrank-512x192", "lowrank-64x700"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gram_within_documented_bound(backend, case, dtype):
    """fp32: within 2e-3 of exact. bf16: σ_max within 0.05 of plain bf16's; distance to exact at most 3x plain
    bf16's (+0.005; worst measured 2.5x, on well-conditioned input where plain's is 0.015-0.05). Shapes are forced to gram (method="gram") whatever the FLOP rule would pick."""
    if case.startswith("lowrank"):
        m, n = map(int, case.split("-")[1].split("x"))
        G = low_rank_plus_noise((m, n))
    else:
        G = svd_matrix(*CASES[case])
    exact = run(G, backend, torch.float64, "plain")
    gram, plain = run(G, backend, dtype, "gram"), run(G, backend, dtype, "plain")
    if dtype == torch.float32:
        assert rel(gram, exact) < 2e-3
    else:
        assert torch.linalg.svdvals(gram).max() <= torch.linalg.svdvals(plain).max() + 0.05
        assert rel(gram, exact) <= 3 * rel(plain, exact) + 0.005


def test_restarts_are_what_keeps_bf16_bounded():
    """Without its restarts the bf16 Gram recurrence blows a rounding-negative eigenvalue up: the restart
    policy is load-bearing, not decoration."""
    G = svd_matrix((32, 200), 3)
    schedule, scale = polynomial_plan("polar_express", None)
    X = wide_normalized_(G.bfloat16().clone(), scale)
    no_restart = gram_iteration(X.clone(), schedule, None).double()
    with_restart = gram_iteration(X.clone(), schedule, restart_every(torch.bfloat16)).double()
    assert torch.linalg.svdvals(no_restart).max() > 2.0
    assert torch.linalg.svdvals(with_restart).max() < 1.2


def test_flop_counts_match_the_formulas():
    m, n = 64, 256
    assert plain_flops((m, n), 5) == 5 * (4 * m * m * n + 2 * m**3)
    # one segment of 5: A0 and Q·X (4m²n), 5 A² (2m³), 4 Q updates (2m³), 4 A updates (4m³)
    assert gram_flops((m, n), 5, 5) == 4 * m * m * n + (10 + 8 + 16) * m**3
    assert gram_flops((3, n, m), 5, 5) == 3 * gram_flops((m, n), 5, 5)
    # restarting every 2 steps: segments [2, 2, 1], each re-forms A and multiplies X once
    assert gram_flops((m, n), 5, 2) == 3 * 4 * m * m * n + 2 * (4 + 6) * m**3 + 2 * m**3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_rule_picks_gram_only_when_it_saves_flops(dtype):
    in_proj, square, two_to_one, three_to_two = (2192, 512), (1024, 1024), (512, 1024), (640, 960)
    assert choose_method(in_proj, 5, dtype) == "gram"  # Mamba2's in_proj, n/m ≈ 4.3
    assert choose_method(square, 5, dtype) == "plain"
    assert choose_method(two_to_one, 5, dtype) == "gram"
    assert choose_method(three_to_two, 5, dtype) == "plain"  # a FLOP tie: left to plain
    assert choose_method(in_proj, 1, dtype) == "plain"  # one step: nothing to save
    for shape in (in_proj, square, two_to_one, (128, 4096)):
        chosen = choose_method(shape, 5, dtype)
        cheaper = gram_flops(shape, 5, restart_every(dtype)) <= GRAM_MARGIN * plain_flops(shape, 5)
        assert (chosen == "gram") == cheaper
    assert choose_method(square, 5, dtype, "gram") == "gram"  # an explicit method always wins


# ------------------------------------------------------------------------------------ automatic dtype


def test_auto_dtype_from_faked_cpu_capability_and_speed():
    cpu = torch.device("cpu")
    # the flags say oneDNN can run bf16 natively; the measured speed decides (a tie goes to fp32)
    assert auto_dtype(cpu, frozenset({"avx2", "avx512f", "avx512_bf16"}), speedup=4.6)[0] == torch.bfloat16
    assert auto_dtype(cpu, frozenset({"avx2", "amx_bf16"}), speedup=8.0)[0] == torch.bfloat16
    dtype, why = auto_dtype(cpu, frozenset({"avx2", "avx512_bf16"}), speedup=0.55)  # the Intel VM measured here
    assert dtype == torch.float32 and "measured 0.55x fp32's speed" in why and "fp32 is faster" in why
    assert auto_dtype(cpu, frozenset({"avx512_bf16"}), speedup=BF16_MARGIN * 0.99)[0] == torch.float32
    dtype, why = auto_dtype(cpu, frozenset({"avx2", "fma3"}), speedup=100.0)  # no unit: the flags alone decide
    assert dtype == torch.float32 and "no native bf16" in why
    assert auto_dtype(torch.device("cuda"))[0] == torch.bfloat16


def test_speed_probe_times_both_dtypes_after_a_warm_up_and_is_cached(monkeypatch):
    """The probe's arithmetic on a fake clock: fp32 GEMMs cost 3 units, bf16 1.5, the first of each 100 (kernel
    building): the ratio is exactly 2, the warm-up is not counted, and a second call does not time again."""
    clock, calls = [0.0], []

    def fake_mm(a, b):
        calls.append(a.dtype)
        clock[0] += 100.0 if calls.count(a.dtype) == 1 else (3.0 if a.dtype == torch.float32 else 1.5)
        return a

    monkeypatch.setattr(precision.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(precision.torch, "mm", fake_mm)
    monkeypatch.setattr(precision, "_agreed_speedup", None)
    precision._bf16_speedup.cache_clear()
    try:
        assert precision.bf16_speedup(n=8, reps=4) == 2.0
        assert calls.count(torch.float32) == calls.count(torch.bfloat16) == 5
        assert precision.bf16_speedup(n=8, reps=4) == 2.0 and len(calls) == 10  # cached
    finally:
        precision._bf16_speedup.cache_clear()


def test_speed_probe_runs_only_where_the_cpu_has_a_bf16_unit(monkeypatch):
    def no_probe():
        raise AssertionError("probed a CPU without avx512_bf16/amx_bf16")

    monkeypatch.setattr(precision, "bf16_speedup", no_probe)
    assert auto_dtype(torch.device("cpu"), frozenset({"avx2"}))[0] == torch.float32
    assert auto_dtype(torch.device("cuda"))[0] == torch.bfloat16


@pytest.mark.parametrize("flags,speedup,expect", [({"avx2"}, None, torch.float32),
                                                  ({"avx2", "avx512_bf16"}, 4.6, torch.bfloat16),
                                                  ({"avx2", "avx512_bf16"}, 0.55, torch.float32)],
                         ids=["avx2-only", "avx512-bf16-fast", "avx512-bf16-slow"])
def test_optimizer_follows_the_capability_and_records_it(monkeypatch, flags, speedup, expect):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(precision, "bf16_speedup", lambda: speedup)
    assert resolve_dtype(None, torch.device("cpu")) == expect
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32  # an explicit dtype still wins
    w = nn.Parameter(torch.randn(48, 200))
    opt = Muon([{"params": [w], "name": "muon"}], lr=0.02)
    described = opt.describe()["groups"][0]["compute_dtype"]
    assert described.startswith(str(expect).replace("torch.", "")) and "auto" in described
    assert speedup is None or f"{speedup:.2f}x" in described  # the measured ratio is recorded
    assert described in opt.compute_summary()
    explicit = Muon([{"params": [w], "name": "muon"}], lr=0.02, compute_dtype="float32")
    assert explicit.describe()["groups"][0]["compute_dtype"] == "float32 (set explicitly)"
    assert describe_dtype(None, torch.device("cuda")) == "bfloat16 (auto: CUDA)"


# ---------------------------------------------------------------------------- the optimizer end to end


def test_default_step_stays_close_to_torch_muon():
    """Ours at defaults (auto dtype, Gram where the rule says) vs torch.optim.Muon (plain bf16): the
    parameter change differs by at most 3% (relative) per matrix, and the plan records gram for in_proj."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(360, 96), (360, 96), (96, 192), (96, 96)]  # in_proj-like (n/m 3.75), out_proj-like, square
    ours_p = [nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    ref_p = [nn.Parameter(p.detach().clone()) for p in ours_p]
    ours = Muon([{"params": ours_p}], lr=0.02, weight_decay=0.1, compute_dtype="bfloat16")
    ref = torch.optim.Muon(ref_p, lr=0.02, weight_decay=0.1)
    assert ours.describe()["groups"][0]["ns_plan"]["360x96"] == "gram"
    start = [p.detach().clone() for p in ours_p]
    for step in range(3):
        for a, b in zip(ours_p, ref_p):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        ours.step()
        ref.step()
    for a, b, s in zip(ours_p, ref_p, start):
        assert rel((a - s).detach().double(), (b - s).detach().double()) < 0.03


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_any_subset_of_a_bucket_gets_the_same_bits(dtype):
    """Under DDP/FSDP2 each rank orthogonalizes a subset of a bucket through `orthogonalize`; one process
    runs the whole bucket through `muon_bucket_update`. Both must give the same bits, Gram form included."""
    from optimizers.functional import muon_bucket_update, muon_momentum_
    from optimizers.orthogonalize import orthogonalize

    gen = torch.Generator().manual_seed(0)
    for shape in [(24, 110), (110, 24), (40, 40)]:  # gram (both orientations) and plain
        grads = [torch.randn(shape, generator=gen) for _ in range(3)]
        bufs = [torch.randn(shape, generator=gen) for _ in range(3)]
        copies = [b.clone() for b in bufs]
        whole = muon_bucket_update(grads, bufs, momentum=0.9, nesterov=True, backend="newtonschulz5",
                                   ns_steps=None, compute_dtype=dtype).float()
        U = muon_momentum_(grads, copies, momentum=0.9, nesterov=True)
        for rows in ([0], [1, 2], [0, 1, 2]):
            part = orthogonalize(U[rows], "newtonschulz5", None, dtype)
            assert torch.equal(part, whole[rows])
        assert all(torch.equal(a, b) for a, b in zip(bufs, copies))
