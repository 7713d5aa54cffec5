"""``plots/training.png`` for a run folder, drawn from its ``metrics.jsonl`` alone (run folders describe themselves).

Panels: train and eval loss vs step; both learning rates (Muon and AdamW, or the single lr of an AdamW run);
tokens/s; answer accuracy when the run evaluated it (any ``eval_*accuracy`` key).

    python -m mamba_trainer.training_plot checkpoints/<run>
"""

from __future__ import annotations

import sys
from pathlib import Path

from .jsonio import atomic_path, read_metrics
from .rundir.metrics import series  # the one reader of a run's logged values

PLOT_FILE = Path("plots") / "training.png"
__all__ = ["PLOT_FILE", "plot_training", "read_metrics", "series"]


def plot_training(run_dir: Path) -> Path | None:
    """Write ``<run_dir>/plots/training.png``; returns its path, or None when nothing was logged yet."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not series(records, "loss")[0] and not series(records, "eval_loss")[0]:
        return None
    accuracy = sorted({k for r in records for k in r if k.startswith("eval_") and "accuracy" in k})
    panels = [("loss", ["loss", "eval_loss"], "linear"), ("learning rate", ["lr_muon", "lr_adamw", "learning_rate"], "log"),
              ("tokens / s", ["tokens_per_second"], "linear")]
    if accuracy:
        panels.append(("answer accuracy", accuracy, "linear"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, keys, scale) in zip(axes[:, 0], panels):
        if title == "learning rate" and series(records, "lr_muon")[0]:
            keys = ["lr_muon", "lr_adamw"]  # learning_rate repeats the first group's lr
        for key in keys:
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, values, marker="o" if key.startswith("eval_") else None, markersize=3, label=key)
        if scale == "log" and any(v > 0 for k in keys for v in series(records, k)[1]):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(run_dir.name, fontsize=11)
    fig.tight_layout()
    out = run_dir / PLOT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:  # written whole or not at all
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mamba_trainer.training_plot <run folder>")
    path = plot_training(Path(sys.argv[1]))
    print(path or f"error: no losses in {Path(sys.argv[1]) / 'metrics.jsonl'} yet")
