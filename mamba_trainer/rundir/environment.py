"""``environment.json``: the software and machine a run trained on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

__all__ = ["cpu_contention_note", "environment_info", "git_commit"]


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(kernels: str, world_size: int) -> dict:
    import accelerate
    import datasets
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "git_commit": git_commit(),
        "kernels": kernels,
        "world_size": world_size,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    # the installed version from package metadata: importing bitsandbytes prints a kernels warning on every
    # run, although nothing 8-bit may be used (it is imported only where adamw_8bit is asked for)
    from importlib.metadata import PackageNotFoundError, version

    try:
        info["bitsandbytes"] = version("bitsandbytes")
    except PackageNotFoundError:
        info["bitsandbytes"] = None
    return info


def cpu_contention_note(threads: int, env=os.environ) -> str | None:
    """One line when a CPU run's torch threads outnumber the cores other work leaves idle, or None.

    torch's intra-op threads meet at a barrier after every parallel op: when another process holds a core, the
    thread scheduled there waits for its time slice and every op waits for it, so a run with more threads than idle
    cores can be several times slower than one with fewer. Other work is read from the 1-minute load average (less
    the ~0.2 this process adds while it imports). Nothing is said when OMP_NUM_THREADS is set (the user chose).
    """
    if "OMP_NUM_THREADS" in env or threads <= 1:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Linux, or no load average: nothing to say
        return None
    busy = max(load - 0.2, 0.0)
    idle = max(int(cores - busy + 0.5), 1)
    if busy < 0.5 or threads <= idle:
        return None
    return (f"note: other work keeps about {min(busy, cores):.1f} of this machine's {cores} cores busy (1-minute load "
            f"{load:.2f}), and torch's {threads} threads wait on each other whenever one of them is descheduled, "
            f"which can make each step several times slower: stop the other work, or run with OMP_NUM_THREADS={idle} "
            "to use only the idle cores")
