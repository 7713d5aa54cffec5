"""Muon ablation sweeps: ``muon-ablate`` / ``python -m mamba_trainer.ablate`` (see ``cli`` for the commands).

``spec`` (factors, value parsing, grids, variants), ``runner`` (subprocess per variant, resumable, GPU
workers), ``report`` (results.json/csv, README) and ``plots`` (the three PNGs) are usable on their own.
"""

from .cli import main

__all__ = ["main"]
