"""The three sweep plots (matplotlib, Agg backend), made from ranked result rows and the run folders.

* ``performance_comparison.png``: val loss, val perplexity, val accuracy and train time per variant.
* ``training_curves.png``: val and train loss against steps and against wall-clock seconds.
* ``performance_heatmap.png``: final val loss over two grid factors, one panel per value of a third.
"""

from __future__ import annotations

import math
from pathlib import Path

from .readers import curves, finite
from .factors import ALIASES, FACTORS

BEST, BASE, OTHER, BAD = "#2e9e44", "#1f5fbf", "#8fa8c8", "#b0b0b0"
TOP_K = 6  # curves drawn in colour; the rest in grey


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(r) -> bool:
    return r["rank"] is not None


def make_plots(sweep_dir: Path, ranked: list[dict], grid: dict[str, list[str]], heatmap: list[str] | None) -> list[str]:
    out = Path(sweep_dir) / "plots"
    out.mkdir(exist_ok=True)
    performance_comparison(ranked, out / "performance_comparison.png")
    training_curves(sweep_dir, ranked, out / "training_curves.png")
    performance_heatmap(ranked, grid, heatmap, out / "performance_heatmap.png")
    return ["performance_comparison.png", "training_curves.png", "performance_heatmap.png"]


def _short(name: str, width: int = 42) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def performance_comparison(ranked: list[dict], path: Path) -> None:
    plt = _plt()
    rows = ranked
    n = len(rows)
    fig, axes = plt.subplots(1, 4, figsize=(19, 1.6 + 0.36 * max(n, 3)), sharey=True, squeeze=False)
    ys = list(range(n))[::-1]  # best at the top
    panels = [("val_loss", "Val loss (nats/token)\nlower is better", "{:.4f}"),
              ("val_perplexity", "Val perplexity\nlower is better", "{:.2f}"),
              ("val_accuracy", "Val next-token accuracy\nhigher is better", "{:.4f}"),
              ("train_time_s", "Training time (s)\nlower is better", "{:.1f}")]
    for ax, (key, title, fmt) in zip(axes[0], panels):
        timing = key == "train_time_s"
        # diverged runs show their time, but no (meaningless) quality bar
        vals = [r[key] if finite(r[key]) and (_ok(r) or timing) else None for r in rows]
        shown = [v for v in vals if v is not None] or [0.0]
        lo, hi = min(shown), max(shown)
        pad = (hi - lo) * 0.12 or abs(hi) * 0.02 or 1.0
        left = 0.0 if timing else lo - pad
        right = hi * 1.22 if timing else hi + 2.2 * pad
        for y, v, r in zip(ys, vals, rows):
            color = BEST if r["rank"] == 1 else (OTHER if _ok(r) else BAD)
            if v is None:
                label = r["status"] if r["status"] in ("diverged", "failed") else "no eval"
                ax.text(left + 0.02 * (right - left), y, f"{label} at step {r['steps']}", va="center", fontsize=8,
                        color="#a03030")
                continue
            ax.barh(y, v - left, left=left, color=color, edgecolor=BASE if r["is_base"] else color,
                    linewidth=2.0 if r["is_base"] else 0.5, hatch=None if _ok(r) else "//", height=0.72)
            ax.text(v, y, " " + fmt.format(v) + ("" if _ok(r) else f" ({r['status']})"), va="center", fontsize=8)
        ax.set_xlim(left, right)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(ys, [_short(r["variant"], 48) for r in rows], fontsize=8)
    fig.suptitle("Performance comparison: best variant green, base outlined blue, diverged grey", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _smooth(values: list[float], window: int) -> list[float]:
    if window <= 1:
        return values
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def training_curves(sweep_dir: Path, ranked: list[dict], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(14, 9), squeeze=False)
    cmap = plt.get_cmap("tab10")
    colored = [r for r in ranked if _ok(r)][:TOP_K]
    colored += [r for r in ranked if r["is_base"] and r not in colored]
    finite_losses: dict[int, list[float]] = {0: [], 1: []}  # per column: validation, training
    drawn = 0
    # grey first so the coloured ones sit on top
    order = [r for r in ranked if r not in colored] + colored[::-1]
    for r in order:
        c = curves(Path(sweep_dir) / r["run_dir"])
        if not c["train"] and not c["eval"]:
            continue
        drawn += 1
        if r in colored:
            i = colored.index(r)
            style = dict(color=cmap(i % 10), lw=2.6 if r["rank"] == 1 else 1.5, zorder=3,
                         label=(f"#{r['rank']} " if r["rank"] else f"({r['status']}) ") + _short(r["variant"], 36)
                         + (" (base)" if r["is_base"] and not r["variant"].startswith("Base") else ""))
        elif not _ok(r):
            style = dict(color="#d62728", lw=0.9, ls="--", alpha=0.6, zorder=1)
        else:
            style = dict(color=BAD, lw=0.8, alpha=0.7, zorder=1)
        for col, key in enumerate(("eval", "train")):
            pts = [p for p in c[key] if finite(p[2])]
            if not pts:
                continue
            ys = [p[2] for p in pts]
            if key == "train":
                ys = _smooth(ys, max(1, len(ys) // 25))
            if _ok(r):
                finite_losses[col] += ys
            for row, xi in enumerate((0, 1)):
                ax = axes[row][col]
                marker = "o" if key == "eval" and len(pts) <= 30 else None
                ax.plot([p[xi] for p in pts], ys, marker=marker, ms=3, **style)
    titles = {(0, 0): "Validation loss vs step", (0, 1): "Training loss vs step (smoothed)",
              (1, 0): "Validation loss vs wall-clock", (1, 1): "Training loss vs wall-clock (smoothed)"}
    for (row, col), title in titles.items():
        ax = axes[row][col]
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("optimizer step" if row == 0 else "seconds since training start (evaluations included)")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        if finite_losses[col]:
            lo, hi = min(finite_losses[col]), max(finite_losses[col])
            if lo > 0 and hi / lo > 4:  # from ~7 at the start to ~0.2: a log axis keeps the end readable
                from matplotlib.ticker import FuncFormatter, LogLocator

                ax.set_yscale("log")
                ax.set_ylim(lo / 1.05, hi * 1.05)
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(1.5, 3.0, 4.0, 7.0)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.set_ylabel("loss (nats/token, log scale)")
            else:
                ax.set_ylim(lo - 0.03 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    handles, labels = axes[0][0].get_legend_handles_labels()
    if len(handles) < len(axes[0][1].get_legend_handles_labels()[0]):
        handles, labels = axes[0][1].get_legend_handles_labels()
    pairs = sorted(zip(labels, handles), key=lambda p: int(p[0][1:].split()[0]) if p[0][1:2].isdigit() else 10**6)
    labels, handles = [p[0] for p in pairs], [p[1] for p in pairs]
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(handles)), fontsize=9, frameon=False)
    if drawn > len(colored):
        fig.text(0.99, 0.995, "grey: other variants; red dashed: diverged (clipped)", ha="right", va="top", fontsize=8)
    fig.suptitle("Training curves", fontsize=12)
    fig.tight_layout(rect=(0, 0.07 if handles else 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def choose_axes(grid: dict[str, list[str]], requested: list[str] | None = None) -> tuple[list[str], str | None]:
    """(x/y factors, facet factor) for the heatmap: the requested ones, else lr x momentum when both vary,
    else the factors with the most values; the next one is the facet.

    >>> choose_axes({"lr": ["1", "2"], "ns_steps": ["4", "8", "16"], "momentum": ["0.9", "0.95"]})
    (['lr', 'momentum'], 'ns_steps')
    >>> choose_axes({"backend": ["a", "b"]})
    (['backend'], None)
    """
    names = [ALIASES.get(k, k) for k, v in grid.items() if len(v) > 1]
    if requested:
        req = [ALIASES.get(k, k) for k in requested]
        return req[:2], (req[2] if len(req) > 2 else None)
    if "lr" in names and "momentum" in names:
        axes = ["lr", "momentum"]
    else:
        axes = sorted(names, key=lambda n: (-len(grid[n]), names.index(n)))[:2]
    rest = [n for n in sorted(names, key=lambda n: (-len(grid[n]), names.index(n))) if n not in axes]
    return axes, (rest[0] if rest else None)


def _sorted_texts(name: str, texts: list[str]) -> list[str]:
    from .factors import parse_value

    f = FACTORS.get(name)
    if f is None:
        return list(texts)
    return sorted(texts, key=lambda t: parse_value(f, t).sort_key())


def performance_heatmap(ranked: list[dict], grid: dict[str, list[str]], requested: list[str] | None,
                        path: Path) -> None:
    plt = _plt()
    import numpy as np

    axes_f, facet = choose_axes(grid, requested)
    grid_rows = [r for r in ranked if r["kind"] == "grid"]
    if not axes_f or not grid_rows:
        _variant_heatmap(ranked, path)
        return
    x = axes_f[0]
    y = axes_f[1] if len(axes_f) > 1 else None
    xs = _sorted_texts(x, grid[x])
    ys = _sorted_texts(y, grid[y]) if y else [""]
    facets = _sorted_texts(facet, grid[facet]) if facet else [None]
    others = [k for k in grid if k not in (x, y, facet) and len(grid[k]) > 1]

    def cell(xv, yv, fv):
        mine = [r for r in grid_rows if r["factors"].get(x) == xv and (y is None or r["factors"].get(y) == yv)
                and (facet is None or r["factors"].get(facet) == fv)]
        good = [r["val_loss"] for r in mine if _ok(r)]
        if good:
            return min(good), "ok"
        return math.nan, ("div" if any(r["status"] in ("diverged", "failed") for r in mine) else "n/a")

    cells = {(fv, xv, yv): cell(xv, yv, fv) for fv in facets for xv in xs for yv in ys}
    losses = [v for v, _ in cells.values() if math.isfinite(v)]
    vmin, vmax = (min(losses), max(losses)) if losses else (0.0, 1.0)
    if vmax - vmin < 1e-12:
        vmax = vmin + 1e-6
    best = min(losses) if losses else None
    cols = len(facets)
    fig, axs = plt.subplots(1, cols, figsize=(1.6 + 1.35 * len(xs) * cols + 1.2, 1.8 + 0.85 * len(ys)), squeeze=False,
                            sharey=True)
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="#d9d9d9")
    image = None
    for ax, fv in zip(axs[0], facets):
        data = np.array([[cells[(fv, xv, yv)][0] for xv in xs] for yv in ys], dtype=float)
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                value, state = cells[(fv, xv, yv)]
                text = f"{value:.4f}" if state == "ok" else ("diverged" if state == "div" else "n/a")
                ax.text(j, i, text, ha="center", va="center", fontsize=9,
                        color="black" if state == "ok" else "#444444", fontweight="bold" if value == best else None)
                if state == "ok" and value == best:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=3))
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel(FACTORS[x].label if x in FACTORS else x)
        if y:
            ax.set_yticks(range(len(ys)), ys)
            if ax is axs[0][0]:
                ax.set_ylabel(FACTORS[y].label if y in FACTORS else y)
        else:
            ax.set_yticks([])
        if facet:
            ax.set_title(f"{FACTORS[facet].label if facet in FACTORS else facet} = {fv}", fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=axs[0].tolist(), shrink=0.9)
        bar.set_label("final val loss (nats/token), lower is better")
    title = "Validation loss heatmap (best boxed)"
    if others:
        title += f"; each cell = best over {', '.join(FACTORS[o].label if o in FACTORS else o for o in others)}"
    fig.suptitle(title, fontsize=11, y=1.04)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _variant_heatmap(ranked: list[dict], path: Path) -> None:
    """No grid to lay out: one coloured column of val loss per variant (best first)."""
    plt = _plt()
    import numpy as np

    rows = ranked
    vals = np.array([[r["val_loss"] if _ok(r) and finite(r["val_loss"]) else np.nan] for r in rows], dtype=float)
    losses = vals[np.isfinite(vals)]
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.45 * len(rows)))
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="#d9d9d9")
    lo, hi = (float(losses.min()), float(losses.max())) if losses.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, aspect="auto", vmin=lo, vmax=max(hi, lo + 1e-6))
    for i, r in enumerate(rows):
        text = f"{r['val_loss']:.4f}" if _ok(r) and finite(r["val_loss"]) else r["status"]
        ax.text(0, i, text, ha="center", va="center", fontsize=9, fontweight="bold" if r["rank"] == 1 else None)
    ax.set_yticks(range(len(rows)), [_short(r["variant"]) for r in rows], fontsize=8)
    ax.set_xticks([0], ["final val loss"])
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("val loss (nats/token), lower is better")
    ax.set_title("Validation loss per variant (no two-factor grid in this sweep)", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


__all__ = ["make_plots", "performance_comparison", "training_curves", "performance_heatmap", "choose_axes"]
