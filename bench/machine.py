"""One line that says what a benchmark ran on: CPU model, cores, the flags that decide GEMM speed, GPU, load."""

from __future__ import annotations

import os
import platform

import torch

ISA_FLAGS = ("avx2", "avx512_f", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")  # torch and /proc names


def cpu_model_number() -> str | None:
    """/proc/cpuinfo's family and model numbers ("family 6 model 207"): the model name alone is often generic
    ("Intel(R) Xeon(R) Processor" on VMs), and these tell the generation apart."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("cpu family", "model") and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
                if not line.strip():
                    break
    except OSError:
        return None
    return f"family {fields['cpu family']} model {fields['model']}" if len(fields) == 2 else None


def describe_machine() -> str:
    from optimizers.precision import auto_dtype, bf16_speedup, cpu_flags, has_native_bf16

    try:
        name = torch._C._cpu._get_cpu_capability().get("cpu_name")
    except (AttributeError, RuntimeError):
        name = None
    model = cpu_model_number()
    flags = " ".join(f for f in ISA_FLAGS if f in cpu_flags()) or "none of " + "/".join(ISA_FLAGS)
    if has_native_bf16():  # what Muon's auto dtype decides from (optimizers/precision.py)
        flags += (f"; bf16 GEMM at {bf16_speedup():.2f}x fp32's speed (Muon's auto dtype here: "
                  f"{str(auto_dtype(torch.device('cpu'))[0]).replace('torch.', '')})")
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"
    return (f"CPU: {name or platform.processor() or platform.machine()}{f', {model}' if model else ''} "
            f"({os.cpu_count()} cores), flags: {flags}{gpu}; torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads; load average {os.getloadavg()[0]:.2f}")


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
