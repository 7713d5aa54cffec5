"""What the runner, the report and the plots read back from run folders: shared here so that none of them
imports another for it (``report`` uses ``plots``, never the other way round).

JSON files and ``metrics.jsonl`` are read by ``mamba_trainer.jsonio`` (tolerant of torn and missing files).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..jsonio import read_metrics

__all__ = ["curves", "end_record", "finite"]


def finite(x) -> bool:
    """A real, finite number (not a bool, not NaN or inf): what a metric must be to be ranked or plotted.

    >>> finite(1.5), finite(float("nan")), finite(True), finite("3")
    (True, False, False, False)
    """
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def end_record(records: list[dict]) -> dict | None:
    """The last end-of-run record (a resumed run has one per launch; the last one counts)."""
    ends = [r for r in records if r.get("event") == "end"]
    return ends[-1] if ends else None


def curves(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{"train": [(step, seconds, loss)], "eval": [...]}``; seconds run on across resumed launches."""
    out: dict[str, list] = {"train": [], "eval": []}
    offset, last = 0.0, 0.0
    for record in read_metrics(run_dir):
        if "elapsed_s" not in record:
            continue
        t = float(record["elapsed_s"])
        if t + 1e-9 < last:  # a resumed launch restarts its clock
            offset += last
        last = t
        if "loss" in record:
            out["train"].append((int(record["step"]), offset + t, float(record["loss"])))
        if "eval_loss" in record:
            out["eval"].append((int(record["step"]), offset + t, float(record["eval_loss"])))
    return out
