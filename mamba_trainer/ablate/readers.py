"""What the runner, the report and the plots read back from run folders: shared here so that none of them
imports another for it (``report`` uses ``plots``, never the other way round).

JSON files and ``metrics.jsonl`` are read by ``mamba_trainer.jsonio`` (tolerant of torn and missing files); a run's
curves by ``mamba_trainer.rundir.metrics`` (the one reader the training plot and the benches use too).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..rundir import end_record, loss_curves

__all__ = ["curves", "end_record", "finite"]


def finite(x) -> bool:
    """A real, finite number (not a bool, not NaN or inf): what a metric must be to be ranked or plotted.

    >>> finite(1.5), finite(float("nan")), finite(True), finite("3")
    (True, False, False, False)
    """
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def curves(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{"train": [(step, seconds, loss)], "eval": [...]}``; seconds run on across resumed launches."""
    return {kind: [(p.step, p.clock_s, p.loss) for p in points] for kind, points in loss_curves(run_dir).items()}
