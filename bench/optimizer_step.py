"""One Muon step(), ours in each mode vs torch.optim.Muon, on the same matrices and gradients, side by side.

    python bench/optimizer_step.py                                 # hybrid-small's Muon matrices, ~2 min
    python bench/optimizer_step.py --model_size hybrid-tiny --repeats 20
    python bench/optimizer_step.py --profile                       # + where ours' default step spends its time
    python bench/optimizer_step.py --shapes "640x1280*26,2708x640*25"

Rows: torch.optim.Muon (plain NS5, always bf16) and ours at defaults (`compute_dtype` auto, `ns_method` auto),
plus each explicit mode (plain/gram x fp32/bf16). The modes run interleaved, round by round (A B C ... A B C),
so drifting machine load hits all alike; reported are the median step time, the median of per-round ratios
to torch, the FLOP limit (the FLOPs the mode really runs / this machine's GEMM rate in the mode's dtype,
probed at 1024² before the rounds) and the orthogonalization error: the relative Frobenius distance of the
mode's orthogonalized update to the exact polar factor U Vᵀ (SVD, fp64) of gradient-like matrices (power-law
spectrum σ_i ∝ 1/i), one per distinct shape, FLOP-weighted. NS5 does not converge to U Vᵀ (its singular values
end in ~[0.7, 1.1]), so ~0.2 is the method's own error; what matters is ours vs torch's in the same row set.

Only the Muon groups are timed (the AdamW side is the same fused kernel for every row). On a CPU without
native bf16 (AVX2 only) torch.optim.Muon's bf16 GEMMs run at ~0.4 GFLOP/s; there one step on one matrix of
the most common shape is timed and scaled by FLOPs ("--torch_muon sample", the default on such CPUs).
Not a test: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from optimizers import Muon  # noqa: E402
from optimizers.newton_schulz import ns_flops  # noqa: E402
from optimizers.orthogonalize import orthogonalize  # noqa: E402
from optimizers.precision import auto_dtype, has_native_bf16  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

# hybrid-small's Muon matrices (Zamba2, 512 wide), as split by optimizers.split_parameters: the fallback
# when configs/ cannot build the model
FALLBACK = "512x1024*25,2192x512*24,512x512*4,128x512*4,4096x128*4,1024x1024*3,4096x512*1,512x2048*1"
MODES = {  # label: Muon kwargs (None = torch.optim.Muon)
    "torch.optim.Muon (bf16 plain)": None,
    "ours default": {},
    "ours plain bf16 (= torch's math)": {"compute_dtype": "bfloat16", "ns_method": "plain"},
    "ours gram bf16": {"compute_dtype": "bfloat16", "ns_method": "auto"},
    "ours plain fp32": {"compute_dtype": "float32", "ns_method": "plain"},
    "ours gram fp32": {"compute_dtype": "float32", "ns_method": "auto"},
}


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """'640x1280*26,128x640' -> 26 x (640, 1280) and 1 x (128, 640)."""
    shapes = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        dims, _, count = item.partition("*")
        shapes += [tuple(int(d) for d in dims.split("x"))] * int(count or 1)
    return shapes


def model_shapes(size: str) -> list[tuple[int, ...]]:
    """The Muon matrices of a named size, built on the meta device (the fallback list if that fails)."""
    try:
        from configs.model_configs import get_model_config
        from mamba_trainer.models import build_model
        from optimizers import split_parameters

        vocab = 50304 if get_model_config(size).get("tokenizer") != "bundled" else 1024
        with torch.device("meta"):
            model = build_model(size, vocab_size=vocab)
        split = split_parameters(model)
        return [tuple(p.shape) for g in split.groups if g.use_muon for p in g.params]
    except Exception as exc:  # noqa: BLE001 - any failure means "use the fallback list"
        print(f"# could not build {size!r} ({type(exc).__name__}: {exc}); using hybrid-small's shapes")
        return parse_shapes(FALLBACK)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_rate(dtype: torch.dtype, device: torch.device, n: int = 1024, reps: int = 10) -> float:
    """GEMM FLOP/s in ``dtype`` now (best of ``reps`` after 3 warm-ups: the machine's rate, not its load;
    4096² on CUDA, where 1024² is launch-bound)."""
    n = 4096 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def mode_dtype_method(kwargs, device: torch.device = torch.device("cpu")) -> tuple[torch.dtype, str]:
    if kwargs is None:
        return torch.bfloat16, "plain"
    dtype = getattr(torch, kwargs["compute_dtype"]) if "compute_dtype" in kwargs else auto_dtype(device)[0]
    return dtype, kwargs.get("ns_method", "auto")


def gradient_like(shape, seed: int) -> torch.Tensor:
    """A matrix with a power-law spectrum σ_i ∝ 1/i (random singular vectors), as gradients roughly have."""
    gen = torch.Generator().manual_seed(seed)
    m, n = shape[-2:]
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    return ((U / torch.arange(1, k + 1, dtype=torch.float64)) @ V.T).float()


def orth_error(shapes, kwargs, device: torch.device) -> float:
    """FLOP-weighted relative Frobenius distance to U Vᵀ over the distinct shapes."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    total = weight = 0.0
    for i, shape in enumerate(sorted(set(s[-2:] for s in shapes))):
        G = gradient_like(shape, i).to(device)
        U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
        polar = U @ Vh
        if kwargs is None:
            O = _zeropower_via_newtonschulz(G, (3.4445, -4.7750, 2.0315), 5, 1e-7)
        else:
            dtype, method = mode_dtype_method(kwargs, device)
            O = orthogonalize(G, "newtonschulz5", compute_dtype=dtype, method=method)
        w = shapes.count(tuple(shape)) * ns_flops(shape, 5)
        total += w * ((O.double() - polar).norm() / polar.norm()).item()
        weight += w
    return total / weight


def make_optimizer(kwargs, params):
    if kwargs is None:
        return torch.optim.Muon(params, lr=0.02, weight_decay=0.01)
    return Muon([{"params": params, "name": "muon"}], lr=0.02, weight_decay=0.01, **kwargs)


def profile_default(params, steps: int = 3) -> None:
    """Self-CPU time per operator over ``steps`` default steps: which passes are not GEMMs."""
    from torch.profiler import ProfilerActivity, profile

    opt = make_optimizer({}, params)
    opt.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            opt.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_size", default="hybrid-small")
    ap.add_argument("--shapes", default=None, help="Muon matrix shapes, e.g. '640x1280*26,2708x640*25'")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated row labels to run")
    ap.add_argument("--torch_muon", choices=("auto", "full", "sample"), default="auto",
                    help="auto: full where this CPU has native bf16, else one matrix scaled by FLOPs")
    ap.add_argument("--profile", action="store_true", help="also profile ours' default step")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    shapes = parse_shapes(args.shapes) if args.shapes else model_shapes(args.model_size)
    device = torch.device(args.device)
    native_bf16 = has_native_bf16()
    print(f"# {args.shapes and 'shapes' or args.model_size}: {len(shapes)} Muon matrices "
          f"({sum(torch.Size(s).numel() for s in shapes) / 1e6:.1f}M params)")
    print(f"# {describe_machine()}")
    if device.type == "cuda":
        print(f"# GPU: {torch.cuda.get_device_name(device)}")
    rates = {dt: gemm_rate(dt, device) for dt in (torch.float32, torch.bfloat16)}
    print(f"# GEMM rate at 1024²: fp32 {rates[torch.float32] / 1e9:.0f} GFLOP/s, "
          f"bf16 {rates[torch.bfloat16] / 1e9:.1f} GFLOP/s; auto dtype here: {auto_dtype(device)[1]}")

    labels = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in labels if m not in MODES]
    if unknown:
        sys.exit(f"unknown mode {unknown[0]!r}; valid: {', '.join(MODES)}")
    sample_torch = args.torch_muon == "sample" or (args.torch_muon == "auto" and not native_bf16
                                                   and device.type == "cpu")
    torch.manual_seed(0)
    base = [torch.randn(s, device=device) * 0.02 for s in shapes]
    grads = [torch.randn(s, device=device) for s in shapes]
    sample_shape = max(set(shapes), key=shapes.count)
    all_flops = sum(ns_flops(s, 5, torch.bfloat16, "plain") for s in shapes)

    def make_params(idx):
        params = [torch.nn.Parameter(base[i].clone()) for i in idx]
        for p, i in zip(params, idx):
            p.grad = grads[i].clone()
        return params

    runs = {}
    for label in labels:
        sampled = MODES[label] is None and sample_torch
        idx = [shapes.index(sample_shape)] if sampled else list(range(len(shapes)))
        opt = make_optimizer(MODES[label], make_params(idx))
        opt.step()  # warm-up: state allocation, first-touch pages
        runs[label] = (opt, all_flops / ns_flops(sample_shape, 5, torch.bfloat16, "plain") if sampled else 1.0)
    times = {label: [] for label in labels}
    rates_before = dict(rates)
    for _ in range(args.repeats):
        for label in labels:
            opt, scale = runs[label]  # scale: one sampled matrix -> the whole set, by FLOPs
            sync(device)
            t0 = time.perf_counter()
            opt.step()
            sync(device)
            times[label].append((time.perf_counter() - t0) * scale)

    rates = {dt: max(rate, gemm_rate(dt, device)) for dt, rate in rates_before.items()}  # probed again after
    print(f"# GEMM rate used for the limits (best of the probes before and after): fp32 "
          f"{rates[torch.float32] / 1e9:.0f}, bf16 {rates[torch.bfloat16] / 1e9:.0f} GFLOP/s")
    torch_label = next((l for l in labels if MODES[l] is None), None)
    print(f"\n# load average at the end: {os.getloadavg()[0]:.2f} (2.0 on 2 cores when only this runs)")
    print("| mode | dtype | step (ms) | vs torch.optim.Muon | NS GFLOP | FLOP limit (ms) | step / limit | "
          "orth. error vs UVᵀ |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label in labels:
        kwargs = MODES[label]
        dtype, method = mode_dtype_method(kwargs, device)
        flops = sum(ns_flops(s, 5, dtype, method) for s in shapes)
        limit = flops / rates[dtype]
        med = statistics.median(times[label])
        vs = "1.00" if label == torch_label else (
            f"{statistics.median(a / b for a, b in zip(times[label], times[torch_label])):.2f}" if torch_label else "–")
        star = " *" if kwargs is None and sample_torch else ""
        print(f"| {label}{star} | {str(dtype).replace('torch.', '')} | {med * 1e3:,.0f} | {vs} | {flops / 1e9:,.0f} | "
              f"{limit * 1e3:,.0f} | {med / limit:.2f} | {orth_error(shapes, kwargs, device):.3f} |")
    if sample_torch:
        print(f"* timed on one {'x'.join(map(str, sample_shape))} matrix, scaled by FLOPs (no native bf16 here)")
    if args.profile:
        print("\n# profile of ours' default step (self CPU time per operator)")
        profile_default(make_params(list(range(len(shapes)))))


if __name__ == "__main__":
    main()
