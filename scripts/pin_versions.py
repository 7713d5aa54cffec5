#!/usr/bin/env python3
"""Write constraints.txt: the installed version of every package that mamba-trainer[dev] needs, transitively.

    python3 scripts/pin_versions.py              # rewrites constraints.txt at the repo root
    python3 scripts/pin_versions.py -o -         # prints it instead

Run it in an environment where the test suite has just passed (README: the second command, without
``-c constraints.txt``, in a fresh virtual environment). The closure is read from the installed packages'
metadata (``importlib.metadata`` requires, markers evaluated here), not from ``pip freeze``, so whatever else
the environment holds stays out. Left out on purpose:

* mamba-trainer itself (pip refuses a constraint on the project it installs editable);
* the ``cuda`` extra (mamba-ssm / causal-conv1d are source-only and CUDA-only);
* the CUDA build's own dependencies (nvidia-*, cuda-*, triton). torch==2.13.0 is a CPU build here and a
  CUDA build from PyPI on a GPU box; the CUDA build pins those packages with ``==`` itself, so pinning
  them again could only conflict (and there is no CPU environment to read their versions from).

Versions are written without their local label (``2.13.0+cpu`` -> ``2.13.0``): ``torch==2.13.0`` then matches
the CPU build here and the CUDA build on a GPU box, as the README's ``torch==2.13.0`` does.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
import re
import sys
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # packaging comes with transformers; pip vendors a copy in any case
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "mamba-trainer"
EXTRAS = ("dev",)
# the CUDA build of torch pins these itself (see the docstring); their subtrees are not followed either
EXCLUDE = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(req: Requirement, extras: set[str]) -> bool:
    """Whether ``req`` applies here, for a package installed with ``extras``."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in extras | {""})


def closure() -> tuple[dict[str, md.Distribution], list[str]]:
    """{canonical name: distribution} of everything PROJECT[EXTRAS] needs, and the names not installed."""
    found: dict[str, md.Distribution] = {}
    missing: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(PROJECT, frozenset(EXTRAS))]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        if name != PROJECT:
            found[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            dep = canon(req.name)
            if dep == PROJECT or EXCLUDE.match(dep) or not wanted(req, set(extras)):
                continue
            todo.append((dep, frozenset(canon(e) for e in req.extras)))
    return found, sorted(set(missing))


def readme_torch() -> str | None:
    m = re.search(r"torch==([0-9][0-9A-Za-z.]*)", (ROOT / "README.md").read_text())
    return m.group(1) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default=str(ROOT / "constraints.txt"), help="file to write, or - for stdout")
    ap.add_argument("--any-torch", action="store_true",
                    help="pin whatever torch is installed (scripts/check_latest.sh lists a newest-releases venv)")
    args = ap.parse_args()

    found, missing = closure()
    if PROJECT in missing:
        sys.exit(f"pin_versions: {PROJECT} is not installed in {sys.executable}; "
                 'install it first: python3 -m pip install torch==2.13.0 -e ".[dev]"')
    if missing:
        sys.exit(f"pin_versions: required but not installed: {', '.join(missing)} (a broken environment: "
                 "reinstall with the README's second command, run the tests, then pin)")

    pins = {name: Version(dist.version).public for name, dist in found.items()}
    want = readme_torch()
    if want and pins.get("torch") != want and not args.any_torch:
        sys.exit(f"pin_versions: torch {pins.get('torch')} is installed but README.md installs torch=={want}: "
                 "pin from an environment made by the README's command")

    lines = [
        "# The versions the test suite passed with: the whole dependency closure of mamba-trainer[dev]",
        "# (without the project itself, the cuda extra, and torch's own CUDA dependencies, which the CUDA",
        "# build of torch pins itself). Generated by scripts/pin_versions.py; do not edit by hand.",
        f"# From Python {platform.python_version()} on {sys.platform}-{platform.machine()}.",
        f"# Used as: python3 -m pip install -c constraints.txt torch=={pins['torch']} -e \".[dev]\"",
    ]
    lines += [f"{name}=={pins[name]}" for name in sorted(pins)]
    text = "\n".join(lines) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"pin_versions: {len(pins)} packages pinned in {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
