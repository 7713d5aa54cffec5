"""``metrics.jsonl``: written one record per log (``append_metrics``), cut back on resume (``truncate_metrics``), and
read back by the one reader of a run's curves (``loss_curves``, ``series``, ``end_record``) that the training plot,
the sweep report and the benches all use.

Each record has ``step``; a training log has ``loss`` (and ``elapsed_s``, seconds since its launch started training),
an evaluation ``eval_loss`` and ``eval_runtime``; the last line of each launch is ``{"event": "end", "reason": ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..jsonio import METRICS_FILE, read_metrics, write_text

__all__ = ["CurvePoint", "append_metrics", "end_reason", "end_record", "loss_curves", "series", "truncate_metrics"]


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS_FILE, "a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint, so the continued run does not log them twice
    (and a line torn by the kill that stopped the run)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in kept))  # as append_metrics writes them


def _records(source) -> list[dict]:
    """``source``: a run folder (its metrics.jsonl is read) or the records themselves."""
    return source if isinstance(source, list) else read_metrics(source)


def end_record(records) -> dict | None:
    """The last end-of-run record (a resumed run has one per launch; the last one counts)."""
    ends = [r for r in _records(records) if r.get("event") == "end"]
    return ends[-1] if ends else None


def end_reason(records) -> str | None:
    """The ``end`` record's reason ("completed", "diverged", "stopped", ...), or None while/if the run never ended."""
    end = end_record(records)
    return end.get("reason") if end else None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def series(records, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the records that log it as a number at a numeric step."""
    pairs = [(r["step"], r[key]) for r in _records(records) if _number(r.get(key)) and _number(r.get("step"))]
    return [s for s, _ in pairs], [v for _, v in pairs]


@dataclass(frozen=True)
class CurvePoint:
    """One logged loss. ``clock_s``: seconds since the run first started training, running on across resumed
    launches (each launch restarts ``elapsed_s``); ``train_s``: this launch's ``elapsed_s`` minus every
    ``eval_runtime`` logged so far (evaluations excluded, as the convergence bench times a run)."""

    step: int
    clock_s: float
    train_s: float
    loss: float


def loss_curves(source) -> dict[str, list[CurvePoint]]:
    """``{"train": [CurvePoint], "eval": [CurvePoint]}`` from a run folder or its records, in logged order
    (records without ``elapsed_s`` are left out).

    >>> c = loss_curves([{"step": 0, "elapsed_s": 2.0, "eval_loss": 6.9, "eval_runtime": 2.0},
    ...                  {"step": 10, "elapsed_s": 12.0, "loss": 5.0},
    ...                  {"step": 10, "elapsed_s": 1.0, "loss": 4.5}])      # a resumed launch restarts its clock
    >>> [(p.step, p.clock_s, p.train_s, p.loss) for p in c["train"]]
    [(10, 12.0, 10.0, 5.0), (10, 13.0, -1.0, 4.5)]
    """
    out: dict[str, list[CurvePoint]] = {"train": [], "eval": []}
    offset, last, eval_seconds = 0.0, 0.0, 0.0
    for record in _records(source):
        if "elapsed_s" not in record:
            continue
        t = float(record["elapsed_s"])
        if t + 1e-9 < last:  # a resumed launch restarts its clock
            offset += last
        last = t
        if "eval_loss" in record:
            eval_seconds += float(record.get("eval_runtime", 0.0))
        if "loss" in record:
            out["train"].append(CurvePoint(int(record["step"]), offset + t, t - eval_seconds, float(record["loss"])))
        if "eval_loss" in record:
            out["eval"].append(CurvePoint(int(record["step"]), offset + t, t - eval_seconds,
                                          float(record["eval_loss"])))
    return out
