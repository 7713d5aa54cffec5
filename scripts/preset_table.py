"""README's table of the lrs every named size gets from every preset, resolved as ``mamba-train`` resolves them.

    python scripts/preset_table.py            # the markdown table in README.md's "Training presets"
    python scripts/preset_table.py --write    # written into README.md, between its preset-table markers

A Muon preset's cell is "Muon lr / AdamW-side lr"; an AdamW preset's is its lr. A preset with ``lr_width`` has its
lrs carried to each size's width by ``configs/lr_rule.py``; the last column says whether that width lies inside the
widths the rule was fitted at (``lr_rule.FIT_WIDTHS``, per architecture and side), is a width the rule was checked at
without being fitted there (``lr_rule.HELD_OUT_WIDTHS``), or lies beyond them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # splice_docs, beside this script

PRESETS = ("fast", "default", "careful", "muon_fast", "muon_default", "muon_careful", "demo", "muon_demo")


def cell(lrs: dict) -> str:
    if lrs["adamw_lr"] is None:
        return f"{lrs['learning_rate']:.2g}"
    return f"{lrs['learning_rate']:.2g} / {lrs['adamw_lr']:.2g}"


def where_in(width: int, fitted: tuple[int, ...], held_out: tuple[int, ...] = ()) -> str:
    """Whether ``width`` is one the rule was fitted at, one it was checked at without seeing it (held out), between
    fitted widths, or beyond them (or the rule is the hypothesis)."""
    if not fitted:
        return "hypothesis"
    if width in fitted:
        return "fitted"
    if width in held_out:
        return "held out, checked"
    return "between fitted widths" if min(fitted) <= width <= max(fitted) else "extrapolated"


def table() -> str:
    from configs import lr_rule
    from configs.model_configs import MODEL_CONFIGS
    from configs.presets_file import BUILTIN_MODELS
    from mamba_trainer.learning_rates import preset_lrs

    lines = ["| size | width | " + " | ".join(f"`{p}`" for p in PRESETS) + " | width and the rule |",
             "|---|---|" + "---|" * len(PRESETS) + "---|"]
    for size, entry in MODEL_CONFIGS.items():
        if size not in BUILTIN_MODELS:  # a presets file's own sizes (the lr study's proxies, a test's)
            continue
        width = entry["config"]["hidden_size"]
        where = {side: where_in(width, lr_rule.FIT_WIDTHS.get((entry["architecture"], side), ()),
                                lr_rule.HELD_OUT_WIDTHS.get((entry["architecture"], side), ()))
                 for side in ("muon", "adamw")}
        where = where["muon"] if where["muon"] == where["adamw"] else f"Muon {where['muon']}, AdamW {where['adamw']}"
        cells = [cell(preset_lrs(size, p)) for p in PRESETS]
        lines.append(f"| `{size}` | {width} | " + " | ".join(cells) + f" | {where} |")
    return "\n".join(lines)


README = Path(__file__).resolve().parents[1] / "README.md"


def write(readme: Path = README) -> bool:
    """Rewrites README's table between its preset-table markers (splice_docs.splice_into); whether it changed."""
    from splice_docs import splice_into

    text = readme.read_text()
    try:
        new = splice_into(text, "preset-table", table(), where=str(readme))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    readme.write_text(new)
    return new != text


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        print("README.md: preset table " + ("updated" if write() else "already current"))
    else:
        print(table())
