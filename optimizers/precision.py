"""The dtype Muon's orthogonalization runs in: an explicit choice, or the faster one on this device.

``compute_dtype=None`` ("auto") picks bfloat16 where the device multiplies bf16 matrices faster than fp32:

* CUDA: bfloat16 (tensor cores; what torch.optim.Muon and KellerJordan/Muon use).
* CPU without AVX-512 BF16 or AMX-BF16 (AVX2-only x86, most ARM): float32, decided from the flags alone. Without
  the units bf16 GEMMs are emulated and run at a tiny fraction of fp32 speed (measured 0.4 GFLOP/s on an
  AVX2-only machine of this project's kind), so there is nothing to measure.
* CPU with one of those flags: a short probe decides. The flag says oneDNN *can* run bf16 GEMMs natively, not
  that they are faster: on a 2-core AMD EPYC with avx512_bf16 bf16 ran 915 vs fp32's 198 GFLOP/s at 1024², but on
  a 2-core Intel Xeon VM (model 207, avx512_bf16 without AMX exposed) oneDNN's avx512_core_bf16 kernel ran at
  0.53-0.59x fp32's speed at every size from 256² to 2048². The probe times 512² GEMMs in both dtypes,
  interleaved, best of 5 (~30 ms, once per process and thread count), and picks bf16 only when it is at least
  `BF16_MARGIN` times faster: on a tie fp32 wins (it is the more accurate). Both dtypes are timed under the same
  load, so a busy machine slows both alike and the ratio stays far from the threshold on both machines measured
  (0.55-0.62x, 4.2-4.6x; under the lr study's load, 2 threads, 0.81-0.85x).

`auto_dtype` returns the dtype and the reason (with the measured ratio), which `Muon.describe` records.
"""

from __future__ import annotations

import functools
import time

import torch

from optimizers.errors import MuonConfigError

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")  # the names compute_dtype accepts
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags under which oneDNN runs bf16 GEMMs natively
BF16_MARGIN = 1.25  # bf16 must multiply this much faster than fp32 to be the auto dtype on a CPU


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (lower case): torch's cpuinfo where available, else /proc/cpuinfo, else none."""
    try:
        caps = torch._C._cpu._get_cpu_capability()
        return frozenset(k.lower() for k, v in caps.items() if v is True)
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("flags", "features")):
                    return frozenset(line.split(":", 1)[1].lower().split())
    except OSError:
        pass
    return frozenset()


_agreed_speedup: float | None = None  # set under DDP/FSDP2: the slowest rank's ratio, which every rank then uses


def bf16_speedup(n: int = 512, reps: int = 5) -> float:
    """fp32 time / bf16 time of an n x n GEMM on this CPU, at torch's current thread count (cached per count);
    in a multi-process run, the ratio the ranks agreed on (`agree_bf16_speedup`)."""
    if _agreed_speedup is not None:
        return _agreed_speedup
    return _bf16_speedup(n, reps, torch.get_num_threads())


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    return any(f in (cpu_flags() if flags is None else flags) for f in NATIVE_BF16_FLAGS)


def agree_bf16_speedup(all_reduce_min) -> float:
    """Make every rank use the same ratio (so all pick the same auto dtype and send updates in it): the smallest
    of the ranks' own (0 on a rank without native bf16). ``all_reduce_min`` reduces a float64 tensor in place.
    Every rank must call it together."""
    global _agreed_speedup
    local = _bf16_speedup(512, 5, torch.get_num_threads()) if has_native_bf16() else 0.0
    value = torch.tensor([local], dtype=torch.float64)
    all_reduce_min(value)
    _agreed_speedup = float(value)
    return _agreed_speedup


@functools.lru_cache(maxsize=8)
def _bf16_speedup(n: int, reps: int, threads: int) -> float:
    gen = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    pairs = {torch.float32: (a32, b32), torch.bfloat16: (a32.bfloat16(), b32.bfloat16())}
    for a, b in pairs.values():  # warm-up: oneDNN builds its kernels on first use
        torch.mm(a, b)
    best = dict.fromkeys(pairs, float("inf"))
    for _ in range(reps):  # interleaved, so load that comes and goes hits both dtypes alike
        for dtype, (a, b) in pairs.items():
            start = time.perf_counter()
            torch.mm(a, b)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def auto_dtype(device: torch.device, flags: frozenset[str] | None = None,
               speedup: float | None = None) -> tuple[torch.dtype, str]:
    """(dtype, reason) for ``compute_dtype=None`` on ``device``. ``flags`` overrides the CPU's flags and
    ``speedup`` the measured bf16/fp32 speed ratio (`bf16_speedup`), for tests.

    >>> auto_dtype(torch.device("cpu"), frozenset({"avx2", "avx512_bf16"}), speedup=4.6)[0]
    torch.bfloat16
    >>> auto_dtype(torch.device("cpu"), frozenset({"avx2", "avx512_bf16"}), speedup=0.55)[0]
    torch.float32
    >>> auto_dtype(torch.device("cpu"), frozenset({"avx2"}))
    (torch.float32, 'auto: this CPU has no native bf16 GEMM (no avx512_bf16/amx_bf16 flag), fp32 is faster')
    """
    if device.type == "cuda":
        return torch.bfloat16, "auto: CUDA"
    if device.type == "cpu":
        have = "/".join(f for f in NATIVE_BF16_FLAGS if f in (cpu_flags() if flags is None else flags))
        if not have:
            return torch.float32, ("auto: this CPU has no native bf16 GEMM (no avx512_bf16/amx_bf16 flag), "
                                   "fp32 is faster")
        ratio = bf16_speedup() if speedup is None else speedup
        if ratio >= BF16_MARGIN:
            return torch.bfloat16, f"auto: this CPU has {have} and its bf16 GEMM measured {ratio:.2f}x fp32's speed"
        return torch.float32, (f"auto: this CPU has {have} but its bf16 GEMM measured {ratio:.2f}x fp32's speed "
                               f"(bf16 needs >= {BF16_MARGIN}x), fp32 is faster")
    return torch.float32, f"auto: float32 on {device.type}"


def resolve_dtype(compute_dtype, device: torch.device) -> torch.dtype:
    """``compute_dtype`` (a dtype, its name, or None = `auto_dtype`) as a dtype."""
    if compute_dtype is None or compute_dtype == "auto":
        return auto_dtype(device)[0]
    if isinstance(compute_dtype, torch.dtype):
        return compute_dtype
    dtype = getattr(torch, str(compute_dtype).replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise MuonConfigError(f"unknown compute_dtype {compute_dtype!r}; valid: {', '.join(COMPUTE_DTYPES)}")
    return dtype


def describe_dtype(compute_dtype, device: torch.device) -> str:
    """The dtype a group will compute in on ``device``, with why: 'bfloat16 (auto: ...)' or 'float32 (set)'."""
    dtype = resolve_dtype(compute_dtype, device)
    name = str(dtype).replace("torch.", "")
    if compute_dtype is None or compute_dtype == "auto":
        return f"{name} ({auto_dtype(device)[1]})"
    return f"{name} (set explicitly)"
