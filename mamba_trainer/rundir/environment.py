"""``environment.json``: the software and machine a run trained on."""

from __future__ import annotations

import os
import platform
import subprocess
import time
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


def busy_cores(interval: float = 0.25) -> float | None:
    """How many of the cores this process may run on other processes keep busy now: /proc/stat's busy time of those
    cores over ``interval`` seconds while this process sleeps (steal time left out: no thread count helps with it).
    None where there is no /proc/stat."""
    def sample(cpus):
        busy = total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
                    busy += user + nice + system + irq + softirq
                    total += user + nice + system + idle + iowait + irq + softirq + steal
        return busy, total

    try:
        cpus = os.sched_getaffinity(0)
        busy0, total0 = sample(cpus)
        time.sleep(interval)
        busy1, total1 = sample(cpus)
    except (AttributeError, OSError, ValueError):
        return None
    return len(cpus) * (busy1 - busy0) / max(total1 - total0, 1)


def cpu_contention_note(threads: int, env=os.environ, busy: float | None = None) -> str | None:
    """One line when a CPU run's torch threads outnumber the cores other work leaves idle, or None.

    torch's intra-op threads meet at a barrier after every parallel op: when another process holds a core, the
    thread scheduled there waits for its time slice and every op waits for it, so a run with more threads than idle
    cores can be several times slower than one with fewer. Other work is what keeps cores busy now (``busy_cores``,
    or ``busy``) and has for the last minute (the 1-minute load average, less the ~0.2 this process adds while it
    imports): a burst, such as the pip install before README's demo, says nothing. Nothing is said when
    OMP_NUM_THREADS is set (the user chose).
    """
    if "OMP_NUM_THREADS" in env or threads <= 1:
        return None
    try:
        cores = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Linux, or no load average: nothing to say
        return None
    if load - 0.2 < 0.5:
        return None
    busy = busy_cores() if busy is None else busy
    if busy is None or busy < 0.5:
        return None
    idle = max(int(cores - min(busy, cores) + 0.5), 1)
    if threads <= idle:
        return None
    return (f"note: other work keeps about {min(busy, cores):.1f} of the {cores} cores this run may use busy "
            f"(1-minute load {load:.2f}), and torch's {threads} threads wait on each other whenever one of them is "
            "descheduled, which can make each step several times slower: stop the other work, or run with "
            f"OMP_NUM_THREADS={idle} to use only the idle cores")
