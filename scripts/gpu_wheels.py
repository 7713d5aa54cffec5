#!/usr/bin/env python3
"""Download the wheels the GPU check machine lacks into .gpu_wheels/ (git-ignored), for bench/gpu_check.sh.

    python3 scripts/gpu_wheels.py                      # datasets, trl, mambapy and what they need there
    python3 scripts/gpu_wheels.py --with-bitsandbytes  # + bitsandbytes (43 MB; only adamw_8bit uses it)

That machine (the device tool's nvidia-h100-x1 / nvidia-h200) reaches no package registry. It runs Python 3.12
with torch 2.11+cu130, transformers 5.17, accelerate 1.15 and most of the scientific stack preinstalled
(DEVICE_HAS below), but not datasets, trl, bitsandbytes or mambapy. This script takes the project's direct
dependencies (pyproject.toml, runtime and dev) that the machine lacks, at the versions of constraints.txt,
adds whatever their wheels require that the machine lacks too (read from each wheel's METADATA, markers
evaluated for CPython 3.12 on Linux x86_64), and downloads them all with --no-deps. torch, transformers and
accelerate are never downloaded: the machine's own builds stay. The folder travels with the check:

    run(command="bash bench/gpu_check.sh", carry=[".gpu_wheels"])

and gpu_check.sh installs from it with --no-index, holding every preinstalled package at its version.
mamba-ssm / causal-conv1d: PyPI has only their sources (a CUDA build takes longer than a device call), so
this script only tries for wheels; put wheels built for that torch and Python into .gpu_wheels/ by hand to
have gpu_check.sh use the fused kernels. The working tree and the carried folder travel within 64 MiB
together: the script prints both sizes.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".gpu_wheels"
BUDGET = 64 * 2**20  # what one device call carries: the working tree and the carried paths

# The device image's packages ('cuda' image, as listed on 2026-11-17 in the device tool's KINDS.md).
DEVICE_HAS = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
# versions seen there (KINDS.md's pip list): a carried wheel that needs another version of these is flagged
DEVICE_VERSIONS = {"accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
                   "tokenizers": "0.23.2", "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0"}
NEVER = {"torch", "transformers", "accelerate"}  # the machine's own builds stay, whatever a wheel asks for
OPTIONAL = {"bitsandbytes"}  # 43 MB, used only by --optimizer adamw_8bit / Muon's adamw_8bit: opt-in
KERNELS = ("mamba-ssm", "causal-conv1d")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
# markers evaluated as on that machine
ENV = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canon(name)] = version.strip()
    return out


def direct_deps() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [canon(Requirement(r).name) for r in reqs]


def download(spec: str, dest: Path) -> Path | None:
    """One wheel for CPython 3.12 / manylinux x86_64 (or pure Python), no dependencies; None if there is none."""
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(dest), "-q", spec]
    for p in PLATFORMS:
        cmd[4:4] = ["--platform", p]
    r = subprocess.run(cmd, capture_output=True, text=True)
    new = set(dest.iterdir()) - before
    if r.returncode or not new:
        return None
    return new.pop()


def requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    reqs = [Requirement(line) for line in msg.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**ENV, "extra": ""})]


def tree_size() -> int:
    """Bytes of what a device call sends besides the carried paths: tracked and untracked-not-ignored files."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--with-bitsandbytes", action="store_true", help="carry bitsandbytes too (43 MB)")
    ap.add_argument("--dest", type=Path, default=DEST)
    args = ap.parse_args()

    pinned = pins()
    skip = NEVER | (set() if args.with_bitsandbytes else OPTIONAL)
    todo = [(d, "mamba-trainer") for d in direct_deps() if d not in DEVICE_HAS and d not in skip]
    tmp = Path(tempfile.mkdtemp(prefix="gpu_wheels."))
    got: dict[str, tuple[Path, str]] = {}
    problems: list[str] = []
    missing: list[str] = []
    try:
        while todo:
            name, why = todo.pop(0)
            if name in got:
                continue
            spec = f"{name}=={pinned[name]}" if name in pinned else name
            wheel = download(spec, tmp)
            if wheel is None:
                missing.append(f"{spec} (needed by {why})")
                continue
            got[name] = (wheel, why)
            for req in requires(wheel):
                dep = canon(req.name)
                have = DEVICE_VERSIONS.get(dep)
                if have and not req.specifier.contains(have, prereleases=True):
                    problems.append(f"{name} needs {req} but that machine has {dep} {have}")
                if dep not in DEVICE_HAS and dep not in NEVER and dep not in got and dep not in skip:
                    todo.append((dep, name))
                elif dep in skip and dep in OPTIONAL:
                    problems.append(f"{name} needs {dep}, left out (--with-bitsandbytes carries it)")
        kernels = []
        for k in KERNELS:
            wheel = download(k, tmp)
            if wheel is not None:
                got[k] = (wheel, "fused kernels")
                kernels.append(k)

        args.dest.mkdir(exist_ok=True)
        for old in args.dest.glob("*.whl"):  # one version of each: two would stop the whole install there
            if kernels or not old.name.startswith(("mamba_ssm-", "causal_conv1d-")):
                old.unlink()
        for name, (wheel, why) in got.items():
            got[name] = (Path(shutil.move(str(wheel), args.dest / wheel.name)), why)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{args.dest}:")
    for name, (wheel, why) in sorted(got.items()):
        print(f"  {wheel.name:<58} {wheel.stat().st_size / 2**20:6.2f} MiB  for {why}")
    hand = sorted(w.name for w in args.dest.glob("*.whl") if w.name.startswith(("mamba_ssm-", "causal_conv1d-")))
    if hand and not kernels:
        print(f"  mamba-ssm / causal-conv1d: none on the index; kept, as put here by hand: {', '.join(hand)}")
    elif not kernels:
        print("  mamba-ssm / causal-conv1d: no wheels on the index (sources only), so gpu_check.sh runs transformers'"
              " PyTorch path")
    for p in problems:
        print(f"  note: {p}")
    size = sum(w.stat().st_size for w in args.dest.glob("*.whl"))
    tree = tree_size()
    total = size + tree
    print(f"size: {size / 2**20:.1f} MiB of wheels + {tree / 2**20:.1f} MiB working tree = {total / 2**20:.1f} MiB"
          f" of the {BUDGET / 2**20:.0f} MiB a device call carries")
    if missing:
        print(f"no wheel for CPython 3.12 manylinux x86_64 of: {', '.join(missing)}", file=sys.stderr)
        return 1
    if total > BUDGET:
        print("too big for one device call: leave out --with-bitsandbytes, or carry less", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
