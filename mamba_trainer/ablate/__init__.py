"""Muon ablation sweeps: ``muon-ablate`` / ``python -m mamba_trainer.ablate`` (see ``cli`` for the commands).

``factors`` (factors, value parsing, grids), ``spec`` (sweep specs, variants), ``runner`` (subprocess per
variant, resumable, GPU workers), ``report`` (results.json/csv, README) and ``plots`` (the three PNGs) are
usable on their own.
"""

from .cli import main

__all__ = ["main"]
