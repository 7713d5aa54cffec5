"""``environment.json``: the software and machine a run trained on."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

__all__ = ["environment_info", "git_commit"]


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
