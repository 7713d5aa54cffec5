"""One line that says what a benchmark ran on: CPU model, cores, the flags that decide GEMM speed, GPU, load."""

from __future__ import annotations

import os
import platform

import torch

ISA_FLAGS = ("avx2", "avx512_f", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")  # torch and /proc names


def describe_machine() -> str:
    from optimizers.precision import cpu_flags

    try:
        name = torch._C._cpu._get_cpu_capability().get("cpu_name")
    except (AttributeError, RuntimeError):
        name = None
    flags = " ".join(f for f in ISA_FLAGS if f in cpu_flags()) or "none of " + "/".join(ISA_FLAGS)
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"
    return (f"CPU: {name or platform.processor() or platform.machine()} ({os.cpu_count()} cores), flags: {flags}"
            f"{gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"load average {os.getloadavg()[0]:.2f}")


def machine_key() -> str:
    """What decides speed and stays fixed on one machine (CPU model, cores, ISA flags, GPU): two timings are
    comparable only when their keys match."""
    from optimizers.precision import cpu_flags

    try:
        name = torch._C._cpu._get_cpu_capability().get("cpu_name")
    except (AttributeError, RuntimeError):
        name = None
    flags = " ".join(f for f in ISA_FLAGS if f in cpu_flags())
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{name or platform.processor() or platform.machine()} ({os.cpu_count()} cores; {flags}; {gpu})"
