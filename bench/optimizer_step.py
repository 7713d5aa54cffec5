"""Benchmark one optimizer.step() on the parameter set of a named model size, against its FLOP limit.

    python bench/optimizer_step.py                                   # hybrid-small-standard, all backends
    python bench/optimizer_step.py --backends newtonschulz5 --repeats 5
    python bench/optimizer_step.py --shapes "640x1280*26,2708x640*25"   # Muon matrices by hand

Side by side, on the same tensors: torch.optim.AdamW on everything; torch.optim.Muon on the Muon matrices
+ torch.optim.AdamW on the rest; our Muon per backend. For each, the median step time and the ratio to the
LIMIT = (Newton-Schulz FLOPs of the step) / (this machine's fp32 matmul rate, measured on a 2048² matmul
right before each timed optimizer). Also each backend's orthogonalization error against the exact SVD
polar factor U Vᵀ on one matrix per distinct shape (a synthetic gradient with power-law spectrum σ_i ∝ 1/i).

torch.optim.Muon always runs Newton-Schulz in bf16, which this CPU (no AVX512-BF16) computes far slower
than fp32; by default one step on one matrix of the most common shape is timed and scaled by FLOPs
("--torch_muon sample"); "full" times the real thing. Not a test: timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from optimizers import Muon, orthogonalize  # noqa: E402
from optimizers.orthogonalize import DEFAULT_STEPS  # noqa: E402

# Fallback when configs/ or mamba_trainer/ cannot build the model: hybrid-small-standard (Zamba2, 640 wide,
# 25 layers, shared block every 6th, vocab 50,304), as split by optimizers.split_parameters.
FALLBACK_MUON = "640x1280*26,2708x640*25,640x640*4,128x640*4,5120x128*4,1280x1280*3,5120x640*1,640x2560*1"
FALLBACK_ADAMW = "50304x640*1,1408x1x4*25,20*75,640*27,1280*26,1408*25"


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """'640x1280*26,20*75' -> 26 x (640, 1280) and 75 x (20,)."""
    shapes = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        dims, _, count = item.partition("*")
        shapes += [tuple(int(d) for d in dims.split("x"))] * int(count or 1)
    return shapes


def model_shapes(size: str) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]] | None:
    """(Muon shapes, AdamW shapes) of a named size, built on the meta device; None if unavailable."""
    try:
        from configs.model_configs import get_model_config
        from mamba_trainer.models import build_model
        from optimizers import split_parameters

        vocab = 50304 if get_model_config(size).get("tokenizer") != "bundled" else 1024
        with torch.device("meta"):
            model = build_model(size, vocab_size=vocab)
    except Exception as exc:  # noqa: BLE001 - any failure means "use the fallback list"
        print(f"# could not build {size!r} ({type(exc).__name__}: {exc}); using the fallback shapes")
        return None
    split = split_parameters(model)
    muon = [tuple(p.shape) for _, p in split.muon + split.muon_no_decay]
    adamw = [tuple(p.shape) for _, p in split.adamw_decay + split.adamw_no_decay]
    return muon, adamw


def ns_flops(shapes, steps: int) -> float:
    """Newton-Schulz FLOPs: per matrix and step 4m²n (XXᵀ and BX) + 2m³ (A²), m = min side."""
    total = 0.0
    for s in shapes:
        m, n = sorted(s[-2:])
        batch = s[0] if len(s) == 3 else 1
        total += batch * steps * (4 * m * m * n + 2 * m**3)
    return total


def matmul_rate(n: int = 2048, reps: int = 5, dtype=torch.float32) -> float:
    """GEMM FLOP/s of this machine now (median of ``reps``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def time_steps(optimizers, params, repeats: int, flops: float = 0.0) -> tuple[float, float | None, float | None]:
    """Median seconds of one step() of all ``optimizers`` (after one untimed warm-up step), the median
    ratio step / FLOP limit, and the median probed rate. The machine is shared, so every timed step is
    bracketed by two matmul probes and compared with their mean: load drifts over a run."""
    for p in params:
        p.grad = torch.randn_like(p)
    for opt in optimizers:
        opt.step()
    times, ratios, rates = [], [], []
    for _ in range(repeats):
        before = matmul_rate() if flops else 0.0
        t0 = time.perf_counter()
        for opt in optimizers:
            opt.step()
        times.append(time.perf_counter() - t0)
        if flops:
            rates.append((before + matmul_rate()) / 2)
            ratios.append(times[-1] / (flops / rates[-1]))
    if not flops:
        return statistics.median(times), None, None
    print(f"    per-step ratios: {', '.join(f'{r:.2f}' for r in ratios)}", flush=True)
    return statistics.median(times), statistics.median(ratios), statistics.median(rates)


def polar_error(shapes, backend) -> tuple[float, float, float]:
    """Max relative Frobenius distance to U Vᵀ and the output singular value range, over distinct shapes."""
    gen = torch.Generator().manual_seed(0)
    err, lo, hi = 0.0, float("inf"), 0.0
    for shape in sorted(set(s[-2:] for s in shapes)):
        k = min(shape)
        U, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=gen, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=gen, dtype=torch.float64))
        G = ((U / torch.arange(1, k + 1, dtype=torch.float64)) @ V.T).float()
        polar = U @ V.T
        O = orthogonalize(G, backend, compute_dtype=torch.float32).double()
        err = max(err, ((O - polar).norm() / polar.norm()).item())
        s = torch.linalg.svdvals(O)
        lo, hi = min(lo, s.min().item()), max(hi, s.max().item())
    return err, lo, hi


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_size", default="hybrid-small-standard")
    ap.add_argument("--shapes", default=None,
                    help="Muon matrix shapes, e.g. '640x1280*26,2708x640*25' (overrides the model)")
    ap.add_argument("--backends", default="newtonschulz5,newtonschulz10,polar_express,cayley,conservative,aggressive")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per optimizer (median reported)")
    ap.add_argument("--torch_muon", choices=("sample", "full", "skip"), default="sample")
    args = ap.parse_args(argv)

    found = None if args.shapes else model_shapes(args.model_size)
    muon_shapes, adamw_shapes = found or (parse_shapes(args.shapes or FALLBACK_MUON), parse_shapes(FALLBACK_ADAMW))
    torch.manual_seed(0)
    muon_params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in muon_shapes]
    adamw_params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in adamw_shapes]
    everything = muon_params + adamw_params
    n_muon, n_all = sum(p.numel() for p in muon_params), sum(p.numel() for p in everything)
    print(f"# {args.model_size if found else 'shapes'}: {len(muon_params)} Muon matrices ({n_muon / 1e6:.1f}M), "
          f"{len(adamw_params)} AdamW tensors ({(n_all - n_muon) / 1e6:.1f}M); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")

    rows, rates = [], []

    def run(label, make, flops, backend=None):
        opts = make()
        seconds, ratio, rate = time_steps(opts, everything, args.repeats, flops)
        del opts
        gc.collect()
        if rate:
            rates.append(rate)
        err = polar_error(muon_shapes, backend) if backend else None
        rows.append((label, seconds, flops, flops / rate if flops else None, ratio, err))
        print(f"  {label:<34} {seconds:8.3f} s" + (f"   {ratio:5.2f}x limit" if ratio else ""), flush=True)

    adamw_kw = dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.01)
    run("torch.optim.AdamW (all params)", lambda: [torch.optim.AdamW(everything, **adamw_kw)], 0.0)

    ns5_flops = ns_flops(muon_shapes, 5)
    if args.torch_muon == "full":
        run("torch.optim.Muon (bf16) + AdamW", lambda: [torch.optim.Muon(muon_params, lr=0.02),
                                                       torch.optim.AdamW(adamw_params, **adamw_kw)], ns5_flops)
    elif args.torch_muon == "sample":
        # one step of torch.optim.Muon on one matrix of the most common shape, scaled by FLOPs
        shape = max(set(muon_shapes), key=muon_shapes.count)
        p = [torch.nn.Parameter(torch.randn(shape) * 0.02)]
        p[0].grad = torch.randn(shape)
        before = matmul_rate()
        t0 = time.perf_counter()
        torch.optim.Muon(p, lr=0.02).step()
        muon_s = (time.perf_counter() - t0) * ns5_flops / ns_flops([shape], 5)
        rate = (before + matmul_rate()) / 2
        rates.append(rate)
        adamw_s, _, _ = time_steps([torch.optim.AdamW(adamw_params, **adamw_kw)], adamw_params, args.repeats)
        total = muon_s + adamw_s
        limit = ns5_flops / rate
        rows.append(("torch.optim.Muon (bf16) + AdamW *", total, ns5_flops, limit, total / limit, None))
        print(f"  torch.optim.Muon (bf16) + AdamW *  {total:8.3f} s   {total / limit:5.2f}x limit"
              f"   (* {'x'.join(map(str, shape))} timed, scaled by FLOPs)", flush=True)

    for backend in args.backends.split(","):
        flops = ns_flops(muon_shapes, DEFAULT_STEPS[backend]) if backend != "cayley" else ns5_flops
        groups = [{"params": muon_params, "use_muon": True, "name": "muon", "backend": backend, "weight_decay": 0.01},
                  {"params": adamw_params, "use_muon": False, "name": "adamw", "lr": 3e-4, "weight_decay": 0.01}]
        run(f"ours {backend}", lambda: [Muon(groups, lr=0.02)], flops, backend)

    rate = statistics.median(rates)
    bf16 = matmul_rate(1024, 1, torch.bfloat16) if args.torch_muon != "skip" else float("nan")
    print(f"\nfp32 matmul rate (2048², median over the rows): {rate / 1e9:.1f} GFLOP/s "
          f"(min {min(rates) / 1e9:.1f}, max {max(rates) / 1e9:.1f}); bf16 (1024²): {bf16 / 1e9:.2f} GFLOP/s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores = 2.0 when only this runs)")
    print("| optimizer | step (s) | NS GFLOP | FLOP limit (s) | step / limit | orth. error vs UVᵀ | σ(output) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, seconds, flops, limit, ratio, err in rows:
        lim = f"{limit:.2f}" if limit else "–"
        r = f"{ratio:.2f}" if ratio else "–"
        e = f"{err[0]:.3f}" if err else "–"
        s = f"[{err[1]:.2f}, {err[2]:.2f}]" if err else "–"
        print(f"| {label} | {seconds:.2f} | {flops / 1e9:.0f} | {lim} | {r} | {e} | {s} |")
    print("\nFLOP limit: the row's NS FLOPs / the fp32 matmul rate probed around its timed steps; step / limit is the "
          "median over steps of each step against its own probes. cayley's limit is NS5's (it is a different "
          "algorithm). * = torch.optim.Muon estimated from one matrix, see above.")


if __name__ == "__main__":
    main()
