"""The dtype Muon's orthogonalization runs in: an explicit choice, or the fastest one this device multiplies in.

``compute_dtype=None`` ("auto") picks bfloat16 where the device has native bf16 matrix units, float32 elsewhere:

* CUDA: bfloat16 (tensor cores; what torch.optim.Muon and KellerJordan/Muon use).
* CPU with AVX-512 BF16 or AMX-BF16: bfloat16. oneDNN runs bf16 GEMMs on these units at several times the
  fp32 rate (measured 915 vs 198 GFLOP/s at 1024² on a 2-core AMD EPYC with avx512_bf16).
* Any other CPU (AVX2-only x86, most ARM): float32. Without the units bf16 GEMMs are emulated and run at a
  tiny fraction of fp32 speed (measured 0.4 GFLOP/s on an AVX2-only machine of this project's kind).

The decision reads the CPU's capability flags — what torch's own cpuinfo reports
(``torch._C._cpu._get_cpu_capability``), falling back to ``/proc/cpuinfo`` — instead of timing a probe: flags
are instant, deterministic and not fooled by a busy machine; the two units above are exactly the ones oneDNN
dispatches bf16 GEMMs to. `auto_dtype` returns the dtype and the reason, which `Muon.describe` records.
"""

from __future__ import annotations

import functools

import torch

from optimizers.errors import MuonConfigError

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")  # the names compute_dtype accepts
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags whose presence makes oneDNN's bf16 GEMM fast


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


def auto_dtype(device: torch.device, flags: frozenset[str] | None = None) -> tuple[torch.dtype, str]:
    """(dtype, reason) for ``compute_dtype=None`` on ``device``; ``flags`` overrides the CPU's (for tests).

    >>> auto_dtype(torch.device("cpu"), frozenset({"avx2", "avx512_bf16"}))[0]
    torch.bfloat16
    >>> auto_dtype(torch.device("cpu"), frozenset({"avx2"}))
    (torch.float32, 'auto: this CPU has no native bf16 GEMM (no avx512_bf16/amx_bf16 flag), fp32 is faster')
    """
    if device.type == "cuda":
        return torch.bfloat16, "auto: CUDA"
    if device.type == "cpu":
        have = [f for f in NATIVE_BF16_FLAGS if f in (cpu_flags() if flags is None else flags)]
        if have:
            return torch.bfloat16, f"auto: this CPU has {'/'.join(have)} (native bf16 GEMM)"
        return torch.float32, ("auto: this CPU has no native bf16 GEMM (no avx512_bf16/amx_bf16 flag), "
                               "fp32 is faster")
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
